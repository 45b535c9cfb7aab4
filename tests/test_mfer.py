"""The MFER reader on the five public sample files, on hand-written minimal files and on broken copies.

The minimal files are written by ``write_mfer`` below, a small writer that follows the standard's
encoding rules (JIS T 7308 / ISO 22077-1) and reproduces ECG01 byte for byte, so that what it
writes for the features the samples do not exercise is MFER as the machines write it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from ecgtool.errors import RecordError
from ecgtool.ingest import IngestOptions, ingest
from ecgtool.io import format_of, read_record
from ecgtool.io import mfer
from ecgtool.registry import load_registry
from ecgtool.signal import LEADS, canonicalize
from ecgtool.store import Store
from ecg_checks import assert_limb_identities, assert_physiological, heart_rate_bpm

SAMPLES = ("ECG01", "ECG02", "ECG03", "ECG04", "ECG05")
STORED_LEADS = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
LEAD_CODES = {"I": 1, "II": 2, "V1": 3, "V2": 4, "V3": 5, "V4": 6, "V5": 7, "V6": 8,
              "III": 61, "aVR": 62, "aVL": 63, "aVF": 64}
# Read off the files with a hex dump (independent of the reader): where the waveform starts,
# its byte order and the resolution element's value in nV per count.
WAVEFORM_LAYOUT = {
    "ECG01": (156, "<", 1250, "NIHON KOHDEN"),
    "ECG02": (181, "<", 4880, "FUKUDA DENSHI"),
    "ECG03": (104, ">", 4880, "GE Marquette"),
    "ECG04": (162, "<", 4880, "Suzuken"),
    "ECG05": (138, ">", 4880, "GE Marquette"),
}


# --- a minimal MFER writer, from the standard's rules ---------------------------------------

def encode_length(n: int, long_form: bool = False) -> bytes:
    """Short form below 128 bytes; otherwise 0x84 and four big-endian bytes (as ECG01 writes it)."""
    if n < 0x80 and not long_form:
        return bytes([n])
    return bytes([0x84]) + n.to_bytes(4, "big")


def element(tag: int, value: bytes = b"", long_form: bool = False) -> bytes:
    return bytes([tag]) + encode_length(len(value), long_form) + value


def channel_attributes(channel: int, *elements: bytes, long_form: bool = False) -> bytes:
    """Tag 0x3F, the channel number (base 128, top bit = more bytes follow), then the nested elements."""
    number = [channel & 0x7F]
    channel >>= 7
    while channel:
        number.insert(0, 0x80 | (channel & 0x7F))
        channel >>= 7
    content = b"".join(elements)
    return bytes([mfer.CHANNEL_ATTRIBUTES, *number]) + encode_length(len(content), long_form) + content


def scaled(tag: int, unit: int, exponent: int, mantissa: int, order: str, width: int = 2, long_form: bool = False) -> bytes:
    """Sampling (0x0B) or resolution (0x0C): unit, signed exponent, mantissa in the file's byte order."""
    value = bytes([unit, exponent & 0xFF]) + mantissa.to_bytes(width, order, signed=True)
    return element(tag, value, long_form)


@dataclass
class MferFile:
    """What ``write_mfer`` writes: stored values, one row per channel, and the definitions."""

    stored: np.ndarray
    leads: tuple[str, ...] = STORED_LEADS
    big_endian: bool = False
    data_type: int | None = None  # None: no data-type element (the default, 16-bit signed)
    sampling: tuple[int, int, int] = (1, -3, 2)  # 2 ms interval
    resolution: tuple[int, int, int] = (0, -9, 1250)  # 1.25 µV
    sequences: int = 1
    head: bytes = b""  # elements before the definitions (preamble, manufacturer …)
    defaults: bytes = b""  # extra elements among the file's definitions
    channel_extra: dict[int, bytes] = field(default_factory=dict)  # extra elements per channel
    lead_codes: dict[str, int] = field(default_factory=lambda: dict(LEAD_CODES))
    long_form: bool = False
    frames: int = 1

    @property
    def order(self) -> str:
        return "big" if self.big_endian else "little"

    def dtype(self) -> np.dtype:
        code = mfer.DATA_TYPES[self.data_type or 0]
        return np.dtype(code).newbyteorder(">" if self.big_endian else "<")


