"""Read WFDB records (``.hea`` + ``.dat``) and PhysioNet Challenge records (``.hea`` + ``.mat``).

The common formats (16, 61, 80, 212, 24, 32, one sample per frame) are decoded here with NumPy:
several times faster than ``wfdb.rdrecord`` and stricter about files that disagree with their
header. Anything else (multi-segment records, several samples per frame, skew, compressed
formats) goes through ``wfdb.rdrecord``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ecgtool.errors import RecordError
from ecgtool.io import not_a_regular_file
from ecgtool.io.matv4 import read_matv4_matrix
from ecgtool.io.wfdb_header import SignalSpec, WfdbHeader, read_header
from ecgtool.record import Record

_BYTES_PER_SAMPLE = {16: 2.0, 61: 2.0, 80: 1.0, 212: 1.5, 24: 3.0, 32: 4.0}
# WFDB writes the most negative value of a format for a missing sample.
_MISSING_VALUE = {16: -(2**15), 61: -(2**15), 80: -(2**7), 212: -(2**11), 24: -(2**23), 32: -(2**31)}
_MILLIVOLTS_PER_UNIT = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "v": 1e3, "nv": 1e-6}


def read_wfdb(header_path: str | Path, verify_checksums: bool = True) -> Record:
    """Read one WFDB or Challenge record given its header path.

    Parameters
    ----------
    header_path : path
        The ``.hea`` file; the signal files are looked up beside it.
    verify_checksums : bool
        Compare each signal's checksum with the header, which catches corrupt files whose size
        is right.

    Returns
    -------
    Record
        Physical samples in mV (NaN where WFDB marks a sample as missing).

    Raises
    ------
    RecordError
        Naming the file and what is wrong: unreadable, truncated, a length that disagrees with
        the header, an unknown unit, a checksum mismatch.
    """
    header = read_header(header_path)
    return read_wfdb_signals(header, verify_checksums=verify_checksums)


def read(path: Path, verify_checksums: bool = True) -> Record:
    """The reader interface of ``ecgtool.io`` (WFDB is found by its ``.hea``, never sniffed)."""
    return read_wfdb(path, verify_checksums=verify_checksums)


def sniff(head: bytes) -> bool:
    return False


def read_wfdb_signals(header: WfdbHeader, verify_checksums: bool = True) -> Record:
    """Read the samples of an already parsed header (lets ingest parse headers once, up front)."""
    if header.n_segments is not None or not _decodable_here(header):
        return _read_with_wfdb_package(header)
    groups = _signals_by_file(header)
    if len(groups) == 1:
        (file_name, _), = groups.items()
        digital = _read_signal_file(header, file_name, list(header.signals))
    else:
        digital = np.empty((header.n_signals, _declared_samples(header)), dtype=np.int32)
        for file_name, rows in groups.items():
            digital[rows] = _read_signal_file(header, file_name, [header.signals[i] for i in rows])
    # Rows made contiguous as integers first: converting the interleaved (strided) int16 view
    # straight to float32 is 4x slower; every later step works per lead.
    digital = np.ascontiguousarray(digital)
    samples = digital.astype(np.float32)
    if verify_checksums:
        _check_checksums(header, samples)
    return Record(
        record_id=header.record_name,
        path=str(header.path),
        signal=_to_millivolts(header, digital, samples),
        sampling_rate=header.sampling_rate,
        lead_names=header.lead_names,
        codes=header.label_codes(),
    )


def _decodable_here(header: WfdbHeader) -> bool:
    return all(
        spec.fmt in _BYTES_PER_SAMPLE and spec.samples_per_frame == 1 and spec.skew == 0
        for spec in header.signals
    )


def _declared_samples(header: WfdbHeader) -> int:
    if header.n_samples is not None:
        return header.n_samples
    # No length on the record line: WFDB takes it from the size of the first signal file.
    spec = header.signals[0]
    group = [s for s in header.signals if s.file_name == spec.file_name]
    size = (header.path.parent / spec.file_name).stat().st_size - spec.byte_offset
    return int(size // (len(group) * _BYTES_PER_SAMPLE[spec.fmt]))


def _signals_by_file(header: WfdbHeader) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for index, spec in enumerate(header.signals):
        groups.setdefault(spec.file_name, []).append(index)
    return groups


def _read_signal_file(header: WfdbHeader, file_name: str, specs: list[SignalSpec]) -> np.ndarray:
    """Decode one signal file holding the interleaved samples of ``specs``: (n_specs, n)."""
    path = header.path.parent / file_name
    special = not_a_regular_file(path)
    if special:
        raise RecordError(path, f"signal file named by the header: {special}")
    n_samples = _declared_samples(header)
    if file_name.lower().endswith(".mat"):
        matrix = read_matv4_matrix(path)
        if matrix.shape[0] != len(specs):
            raise RecordError(
                path, f"holds {matrix.shape[0]} signals but the header declares {len(specs)}"
            )
        _check_length(path, header, matrix.shape[1])
        return matrix
    formats = {spec.fmt for spec in specs}
    offsets = {spec.byte_offset for spec in specs}
    if len(formats) != 1 or len(offsets) != 1:
        raise RecordError(path, "signals sharing one file must share one format and byte offset")
    fmt, offset = formats.pop(), offsets.pop()
    try:
        raw = np.fromfile(path, dtype=np.uint8, offset=offset)
    except FileNotFoundError:
        raise RecordError(path, "signal file named by the header does not exist") from None
    except OSError as error:
        raise RecordError(path, f"cannot read signal file: {error.strerror or error}") from None
    n_channels = len(specs)
    expected_bytes = int(np.ceil(n_samples * n_channels * _BYTES_PER_SAMPLE[fmt]))
    held_samples = int(raw.size // (n_channels * _BYTES_PER_SAMPLE[fmt]))
    _check_length(path, header, held_samples, extra_bytes=raw.size - expected_bytes)
    samples = _decode(raw[:expected_bytes], fmt)[: n_samples * n_channels]
    return samples.reshape(n_samples, n_channels).T


def _check_length(path: Path, header: WfdbHeader, held_samples: int, extra_bytes: int = 0) -> None:
    declared = _declared_samples(header)
    if held_samples < declared:
        raise RecordError(
            path, f"truncated: header declares {declared} samples per signal, file holds {held_samples}"
        )
    if held_samples > declared or extra_bytes >= 4:
        raise RecordError(
            path,
            f"header declares {declared} samples per signal but the file holds {held_samples}",
        )


def _decode(raw: np.ndarray, fmt: int) -> np.ndarray:
    """Decode the flat sample stream of one file into signed integers."""
    if fmt == 16:
        return raw[: raw.size // 2 * 2].view("<i2")
    if fmt == 61:
        return raw[: raw.size // 2 * 2].view(">i2")
    if fmt == 80:
        return raw.astype(np.int32) - 128
    if fmt == 24:
        triplets = raw[: raw.size // 3 * 3].reshape(-1, 3).astype(np.int32)
        values = triplets[:, 0] | (triplets[:, 1] << 8) | (triplets[:, 2] << 16)
        return np.where(values >= 2**23, values - 2**24, values)
    if fmt == 32:
        return raw[: raw.size // 4 * 4].view("<i4").astype(np.int32)
    if fmt == 212:
        return _decode_212(raw)
    raise AssertionError(f"format {fmt} is not decoded here")


def _decode_212(raw: np.ndarray) -> np.ndarray:
    # Two 12-bit samples in three bytes: low byte of each, high nibbles shared in the middle byte.
    padded = np.zeros(int(np.ceil(raw.size / 3)) * 3, dtype=np.int32)
    padded[: raw.size] = raw
    triplets = padded.reshape(-1, 3)
    first = triplets[:, 0] | ((triplets[:, 1] & 0x0F) << 8)
    second = triplets[:, 2] | ((triplets[:, 1] & 0xF0) << 4)
    values = np.stack([first, second], axis=1).reshape(-1)
    return np.where(values >= 2**11, values - 2**12, values)


def _check_checksums(header: WfdbHeader, samples: np.ndarray) -> None:
    # float32 holds every sample exactly and float64 sums of them stay exact integers.
    sums = samples.sum(axis=1, dtype=np.float64).astype(np.int64) & 0xFFFF
    for spec, checksum in zip(header.signals, sums):
        if spec.checksum is not None and int(checksum) != spec.checksum & 0xFFFF:
            raise RecordError(
                header.path,
                f"checksum mismatch in signal {spec.description or spec.file_name}: "
                "the samples differ from those the header was written for",
            )


def _to_millivolts(header: WfdbHeader, digital: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """Scale ``samples`` (``digital`` as float32) to mV in place; WFDB's missing values become NaN."""
    scales = []
    for spec in header.signals:
        unit_scale = _MILLIVOLTS_PER_UNIT.get(spec.units.lower())
        if unit_scale is None:
            raise RecordError(
                header.path, f"signal {spec.description!r} has unit {spec.units!r}, not a voltage"
            )
        scales.append(unit_scale / spec.gain)
    samples -= np.array([spec.baseline for spec in header.signals], dtype=np.float32)[:, None]
    samples *= np.array(scales, dtype=np.float32)[:, None]
    missing_values = {_MISSING_VALUE.get(spec.fmt) for spec in header.signals}
    if len(missing_values) == 1:
        missing = digital == missing_values.pop()
        if missing.any():
            samples[missing] = np.nan
    else:
        for row, spec in enumerate(header.signals):
            missing = digital[row] == _MISSING_VALUE.get(spec.fmt)
            samples[row][missing] = np.nan
    return samples


def _read_with_wfdb_package(header: WfdbHeader) -> Record:
    """Read via ``wfdb.rdrecord`` the layouts this module does not decode itself."""
    import wfdb

    try:
        record = wfdb.rdrecord(str(header.path.with_suffix("")), physical=True, smooth_frames=True)
    except Exception as error:  # wfdb raises many types; the reason is what the user needs
        raise RecordError(header.path, f"wfdb cannot read the record: {error}") from None
    if record.p_signal is None or record.p_signal.ndim != 2:
        raise RecordError(header.path, "wfdb returned no samples")
    signal = record.p_signal.T.astype(np.float32)
    for row, unit in enumerate(record.units):
        unit_scale = _MILLIVOLTS_PER_UNIT.get((unit or "mV").lower())
        if unit_scale is None:
            raise RecordError(header.path, f"signal {record.sig_name[row]!r} has unit {unit!r}, not a voltage")
        signal[row] *= unit_scale
    return Record(
        record_id=header.record_name,
        path=str(header.path),
        signal=signal,
        sampling_rate=float(record.fs),
        lead_names=tuple(record.sig_name),
        codes=header.label_codes(),
    )
