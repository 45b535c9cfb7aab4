"""Read SCP-ECG files (EN 1064 / ISO 11073-91064): rhythm data, patient and device fields, statements.

An SCP-ECG file is a 6-byte prefix (CRC-CCITT of the rest, file length) followed by numbered
sections, each with a 16-byte header (CRC, number, length, versions) and located through the
pointer table of section 0. This reader uses:

* section 1 — patient id (tag 2), acquisition date (25) and time (26), acquiring device (14);
* section 2 — Huffman tables (19999 = the standard's default table);
* section 3 — lead definitions: lead codes, first and last sample, the reference-beat flag;
* section 6 — rhythm data: amplitude value multiplier (nV), sample interval (µs), difference
  encoding (none, first, second), bimodal flag, byte count per lead, then the leads' data;
* section 7 — global measurements of reference beat 0 (RR, PR, QRS, QT, axes);
* section 8 — the machine's full-text interpretive statements.

Rhythm data stored as residuals after reference-beat subtraction (section 3 flag, sections 4
and 5) or with bimodal compression (decimated outside the QRS) are refused: decoding them
correctly needs the reference beat put back at each QRS of section 4 and an interpolation whose
details differ between writers, and no public file to check it against was at hand.
"""

from __future__ import annotations

import binascii
import struct
from dataclasses import dataclass
from datetime import date, time
from pathlib import Path

import numpy as np

from ecgtool.errors import RecordError
from ecgtool.record import Record
from ecgtool.signal import with_derived_limb_leads

# Lead codes of the standard's lead table (ISO 11073 MDC ECG lead codes use the same numbers).
SCP_LEAD_NAMES = {
    1: "I", 2: "II", 3: "V1", 4: "V2", 5: "V3", 6: "V4", 7: "V5", 8: "V6",
    9: "V7", 10: "V2R", 11: "V3R", 12: "V4R", 13: "V5R", 14: "V6R", 15: "V7R",
    16: "X", 17: "Y", 18: "Z",
    61: "III", 62: "aVR", 63: "aVL", 64: "aVF", 65: "-aVR", 66: "V8", 67: "V9", 68: "V8R", 69: "V9R",
}

DEFAULT_HUFFMAN_TABLE_MARKER = 19999
SECTION_HEADER_BYTES = 16
_POINTER_BYTES = 10  # section number (2), length (4), 1-based byte index (4)
_NOT_MEASURED = (29999, 29998, 29997)  # "not computed", "rejected", "not available" in section 7
_PREFIX_BYTES = 6  # CRC (2) and file length (4) before section 0
_REQUIRED_SECTIONS = {1: "patient data", 3: "lead definitions", 6: "rhythm data"}


@dataclass(frozen=True)
class HuffmanCode:
    """One code of a Huffman table: ``bits`` as a '0'/'1' string, most significant bit first.

    A code with ``extra_bits`` is followed by that many bits holding the value itself (two's
    complement); otherwise it stands for ``value``.
    """

    bits: str
    extra_bits: int
    value: int


# The standard's default table (EN 1064 Annex C): 0 → 0, 1x0 → ±1, 11x0 … → ±2 … ±8, then a
# 10-bit prefix followed by the value in 8 or 16 bits.
DEFAULT_HUFFMAN_TABLE = (
    HuffmanCode("0", 0, 0),
    *(
        HuffmanCode("1" * magnitude + "0" + sign, 0, value)
        for magnitude in range(1, 9)
        for sign, value in (("0", magnitude), ("1", -magnitude))
    ),
    HuffmanCode("1111111110", 8, 0),
    HuffmanCode("1111111111", 16, 0),
)


@dataclass(frozen=True)
class LeadDefinition:
    """One lead of section 3: its name and its first and last sample number (1-based, inclusive).

    Some writers (the ECG Viewer of ``demo.scp``) count from 0 with the last number exclusive:
    a first sample 0, which the standard does not allow, is read that way.
    """

    name: str
    first_sample: int
    last_sample: int

    @property
    def n_samples(self) -> int:
        if self.first_sample == 0:
            return self.last_sample
        return self.last_sample - self.first_sample + 1


class _Malformed(Exception):
    """A structural problem found while parsing; ``read`` turns it into a ``RecordError``."""