def frame_bytes(stored: np.ndarray, dtypes: list[np.dtype], sequences: int) -> bytes:
    """Sequence after sequence; in each, every channel's block in turn."""
    n_channels, n_samples = stored.shape
    block = n_samples // sequences
    parts = []
    for sequence in range(sequences):
        for row in range(n_channels):
            parts.append(stored[row, sequence * block : (sequence + 1) * block].astype(dtypes[row]).tobytes())
    return b"".join(parts)


def write_mfer(spec: MferFile, channel_dtypes: dict[int, np.dtype] | None = None) -> bytes:
    long_form, order = spec.long_form, spec.order
    n_channels, n_samples = spec.stored.shape
    block = n_samples // (spec.sequences * spec.frames)
    out = [spec.head, element(mfer.BYTE_ORDER, bytes([0 if spec.big_endian else 1]), long_form)]
    out.append(element(mfer.WAVEFORM_TYPE, b"\x01", long_form))
    if spec.data_type is not None:
        out.append(element(mfer.DATA_TYPE, bytes([spec.data_type]), long_form))
    out.append(scaled(mfer.SAMPLING, *spec.sampling, order, long_form=long_form))
    out.append(scaled(mfer.RESOLUTION, *spec.resolution, order, long_form=long_form))
    out.append(element(mfer.BLOCK_LENGTH, block.to_bytes(4, order), long_form))
    out.append(element(mfer.CHANNELS, n_channels.to_bytes(4, order), long_form))
    out.append(element(mfer.SEQUENCES, spec.sequences.to_bytes(4, order), long_form))
    out.append(spec.defaults)
    for row, lead in enumerate(spec.leads):
        lead_element = element(mfer.LEAD, bytes([spec.lead_codes[lead]]), long_form)
        out.append(channel_attributes(row, lead_element, spec.channel_extra.get(row, b""), long_form=long_form))
    dtypes = [(channel_dtypes or {}).get(row, spec.dtype()) for row in range(n_channels)]
    per_frame = n_samples // spec.frames
    for frame in range(spec.frames):
        stored = spec.stored[:, frame * per_frame : (frame + 1) * per_frame]
        out.append(element(mfer.WAVEFORM, frame_bytes(stored, dtypes, spec.sequences), long_form=True))
    return b"".join(out)


def stored_values(name: str, shared_data: Path) -> np.ndarray:
    """The 8 × n stored values of a sample, straight from its bytes (not through the reader)."""
    start, order, _, _ = WAVEFORM_LAYOUT[name]
    data = (shared_data / "mfer" / f"{name}.mwf").read_bytes()
    return np.frombuffer(data[start:], np.dtype(f"{order}i2")).reshape(8, -1).astype(np.int64)


