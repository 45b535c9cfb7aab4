"""Philips XLI waveform decompression, vectorised where the algorithm allows.

The format, as the reference decoders read it (sierra-ecg-tools' C# ``XliDecompressor`` and its
Python port ``sierraecg.xli``): the payload is a run of chunks, one per lead, each an 8-byte
header (little-endian int32 byte count, 2 unused bytes, little-endian int16 first sample) and an
LZW stream of 10-bit codes, most significant bit first, with a dictionary of up to 1023 entries
and no reset code. The decompressed bytes are the high bytes of all 16-bit deltas followed by
their low bytes; the samples are rebuilt by a second-order recurrence
``z[i] = 2 z[i-1] − z[i-2] − (d[i-1] − 64)`` (``d[1] − 64`` replaced by the first sample).

Only the LZW dictionary walk is a Python loop; the bit unpacking, byte interleaving and the
recurrence (a double cumulative sum) run in NumPy, 15–30 times faster than ``sierraecg``'s
pure-Python decoder. ``tests/test_formats_xml.py`` checks both give identical samples.
"""

from __future__ import annotations

import numpy as np

CODE_BITS = 10
_MAX_CODE = (1 << CODE_BITS) - 2  # 1022; 1023 ends the stream
_HEADER_BYTES = 8


class XliError(ValueError):
    """The XLI payload cannot be decoded (truncated chunk, impossible code, sample overflow)."""


def decode_xli(payload: bytes) -> list[np.ndarray]:
    """Every lead of an XLI payload, as int16 samples in storage order."""
    leads = []
    offset = 0
    while offset < len(payload):
        header = payload[offset : offset + _HEADER_BYTES]
        if len(header) < _HEADER_BYTES:
            raise XliError(f"chunk {len(leads) + 1}: {len(header)}-byte header, 8 expected")
        size = int.from_bytes(header[0:4], "little", signed=True)
        first = int.from_bytes(header[6:8], "little", signed=True)
        offset += _HEADER_BYTES
        if size < 0 or offset + size > len(payload):
            raise XliError(f"chunk {len(leads) + 1} declares {size:,} bytes, {len(payload) - offset:,} remain")
        leads.append(_samples(_lzw_decode(payload[offset : offset + size]), first))
        offset += size
    return leads


def _codes(chunk: bytes) -> np.ndarray:
    """The 10-bit codes of a chunk, MSB first; trailing bits short of a code are dropped."""
    bits = np.unpackbits(np.frombuffer(chunk, dtype=np.uint8))
    n_codes = len(bits) // CODE_BITS
    groups = bits[: n_codes * CODE_BITS].reshape(n_codes, CODE_BITS).astype(np.int64)
    return groups @ (1 << np.arange(CODE_BITS - 1, -1, -1, dtype=np.int64))


def _lzw_decode(chunk: bytes) -> bytes:
    strings: list[bytes] = [bytes((code,)) for code in range(256)]
    output = bytearray()
    previous = b""
    for code in _codes(chunk).tolist():
        if code > _MAX_CODE:
            break
        if code < len(strings):
            current = strings[code]
        elif previous and code == len(strings):
            current = previous + previous[:1]  # the one code LZW may use before defining it
        else:
            raise XliError(f"LZW code {code} used before it is defined")
        if previous and len(strings) <= _MAX_CODE:
            strings.append(previous + current[:1])
        output += current
        previous = current
    return bytes(output)


def _samples(decompressed: bytes, first: int) -> np.ndarray:
    if len(decompressed) % 2:
        decompressed += b"\x00"
    half = len(decompressed) // 2
    raw = np.frombuffer(decompressed, dtype=np.uint8)
    deltas = ((raw[:half].astype(np.int32) << 8) | raw[half:]).astype(np.uint16).view(np.int16).astype(np.int64)
    if half < 3:
        return deltas.astype(np.int16)
    # Second differences: z[i] − 2 z[i-1] + z[i-2] = −c[i], c[2] = first, c[i] = d[i-1] − 64.
    forcing = np.empty(half - 2, dtype=np.int64)
    forcing[0] = first
    forcing[1:] = deltas[2 : half - 1] - 64
    z0, z1 = deltas[0], deltas[1]
    slopes = (z1 - z0) - np.cumsum(forcing)
    samples = np.concatenate(([z0, z1], z1 + np.cumsum(slopes)))
    if samples.min() < -32768 or samples.max() > 32767:
        raise XliError("decoded samples overflow 16 bits")
    return samples.astype(np.int16)