def sniff(head: bytes) -> bool:
    """Section 0 right after the 6-byte prefix: section number 0 and "SCPECG" (v1.3 and later) or a
    pointer table whose first entry is section 0 at byte 7."""
    if len(head) < _PREFIX_BYTES + SECTION_HEADER_BYTES + _POINTER_BYTES:
        return False
    section_number, section_length = struct.unpack_from("<HI", head, _PREFIX_BYTES + 2)
    if section_number != 0:
        return False
    if head[_PREFIX_BYTES + 10 : _PREFIX_BYTES + 16] == b"SCPECG":
        return True
    first_number, first_length, first_index = struct.unpack_from("<HII", head, _PREFIX_BYTES + SECTION_HEADER_BYTES)
    return first_number == 0 and first_length == section_length and first_index == _PREFIX_BYTES + 1


def read(path: Path, verify_checksums: bool = True) -> Record:
    """Read one SCP-ECG file.

    Parameters
    ----------
    path : Path
        The ``.scp`` file.
    verify_checksums : bool
        Check the CRC-CCITT of the whole file and of every section.

    Returns
    -------
    Record
        The rhythm data in mV; III, aVR, aVL, aVF derived from I and II when the file stores only
        I, II and V1–V6.

    Raises
    ------
    RecordError
        Truncated file or section, CRC mismatch, missing section, leads of different lengths,
        an unknown encoding, Huffman data that do not decode, bimodal compression or
        reference-beat subtraction (not supported).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise RecordError(path, f"cannot read file: {error.strerror or error}") from None
    try:
        sections = read_sections(data, verify_checksums)
        return _record_from_sections(path, sections)
    except _Malformed as error:
        raise RecordError(path, str(error)) from None
    except (struct.error, IndexError, ValueError, OverflowError) as error:  # a field this reader did not guard
        raise RecordError(path, f"malformed SCP-ECG: {error}") from None


def read_sections(data: bytes, verify_checksums: bool = True) -> dict[int, bytes]:
    """The body (after its 16-byte header) of every section listed in the pointer table of section 0."""
    if len(data) < _PREFIX_BYTES + SECTION_HEADER_BYTES:
        raise _Malformed(f"truncated file: {len(data):,} bytes, not even a section 0")
    stored_crc, file_length = struct.unpack_from("<HI", data, 0)
    if len(data) < file_length:
        raise _Malformed(f"truncated file: {len(data):,} of {file_length:,} bytes")
    if verify_checksums:
        _check_crc(data[2:file_length], stored_crc, "file")
    pointer_table = _section_body(data, 0, _PREFIX_BYTES, verify_checksums)
    sections = {0: pointer_table}
    for offset in range(0, len(pointer_table) - _POINTER_BYTES + 1, _POINTER_BYTES):
        number, length, index = struct.unpack_from("<HII", pointer_table, offset)
        if number == 0 or length == 0:
            continue
        start = index - 1
        if start < 0 or start + length > file_length:
            raise _Malformed(
                f"truncated section {number}: bytes {start + 1:,}–{start + length:,} lie past the file's {file_length:,} bytes"
            )
        sections[number] = _section_body(data[: start + length], number, start, verify_checksums)
    return sections


def _section_body(data: bytes, number: int, start: int, verify_checksums: bool) -> bytes:
    if start + SECTION_HEADER_BYTES > len(data):
        raise _Malformed(f"truncated section {number}: header cut off")
    stored_crc, stored_number, length = struct.unpack_from("<HHI", data, start)
    if stored_number != number:
        raise _Malformed(f"section {number} expected at byte {start + 1:,}, found section {stored_number}")
    if length < SECTION_HEADER_BYTES or start + length > len(data):
        raise _Malformed(f"truncated section {number}: {len(data) - start:,} of {length:,} bytes")
    if verify_checksums:
        _check_crc(data[start + 2 : start + length], stored_crc, f"section {number}")
    return data[start + SECTION_HEADER_BYTES : start + length]


def _check_crc(covered: bytes, stored: int, what: str) -> None:
    computed = binascii.crc_hqx(covered, 0xFFFF)  # CRC-CCITT: polynomial 0x1021, initial value 0xFFFF
    if computed != stored:
        raise _Malformed(f"CRC mismatch in {what}: stored 0x{stored:04X}, computed 0x{computed:04X}")


def _record_from_sections(path: Path, sections: dict[int, bytes]) -> Record:
    for number, title in _REQUIRED_SECTIONS.items():
        if number not in sections:
            raise _Malformed(f"section {number} missing ({title})")
    leads, reference_beat_subtracted = read_lead_definitions(sections[3])
    if reference_beat_subtracted:
        raise _Malformed("reference-beat subtraction not supported (section 3 flags the rhythm data as residuals)")
    huffman_table = read_huffman_table(sections[2]) if 2 in sections else None
    signal, sampling_rate = read_rhythm_data(sections[6], leads, huffman_table)
    patient = read_patient_fields(sections[1])
    record = Record(
        record_id=path.stem,
        path=str(path),
        signal=signal,
        sampling_rate=sampling_rate,
        lead_names=tuple(lead.name for lead in leads),
        patient_id=_text(patient.get(2)),
        format="scp-ecg",
        acquired=_acquisition_time(patient.get(25), patient.get(26)),
        device=_device(patient.get(14)),
        statements=read_statements(sections[8]) if 8 in sections else (),
        measurements=read_global_measurements(sections[7]) if 7 in sections else {},
    )
    return with_derived_limb_leads(record)



def read_lead_definitions(body: bytes) -> tuple[list[LeadDefinition], bool]:
    """The leads of section 3 and whether the rhythm data are residuals after reference-beat subtraction."""
    if len(body) < 2:
        raise _Malformed("truncated section 3: no lead count")
    n_leads, flags = body[0], body[1]
    if n_leads == 0:
        raise _Malformed("section 3 defines no leads")
    if len(body) < 2 + 9 * n_leads:
        raise _Malformed(f"truncated section 3: {(len(body) - 2) // 9} of {n_leads} lead definitions")
    leads = []
    for index in range(n_leads):
        first, last, code = struct.unpack_from("<IIB", body, 2 + 9 * index)
        if last < first:
            raise _Malformed(f"section 3: lead code {code} ends (sample {last}) before it starts (sample {first})")
        leads.append(LeadDefinition(SCP_LEAD_NAMES.get(code, f"lead code {code}"), first, last))
    names = [lead.name for lead in leads]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise _Malformed(f"section 3 defines lead(s) {', '.join(duplicated)} more than once")
    spans = [(lead.first_sample, lead.last_sample) for lead in leads]
    usual = max(set(spans), key=spans.count)
    odd = [lead for lead, span in zip(leads, spans) if span != usual]
    if odd:
        odd_text = ", ".join(f"{lead.name} samples {lead.first_sample:,}–{lead.last_sample:,}" for lead in odd)
        raise _Malformed(f"inconsistent lead lengths in section 3: {odd_text}, the others {usual[0]:,}–{usual[1]:,}")
    return leads, bool(flags & 0x01)


def read_huffman_table(body: bytes) -> tuple[HuffmanCode, ...]:
    """The Huffman table of section 2: the standard's default, or the file's own first table.

    Base codes are stored bit-reversed (the first bit sent is the least significant). Tables that
    switch to another table mid-stream (mode switch 0) are refused: the standard's numbering of
    the target table is read differently by the implementations at hand.
    """
    if len(body) < 2:
        raise _Malformed("truncated section 2: no table count")
    (n_tables,) = struct.unpack_from("<H", body, 0)
    if n_tables == DEFAULT_HUFFMAN_TABLE_MARKER:
        return DEFAULT_HUFFMAN_TABLE
    if n_tables == 0:
        raise _Malformed("section 2 holds no Huffman table")
    if len(body) < 4:
        raise _Malformed("truncated section 2: no code count")
    (n_codes,) = struct.unpack_from("<H", body, 2)
    if len(body) < 4 + 9 * n_codes:
        raise _Malformed(f"truncated section 2: {(len(body) - 4) // 9} of {n_codes} Huffman codes")
    codes = []
    for index in range(n_codes):
        prefix_bits, total_bits, mode_switch, base_value, base_code = struct.unpack_from("<BBBhI", body, 4 + 9 * index)
        if mode_switch == 0:
            raise _Malformed("Huffman table switching (section 2, mode switch 0) not supported")
        if not 1 <= prefix_bits <= 32 or total_bits < prefix_bits or total_bits - prefix_bits > 32:
            raise _Malformed(f"section 2: Huffman code {index + 1} has {prefix_bits} prefix bits of {total_bits}")
        bits = format(base_code, f"0{prefix_bits}b")[-prefix_bits:][::-1]
        codes.append(HuffmanCode(bits, total_bits - prefix_bits, base_value))
    return tuple(codes)


def read_rhythm_data(
    body: bytes, leads: list[LeadDefinition], huffman_table: tuple[HuffmanCode, ...] | None
) -> tuple[np.ndarray, float]:
    """Decode section 6 into ``(n_leads, n_samples)`` float32 mV and the sampling rate in Hz."""
    n_leads = len(leads)
    header_bytes = 6 + 2 * n_leads
    if len(body) < header_bytes:
        raise _Malformed("truncated section 6: header cut off")
    multiplier_nv, interval_us, encoding, bimodal = struct.unpack_from("<HHBB", body, 0)
    byte_counts = struct.unpack_from(f"<{n_leads}H", body, 6)
    if bimodal:
        raise _Malformed("bimodal compression (section 6) not supported")
    if encoding not in (0, 1, 2):
        raise _Malformed(f"unknown difference encoding {encoding} in section 6 (0, 1 or 2 expected)")
    if multiplier_nv == 0 or interval_us == 0:
        raise _Malformed(f"section 6: amplitude multiplier {multiplier_nv} nV, sample interval {interval_us} µs")
    n_samples = leads[0].n_samples
    # Checked before allocating: a Huffman code takes at least one bit, a plain sample two bytes.
    most_samples = 8 * min(byte_counts) if huffman_table is not None else min(byte_counts) // 2
    if n_samples > most_samples:
        raise _Malformed(
            f"truncated rhythm data: section 3 declares {n_samples:,} samples per lead, "
            f"section 6 holds at most {most_samples:,} in its shortest lead"
        )
    signal = np.empty((n_leads, n_samples), dtype=np.float32)
    offset = header_bytes
    for row, (lead, n_bytes) in enumerate(zip(leads, byte_counts)):
        lead_bytes = body[offset : offset + n_bytes]
        if len(lead_bytes) < n_bytes:
            raise _Malformed(f"truncated rhythm data: {len(lead_bytes):,} of {n_bytes:,} bytes of lead {lead.name}")
        offset += n_bytes
        if huffman_table is None:
            values = _raw_values(lead_bytes, n_samples, lead.name)
        else:
            values = decode_huffman(lead_bytes, n_samples, huffman_table, lead.name)
        signal[row] = undo_differences(values, encoding) * (multiplier_nv * 1e-6)
    return signal, 1e6 / interval_us


def _raw_values(lead_bytes: bytes, n_samples: int, lead_name: str) -> np.ndarray:
    if len(lead_bytes) < 2 * n_samples:
        raise _Malformed(f"truncated rhythm data: {len(lead_bytes) // 2:,} of {n_samples:,} samples of lead {lead_name}")
    return np.frombuffer(lead_bytes, dtype="<i2", count=n_samples).astype(np.int64)


def decode_huffman(lead_bytes: bytes, n_values: int, table: tuple[HuffmanCode, ...], lead_name: str = "?") -> np.ndarray:
    """The first ``n_values`` values of one lead's Huffman-coded bit stream (most significant bit first)."""
    bits = "".join(format(byte, "08b") for byte in lead_bytes)
    code_by_bits = {code.bits: code for code in table}
    code_lengths = sorted({len(code.bits) for code in table})
    values = np.empty(n_values, dtype=np.int64)
    position = 0
    for index in range(n_values):
        for length in code_lengths:
            code = code_by_bits.get(bits[position : position + length])
            if code is not None:
                break
        else:
            if len(bits) - position < code_lengths[-1]:
                raise _Malformed(f"truncated rhythm data: lead {lead_name} decodes to {index:,} of {n_values:,} samples")
            raise _Malformed(f"rhythm data of lead {lead_name}: bits at sample {index:,} match no Huffman code")
        position += length
        if code.extra_bits:
            field = bits[position : position + code.extra_bits]
            if len(field) < code.extra_bits:
                raise _Malformed(f"truncated rhythm data: lead {lead_name} decodes to {index:,} of {n_values:,} samples")
            value = int(field, 2)
            if value >= 1 << (code.extra_bits - 1):
                value -= 1 << code.extra_bits
            position += code.extra_bits
            values[index] = value
        else:
            values[index] = code.value
    return values