def synthetic(n_samples: int = 1000) -> np.ndarray:
    """8 distinct, lead-like stored values (a 1 Hz beat train scaled per lead)."""
    t = np.arange(n_samples)
    beat = np.where(t % 500 < 20, 800, 0) + (t % 500) // 10
    return np.stack([beat * (row + 1) // 4 - 50 * row for row in range(8)]).astype(np.int64)


def write(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


# --- the five real files -------------------------------------------------------------------

@pytest.fixture(scope="module")
def mfer_dir(shared_data) -> Path:
    return shared_data / "mfer"


@pytest.mark.parametrize("name", SAMPLES)
def test_real_file_reads_to_canonical_twelve_leads(mfer_dir, name):
    path = mfer_dir / f"{name}.mwf"
    assert format_of(path) is not None and format_of(path).name == "mfer"
    record = read_record(path)
    assert record.format == "mfer" and record.record_id == name and record.sampling_rate == 500
    assert record.lead_names == STORED_LEADS + ("III", "aVR", "aVL", "aVF")
    assert record.derived_leads == ("III", "aVR", "aVL", "aVF")
    assert WAVEFORM_LAYOUT[name][3] in record.device
    assert record.patient_id is None and record.acquired is None  # none of the samples carries them
    canonical = canonicalize(record)
    assert canonical.signal.shape == (12, 5000) and canonical.n_valid == 5000
    assert_limb_identities(canonical.signal)
    assert_physiological(canonical.signal)
    # No sample states its own heart rate: only plausibility can be checked.
    assert 30 <= heart_rate_bpm(canonical.signal) <= 200


@pytest.mark.parametrize("name", SAMPLES)
def test_real_file_samples_are_the_stored_values_times_the_resolution(shared_data, name):
    record = read_record(shared_data / "mfer" / f"{name}.mwf")
    millivolts_per_count = WAVEFORM_LAYOUT[name][2] * 1e-6
    expected = (stored_values(name, shared_data) * millivolts_per_count).astype(np.float32)
    np.testing.assert_allclose(record.signal[:8], expected, rtol=1e-6, atol=1e-7)


def test_fukuda_file_is_fifteen_seconds_and_canonical_keeps_the_first_ten(mfer_dir):
    record = read_record(mfer_dir / "ECG02.mwf")
    assert record.signal.shape == (12, 7500)
    canonical = canonicalize(record)
    order = [record.lead_names.index(lead) for lead in LEADS]
    np.testing.assert_array_equal(canonical.signal, record.signal[order, :5000])


def test_writer_reencodes_ecg01_byte_for_byte_and_reads_back_identically(shared_data, tmp_path):
    original = (shared_data / "mfer" / "ECG01.mwf").read_bytes()
    head = original[: original.index(b"\x01\x01\x01\x08")]  # preamble and manufacturer, verbatim
    spec = MferFile(stored=stored_values("ECG01", shared_data), head=head)
    rewritten = write_mfer(spec)
    assert rewritten == original
    again = read_record(write(tmp_path, "ECG01.mwf", rewritten))
    expected = read_record(shared_data / "mfer" / "ECG01.mwf")
    np.testing.assert_array_equal(again.signal, expected.signal)
    assert again.lead_names == expected.lead_names and again.device == expected.device


# --- features the samples do not exercise, on minimal written files -------------------------

def read_written(tmp_path: Path, spec: MferFile, **kwargs):
    return mfer.read(write(tmp_path, "minimal.mwf", write_mfer(spec, **kwargs)))


@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize(
    ("data_type", "offset", "resolution", "values"),
    [
        (0, 0, (0, -6, 1), np.arange(-400, 600)),  # 16-bit signed, 1 µV
        (1, 32768, (0, -6, 2), np.arange(32768 - 400, 32768 + 600)),  # 16-bit unsigned, zero at 32768
        (2, 0, (0, -9, 100), np.arange(-400, 600) * 70_000),  # 32-bit signed, 0.1 µV
        (3, 128, (0, -5, 1), np.arange(1000) % 256),  # 8-bit unsigned, zero at 128
        (5, 0, (0, -5, 1), (np.arange(1000) % 256) - 128),  # 8-bit signed
        (6, 2**31, (0, -9, 1), 2**31 + np.arange(-400, 600) * 5000),  # 32-bit unsigned
        (7, 0, (0, -3, 1), np.linspace(-1.5, 2.5, 1000)),  # 32-bit float in mV
        (8, 0, (0, 0, 1), np.linspace(-1.5e-3, 2.5e-3, 1000)),  # 64-bit float in V
    ],
)
def test_every_data_type_in_both_byte_orders(tmp_path, big_endian, data_type, offset, resolution, values):
    stored = np.stack([values] * 8)
    order = "big" if big_endian else "little"
    defaults = b""
    if offset:
        width = np.dtype(mfer.DATA_TYPES[data_type]).itemsize
        defaults = element(mfer.OFFSET, offset.to_bytes(width, order))
    spec = MferFile(stored=stored, data_type=data_type, resolution=resolution, big_endian=big_endian, defaults=defaults)
    record = read_written(tmp_path, spec)
    unit, exponent, mantissa = resolution
    expected = (values.astype(np.float64) - offset) * mantissa * 10.0**exponent * 1000
    np.testing.assert_allclose(record.signal[0], expected.astype(np.float32), rtol=1e-6, atol=1e-6)
    assert record.derived_leads == ("III", "aVR", "aVL", "aVF")


@pytest.mark.parametrize(
    ("sampling", "rate"),
    [
        ((0, 0, 500), 500.0),  # frequency 500 Hz
        ((0, 3, 1), 1000.0),  # frequency 1 × 10³ Hz
        ((1, -3, 2), 500.0),  # interval 2 ms
        ((1, -6, 1000), 1000.0),  # interval 1000 µs
        ((1, -4, 25), 400.0),  # interval 2.5 ms
    ],
)
def test_sampling_as_frequency_or_interval(tmp_path, sampling, rate):
    record = read_written(tmp_path, MferFile(stored=synthetic(), sampling=sampling))
    assert record.sampling_rate == rate


@pytest.mark.parametrize("declared", [True, False])
def test_several_sequences_are_joined_in_time_order(tmp_path, declared):
    stored = synthetic(1000)
    spec = MferFile(stored=stored, sequences=5)
    content = write_mfer(spec)
    if not declared:  # without a sequence count, the data length decides
        content = content.replace(element(mfer.SEQUENCES, (5).to_bytes(4, "little")), b"")
    record = mfer.read(write(tmp_path, "sequences.mwf", content))
    np.testing.assert_allclose(record.signal[:8], stored * 1.25e-3, rtol=1e-6)


def test_several_waveform_frames_are_joined(tmp_path):
    stored = synthetic(1000)
    record = read_written(tmp_path, MferFile(stored=stored, frames=2, sequences=2))
    np.testing.assert_allclose(record.signal[:8], stored * 1.25e-3, rtol=1e-6)


def test_channel_attributes_override_the_files_defaults(tmp_path):
    stored = synthetic(1000)
    v1 = 2  # row of V1: its own data type (32-bit signed), resolution (5 µV) and offset
    extra = (
        element(mfer.DATA_TYPE, b"\x02")
        + scaled(mfer.RESOLUTION, 0, -6, 5, "little")
        + element(mfer.OFFSET, (10).to_bytes(4, "little"))
    )
    spec = MferFile(stored=stored, channel_extra={v1: extra})
    record = read_written(tmp_path, spec, channel_dtypes={v1: np.dtype("<i4")})
    np.testing.assert_allclose(record.signal[v1], (stored[v1] - 10) * 5e-3, rtol=1e-6)
    others = [row for row in range(8) if row != v1]
    np.testing.assert_allclose(record.signal[others], stored[others] * 1.25e-3, rtol=1e-6)


def test_long_form_lengths_everywhere_read_as_short_ones(tmp_path):
    stored = synthetic()
    short = read_written(tmp_path, MferFile(stored=stored))
    long_content = write_mfer(MferFile(stored=stored, long_form=True))
    assert long_content.count(b"\x84\x00\x00\x00") > 10  # every element, not only the waveform
    long = mfer.read(write(tmp_path, "long.mwf", long_content))
    np.testing.assert_array_equal(long.signal, short.signal)


def test_unknown_tags_and_padding_are_skipped_by_their_length(tmp_path):
    stored = synthetic()
    plain = read_written(tmp_path, MferFile(stored=stored))
    unknown = element(0x2A, bytes(range(200))) + b"\x00\x00" + element(0x41, b"\x00\x01" + bytes(8))
    spec = MferFile(stored=stored, defaults=unknown, channel_extra={3: element(0x7E, b"\x1e\x04")})
    noisy = read_written(tmp_path, spec)
    np.testing.assert_array_equal(noisy.signal, plain.signal)


def test_null_values_become_nan_and_offset_shifts_zero(tmp_path):
    stored = synthetic(5000)
    stored[4, 100:110] = -32768
    defaults = element(mfer.OFFSET, (20).to_bytes(2, "little", signed=True)) + element(
        mfer.NULL_VALUE, (-32768).to_bytes(2, "little", signed=True)
    )
    record = read_written(tmp_path, MferFile(stored=stored, defaults=defaults))
    assert np.isnan(record.signal[4, 100:110]).all()
    assert np.isfinite(record.signal[4, :100]).all() and np.isfinite(record.signal[:4]).all()
    np.testing.assert_allclose(record.signal[0], (stored[0] - 20) * 1.25e-3, rtol=1e-6)
    with pytest.raises(RecordError, match="NaN/inf or missing samples in lead"):
        canonicalize(record)


def test_patient_id_measurement_time_and_japanese_text(tmp_path):
    head = (
        element(mfer.CHARACTER_CODE, b"UTF-8")
        + element(mfer.MANUFACTURER, "フクダ電子^FCP-8800^1.0".encode("utf-8"))
        + element(mfer.PATIENT_ID, "患者-0042".encode("utf-8"))
        + element(mfer.PATIENT_NAME, "山田^ヤマダ^太郎".encode("utf-8"))
        # Before the byte-order element the default, big-endian, applies.
        + element(mfer.MEASUREMENT_TIME, (2019).to_bytes(2, "big") + bytes([3, 4, 10, 22, 31]) + (250).to_bytes(2, "big") + bytes(2))
    )
    record = read_written(tmp_path, MferFile(stored=synthetic(), head=head))
    assert record.patient_id == "患者-0042"
    assert record.acquired == "2019-03-04T10:22:31.250000"
    assert record.device == "フクダ電子 FCP-8800 1.0"


def test_stored_limb_leads_are_kept_not_derived(tmp_path):
    stored = np.concatenate([synthetic(), synthetic()[:4] + 7])  # III … aVF deliberately inconsistent
    leads = STORED_LEADS + ("III", "aVR", "aVL", "aVF")
    record = read_written(tmp_path, MferFile(stored=stored, leads=leads))
    assert record.lead_names == leads and record.derived_leads == ()
    np.testing.assert_allclose(record.signal[8:], stored[8:] * 1.25e-3, rtol=1e-6)


# --- malformed files, made from ECG01 -------------------------------------------------------

def edited(original: bytes, old: bytes, new: bytes) -> bytes:
    assert original.count(old) == 1, old
    return original.replace(old, new)


@pytest.fixture(scope="module")
def ecg01(shared_data) -> bytes:
    return (shared_data / "mfer" / "ECG01.mwf").read_bytes()


def broken_files(ecg01: bytes) -> dict[str, tuple[bytes, str]]:
    """File name → (content, what the reason must say)."""
    waveform_start = 156
    channel_bytes = 5000 * 2
    return {
        "cut-in-v3": (ecg01[: waveform_start + 4 * channel_bytes + 5000],
                      "truncated waveform: 2,500 of 5,000 samples of lead V3; 3 more lead(s) cut short"),
        "length-past-end": (edited(ecg01, b"\x1e\x84\x00\x01\x38\x80", b"\x1e\x84\x00\x02\x38\x80"),
                            "waveform element at byte 150 declares 145,536 bytes but only 80,000 remain"),
        "cut-in-header": (ecg01[:40], "element 0x17 (manufacturer) at byte 34 declares 30 bytes but only 4 remain"),
        "no-waveform": (ecg01[:waveform_start - 6], "no waveform (tag 0x1E) in the file"),
        "no-v4": (edited(ecg01, b"\x3f\x05\x03\x09\x01\x06", b"\x3f\x05\x03\x09\x01\x63"),
                  "cannot make 12 leads: no V4 (stores I, II, V1, V2, V3, MFER-lead-99, V5, V6;"),
        "no-lead-i": (edited(ecg01, b"\x3f\x00\x03\x09\x01\x01", b"\x3f\x00\x03\x09\x01\x63"),
                      "cannot make 12 leads: no I, III, aVR, aVL, aVF"),
        "rate-zero": (edited(ecg01, b"\x0b\x04\x01\xfd\x02\x00", b"\x0b\x04\x00\xfd\x00\x00"),
                      "sampling rate of 0 (tag 0x0B)"),
        "interval-zero": (edited(ecg01, b"\x0b\x04\x01\xfd\x02\x00", b"\x0b\x04\x01\xfd\x00\x00"),
                          "sampling interval of 0 (tag 0x0B)"),
        "absurd-block-length": (edited(ecg01, b"\x04\x04\x88\x13\x00\x00", b"\x04\x04\xff\xff\xff\x7f"),
                                "truncated waveform: 40,000 of 2,147,483,647 samples of lead I; 7 more lead(s) cut short"),
        "aha-compressed": (edited(ecg01, b"\x08\x01\x01", b"\x08\x01\x01\x0a\x01\x09"),
                           "data type 9 (AHA 8-bit difference compression) is not supported"),
    }


@pytest.mark.parametrize("case", ["cut-in-v3", "length-past-end", "cut-in-header", "no-waveform", "no-v4",
                                  "no-lead-i", "rate-zero", "interval-zero", "absurd-block-length", "aha-compressed"])
def test_broken_file_raises_a_record_error_saying_what_is_wrong(ecg01, tmp_path, case):
    content, reason = broken_files(ecg01)[case]
    path = write(tmp_path, f"{case}.mwf", content)
    with pytest.raises(RecordError) as raised:
        read_record(path)
    assert reason in raised.value.reason
    assert "\n" not in str(raised.value) and str(path) in str(raised.value)


def test_ingest_stores_the_good_file_and_lists_every_broken_one_with_its_reason(ecg01, tmp_path):
    inputs = tmp_path / "export"
    inputs.mkdir()
    write(inputs, "ECG01.mwf", ecg01)
    cases = broken_files(ecg01)
    for case, (content, _) in cases.items():
        write(inputs, f"{case}.mwf", content)
    manifest = ingest([inputs], tmp_path / "store", options=IngestOptions(workers=1)).manifest
    reasons = {Path(skip["path"]).stem: skip["reason"] for skip in manifest["skipped"]}
    assert set(reasons) == set(cases)
    for case, reason in reasons.items():
        assert cases[case][1] in reason, case
    assert sum(count["records"] for count in manifest["counts"].values()) == 1


# --- sniffing and a Japanese sidecar --------------------------------------------------------

def test_sniff_accepts_mfer_heads_and_refuses_every_other_shared_file(shared_data):
    for path in sorted((shared_data / "formats").rglob("*")) + sorted((shared_data / "ptb-xl" / "records500" / "00000").glob("00001_hr.*")):
        if path.is_file():
            assert not mfer.sniff(path.read_bytes()[:4096]), path
    for name in SAMPLES:
        assert mfer.sniff((shared_data / "mfer" / f"{name}.mwf").read_bytes()[:4096])
    assert not mfer.sniff(b"") and not mfer.sniff(bytes(4096)) and not mfer.sniff(b"<?xml version='1.0'?>")


def test_japanese_sidecar_reports_reach_the_store(mfer_dir, tmp_path):
    sidecar = tmp_path / "reports.csv"
    rows = [
        "record,patient,report,findings",
        "ECG01.mwf,P-001,洞調律 正常範囲,正常心電図",
        "ECG02.mwf,P-002,洞性徐脈 完全右脚ブロック,洞性徐脈、完全右脚ブロック",
        "ECG03,P-003,心房細動,心房細動",
        "ECG04,P-001,左室肥大の疑い,左室肥大",
        "ECG05,P-005,洞調律,正常心電図",
    ]
    sidecar.write_bytes(("\r\n".join(rows) + "\r\n").encode("cp932"))  # as Japanese Excel saves it
    result = ingest([mfer_dir], tmp_path / "store", metadata=[sidecar], options=IngestOptions(workers=1))
    assert result.manifest["skipped"] == []
    registry = load_registry()
    stored = {}
    for shard in Store(tmp_path / "store").shards(with_signal=True):
        for index, record_id in enumerate(shard.record_id):
            stored[record_id] = (shard.patient_id[index], shard.report[index],
                                 set(registry.ids_from_multi_hot(shard.findings[index])), shard.signal[index])
    assert set(stored) == set(SAMPLES)
    assert stored["ECG02"][:2] == ("P-002", "洞性徐脈 完全右脚ブロック")
    assert stored["ECG02"][2] == {"sinus_bradycardia", "complete_right_bundle_branch_block"}
    assert stored["ECG01"][2] == stored["ECG05"][2] == {"normal"}
    assert stored["ECG03"][2] == {"atrial_fibrillation"} and stored["ECG04"][2] == {"left_ventricular_hypertrophy"}
    assert stored["ECG04"][0] == stored["ECG01"][0] == "P-001"
    for record_id, (_, _, _, signal) in stored.items():
        assert signal.shape == (12, 5000)
        assert_limb_identities(signal.astype(np.float32), atol=5e-3)  # float16 storage: ~5e-4 relative