def undo_differences(values: np.ndarray, encoding: int) -> np.ndarray:
    """Samples from first (``x[n] − x[n−1]``) or second (``x[n] − 2x[n−1] + x[n−2]``) differences.

    The first one (two) values are sent as they are.
    """
    if encoding == 0 or len(values) <= encoding:
        return values
    if encoding == 1:
        return np.cumsum(values)
    steps = np.cumsum(np.concatenate(([values[1] - values[0]], values[2:])))  # x[n] − x[n−1], n ≥ 1
    return np.concatenate(([values[0]], values[0] + np.cumsum(steps)))


def read_patient_fields(body: bytes) -> dict[int, bytes]:
    """The tagged fields of section 1 (tag → raw value), up to the terminator tag 255."""
    fields: dict[int, bytes] = {}
    offset = 0
    while offset + 3 <= len(body):
        tag, length = struct.unpack_from("<BH", body, offset)
        if tag == 255:
            break
        value = body[offset + 3 : offset + 3 + length]
        if len(value) < length:
            raise _Malformed(f"truncated section 1: tag {tag} needs {length} bytes, {len(value)} left")
        fields.setdefault(tag, value)
        offset += 3 + length
    return fields


def _text(value: bytes | None) -> str | None:
    if value is None:
        return None
    text = value.split(b"\x00", 1)[0].decode("latin-1").strip()
    return text or None


def _printable(value: bytes) -> str:
    # Some writers put a length byte before each string: drop control characters.
    return "".join(char for char in value.decode("latin-1") if char.isprintable()).strip()


def _acquisition_time(date_field: bytes | None, time_field: bytes | None) -> str | None:
    if date_field is None or len(date_field) < 4:
        return None
    year, month, day = struct.unpack_from("<HBB", date_field)
    try:
        acquired = date(year, month, day).isoformat()
        if time_field is not None and len(time_field) >= 3:
            acquired += "T" + time(*time_field[:3]).isoformat()
    except ValueError:
        return None
    return acquired


def _device(field: bytes | None) -> str | None:
    """Manufacturer, model and software named in tag 14 (the acquiring device), as far as given."""
    if field is None or len(field) < 36:
        return None
    model = _text(field[8:14])
    # After 35 fixed bytes: the length of the analysing program revision, the revision, then
    # null-terminated serial number, system software, SCP implementation software, manufacturer.
    revision_length = field[35]
    texts = [_printable(part) for part in field[36 + revision_length :].split(b"\x00")]
    manufacturer = texts[3] if len(texts) > 3 else ""
    software = texts[1] if len(texts) > 1 else ""
    parts = [part for part in (manufacturer, model, software) if part and part.lower() != "unknown"]
    return " / ".join(parts) or None


def read_statements(body: bytes) -> tuple[str, ...]:
    """The full-text interpretive statements of section 8, in order."""
    if len(body) < 9:
        return ()
    n_statements = body[8]
    statements = []
    offset = 9
    for _ in range(n_statements):
        if offset + 3 > len(body):
            raise _Malformed(f"truncated section 8: {len(statements)} of {n_statements} statements")
        (length,) = struct.unpack_from("<H", body, offset + 1)
        text = _text(body[offset + 3 : offset + 3 + length])
        if offset + 3 + length > len(body):
            raise _Malformed(f"truncated section 8: {len(statements)} of {n_statements} statements")
        if text:
            statements.append(text)
        offset += 3 + length
    return tuple(statements)


def read_global_measurements(body: bytes) -> dict[str, float]:
    """Average RR and the intervals and axes of reference beat 0 from section 7 (ms, degrees).

    The wave onsets and offsets are ms from the start of the reference beat; PR, QRS and QT are
    their differences, as the standard defines them.
    """
    if len(body) < 6 + 16:
        return {}
    (rr_ms,) = struct.unpack_from("<H", body, 2)
    p_on, p_off, qrs_on, qrs_off, t_off = struct.unpack_from("<5H", body, 6)
    axes = struct.unpack_from("<3h", body, 16)
    measurements: dict[str, float] = {}
    if _measured(rr_ms) and rr_ms > 0:
        measurements["rr_ms"] = float(rr_ms)
    if _measured(p_on, qrs_on) and qrs_on > p_on:
        measurements["pr_ms"] = float(qrs_on - p_on)
    if _measured(qrs_on, qrs_off) and qrs_off > qrs_on:
        measurements["qrs_ms"] = float(qrs_off - qrs_on)
    if _measured(qrs_on, t_off) and t_off > qrs_on:
        measurements["qt_ms"] = float(t_off - qrs_on)
    for key, axis in zip(("p_axis_deg", "qrs_axis_deg", "t_axis_deg"), axes):
        if _measured(axis & 0xFFFF) and -360 <= axis <= 360:
            measurements[key] = float(axis)
    return measurements


def _measured(*values: int) -> bool:
    return all(value not in _NOT_MEASURED for value in values)
