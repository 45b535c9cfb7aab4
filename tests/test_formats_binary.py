"""DICOM ECG and SCP-ECG readers on the real files in ../shared/data/formats, and on damaged copies."""

from __future__ import annotations

import struct
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pydicom
import pytest

from ecg_checks import assert_limb_identities, assert_physiological, heart_rate_bpm, limb_identity_error
from ecgtool.errors import RecordError
from ecgtool.ingest import IngestOptions, ingest
from ecgtool.io import SNIFF_BYTES, dicom_ecg, format_of, read_record, scp_ecg
from ecgtool.signal import LEADS, N_SAMPLES, canonicalize

# The machine's heart rate (60000 / its RR) and the R-peak count agree within ±5 %: both see the
# same 10 s of a regular rhythm, so only the count's 2 ms sample grid and one RR of jitter differ.
HEART_RATE_TOLERANCE = 0.05

REAL_FILES = {
    "dicom-ecg/waveform_ecg.dcm": "dicom-ecg",
    "dicom-ecg/example-DICOM1.dcm": "dicom-ecg",
    "scp-ecg/demo.scp": "scp-ecg",
    "scp-ecg/Example.scp": "scp-ecg",
}


@pytest.fixture(scope="module")
def formats(shared_data) -> Path:
    return shared_data / "formats"


# ---------------------------------------------------------------- independent helpers of the tests


def crc_ccitt(data: bytes) -> int:
    """CRC-CCITT (polynomial 0x1021, initial 0xFFFF), bit by bit as EN 1064 describes it."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def scp_sections(data: bytes) -> dict[int, bytes]:
    """Section bodies by number, from the pointer table of section 0."""
    (section0_length,) = struct.unpack_from("<I", data, 10)
    sections = {}
    for offset in range(6 + 16, 6 + section0_length, 10):
        number, length, index = struct.unpack_from("<HII", data, offset)
        if length:
            sections[number] = data[index - 1 + 16 : index - 1 + length]
    return sections


def scp_file(sections: dict[int, bytes]) -> bytes:
    """An SCP-ECG file holding ``sections`` (bodies, 0 excluded), with pointer table and CRCs."""
    numbers = sorted(set(sections) | set(range(12)) - {0})
    section0_length = 16 + 10 * (len(numbers) + 1)
    placed, position = [], 6 + section0_length
    for number in numbers:
        body = sections.get(number, b"")
        placed.append((number, 16 + len(body) if body else 0, position + 1 if body else 0))
        position += 16 + len(body) if body else 0
    pointer_table = struct.pack("<HII", 0, section0_length, 7) + b"".join(struct.pack("<HII", *p) for p in placed)
    blobs = [_scp_section(0, pointer_table, b"SCPECG")]
    blobs += [_scp_section(number, sections[number]) for number in numbers if sections.get(number)]
    content = b"".join(blobs)
    length_and_content = struct.pack("<I", 6 + len(content)) + content
    return struct.pack("<H", crc_ccitt(length_and_content)) + length_and_content


def _scp_section(number: int, body: bytes, reserved: bytes = b"\0" * 6) -> bytes:
    rest = struct.pack("<HIBB", number, 16 + len(body), 20, 20) + reserved + body
    return struct.pack("<H", crc_ccitt(rest)) + rest


def aecg_leads(path: Path) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Rhythm leads (mV; the first series, before the median beats) and the PR / QRS / QT (ms) an
    HL7 aECG file states, read with ElementTree."""
    ns = {"h": "urn:hl7-org:v3"}
    root = ElementTree.parse(path).getroot()
    units_mv = {"uV": 1e-3, "mV": 1.0}
    leads = {}
    for sequence in root.iter("{urn:hl7-org:v3}sequence"):
        code = sequence.find("h:code", ns).get("code")
        if not code.startswith("MDC_ECG_LEAD_"):
            continue
        value = sequence.find("h:value", ns)
        origin, scale = value.find("h:origin", ns), value.find("h:scale", ns)
        digits = np.array(value.find("h:digits", ns).text.split(), dtype=np.float64)
        name = code.removeprefix("MDC_ECG_LEAD_").replace("AV", "aV")
        leads.setdefault(name, (float(origin.get("value")) + float(scale.get("value")) * digits) * units_mv[scale.get("unit")])
    stated = {}
    for observation in root.iter("{urn:hl7-org:v3}annotation"):
        code = observation.find("h:code", ns)
        value = observation.find("h:value", ns)
        if code is not None and value is not None and code.get("code", "").startswith("MDC_ECG_TIME_PD_"):
            stated.setdefault(code.get("code").removeprefix("MDC_ECG_TIME_PD_"), float(value.get("value")))
    return leads, stated


def _derived_then_stored(record):
    stored = [lead for lead in ("III", "aVR", "aVL", "aVF") if lead not in record.derived_leads]
    return list(record.derived_leads), stored


# ---------------------------------------------------------------------------------- the real files


@pytest.mark.parametrize("relative", sorted(REAL_FILES))
def test_real_files_read_to_a_physiological_canonical_record(formats, relative):
    path = formats / relative
    assert format_of(path).name == REAL_FILES[relative]
    record = read_record(path)
    assert record.format == REAL_FILES[relative] and record.record_id == path.stem
    canonical = canonicalize(record)
    assert canonical.signal.shape == (len(LEADS), N_SAMPLES) and canonical.n_valid == N_SAMPLES
    assert_physiological(canonical.signal)
    derived, stored = _derived_then_stored(record)
    assert_limb_identities(canonical.signal, derived)
    # Stored limb leads obey Einthoven/Goldberger up to the file's quantisation (≤ 5 µV here).
    for lead in stored:
        assert limb_identity_error(canonical.signal, lead) < 0.005, lead
    assert 30 <= heart_rate_bpm(canonical.signal) <= 200


def test_dicom_mortara_fields_and_its_own_heart_rate(formats):
    record = read_record(formats / "dicom-ecg" / "waveform_ecg.dcm")
    assert record.sampling_rate == 1000 and record.signal.shape == (12, 10000)
    assert record.lead_names == LEADS and record.derived_leads == ()
    assert record.patient_id == "642341" and record.acquired == "2013-01-25T10:59:19"
    assert record.device.startswith("Mortara Instrument, Inc. / el250")
    assert record.statements == ("RITMO SINUSALE", "ECG NORMALE")
    assert record.measurements == {
        "rr_ms": 982.0, "pr_ms": 161.0, "qrs_ms": 75.0, "qt_ms": 368.0, "qtc_ms": 370.0,
        "p_axis_deg": 74.0, "qrs_axis_deg": 52.0, "t_axis_deg": 57.0,
    }
    stated = 60000.0 / record.measurements["rr_ms"]
    assert heart_rate_bpm(canonicalize(record).signal) == pytest.approx(stated, rel=HEART_RATE_TOLERANCE)


@pytest.mark.parametrize("name", ["waveform_ecg.dcm", "example-DICOM1.dcm"])
def test_dicom_rhythm_group_equals_pydicoms_own_scaling(formats, name):
    path = formats / "dicom-ecg" / name
    record = read_record(path)
    dataset = pydicom.dcmread(path)
    rhythm = max(range(len(dataset.WaveformSequence)), key=lambda i: dataset.WaveformSequence[i].NumberOfWaveformSamples)
    microvolts = dataset.waveform_array(rhythm).T  # pydicom: stored × sensitivity × correction + baseline, in µV
    assert record.signal.shape == microvolts.shape
    np.testing.assert_allclose(record.signal, microvolts / 1000.0, atol=1e-6)


def test_dicom_ge_example_picks_the_rhythm_not_the_median_beats(formats):
    record = read_record(formats / "dicom-ecg" / "example-DICOM1.dcm")
    assert record.sampling_rate == 500 and record.signal.shape == (12, 5000)
    assert record.device.startswith("GE Healthcare / MV360") and record.acquired == "2023-01-04T08:58:44"
    assert record.statements == () and record.measurements == {}


def test_scp_demo_is_a_60_per_minute_simulator_with_derived_limb_leads(formats):
    record = read_record(formats / "scp-ecg" / "demo.scp")
    assert record.sampling_rate == 1000 and record.signal.shape == (12, 10000)
    assert record.lead_names[:8] == ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
    assert record.derived_leads == ("III", "aVR", "aVL", "aVF")
    assert record.patient_id == "12-678-QW" and record.acquired == "2004-06-24T16:52:16"
    assert heart_rate_bpm(canonicalize(record).signal) == pytest.approx(60, abs=3)


def test_scp_example_uses_no_reference_beat_subtraction(formats):
    """Sections 4 and 5 are present, but section 3 does not flag residuals and section 4 lists no QRS."""
    sections = scp_sections((formats / "scp-ecg" / "Example.scp").read_bytes())
    assert {4, 5} <= sections.keys()
    assert sections[3][1] & 0x01 == 0
    assert struct.unpack_from("<H", sections[4], 4)[0] == 0  # number of QRS complexes


def test_scp_example_equals_the_hl7_aecg_it_was_converted_from(formats):
    record = read_record(formats / "scp-ecg" / "Example.scp")
    leads, stated = aecg_leads(formats / "hl7-aecg" / "example-aecg.xml")
    assert set(leads) == set(LEADS) and record.derived_leads == ()
    for lead in LEADS:
        decoded = record.signal[record.lead_names.index(lead)]
        assert decoded.shape == leads[lead].shape, lead
        # SCP's AVM (2.5 µV) equals the aECG's scale, so the integers are the same: equal to float
        # rounding, far inside the half-step (1.25 µV) that a different quantisation would allow.
        assert np.abs(decoded - leads[lead]).max() <= 1e-6, lead
    assert record.measurements["pr_ms"] == stated["PR"] == 148
    assert record.measurements["qrs_ms"] == stated["QRS"] == 120
    assert record.measurements["qt_ms"] == stated["QT"] == 420
    assert record.patient_id == "SBJ-123" and record.acquired == "2002-11-22T09:10:00"
    assert "ELI250" in record.device


def test_scp_files_carry_valid_crc_ccitt(formats):
    for name in ("demo.scp", "Example.scp"):
        data = (formats / "scp-ecg" / name).read_bytes()
        assert struct.unpack_from("<H", data)[0] == crc_ccitt(data[2:]), name


def test_huffman_example_of_the_standard_decodes_exactly():
    # EN 1064 worked example (default table, second differences); its table of binary values
    # shows 0xF1 for the sixth byte and one more zero bit than the printed bytes.
    encoded = bytes([0xFF, 0x83, 0x7F, 0xE0, 0xE6, 0xF1, 0x53, 0x65, 0x59, 0xB6, 0x5B, 0x96, 0x4B, 0x96, 0x00])
    expected = [13, 14, 15, 14, 16, 18, 19, 20, 22, 22, 23, 23, 23, 22, 22, 20, 17, 15, 12, 8, 6, 3, 1, 0, -2, -2, -3, -3]
    values = scp_ecg.decode_huffman(encoded, len(expected), scp_ecg.DEFAULT_HUFFMAN_TABLE)
    assert scp_ecg.undo_differences(values, 2).tolist() == expected


def test_scp_with_the_default_table_written_out_in_section_2_decodes_alike(tmp_path, formats):
    path = formats / "scp-ecg" / "Example.scp"
    sections = scp_sections(path.read_bytes())
    # The standard's default table as a file would carry it: codes MSB first, stored bit-reversed.
    codes = [("0", 0, 0)] + [("1" * m + "0" + s, 0, v) for m in range(1, 9) for s, v in (("0", m), ("1", -m))]
    codes += [("1111111110", 8, 0), ("1111111111", 16, 0)]
    table = struct.pack("<HH", 1, len(codes)) + b"".join(
        struct.pack("<BBBhI", len(bits), len(bits) + extra, 1, value, int(bits[::-1], 2)) for bits, extra, value in codes
    )
    data = scp_file({**sections, 2: table})
    assert scp_sections(data)[2] == table
    np.testing.assert_array_equal(read_record(_write(tmp_path / "custom_table.scp", data)).signal, read_record(path).signal)


def test_scp_section_8_statements_are_read(tmp_path, formats):
    sections = scp_sections((formats / "scp-ecg" / "Example.scp").read_bytes())
    texts = [b"Sinus rhythm\0", b"Normal ECG\0"]
    statements = b"".join(struct.pack("<BH", i + 1, len(t)) + t for i, t in enumerate(texts))
    section8 = bytes([0]) + struct.pack("<HBB", 2002, 11, 22) + bytes([9, 10, 0]) + bytes([len(texts)]) + statements
    record = read_record(_write(tmp_path / "statements.scp", scp_file({**sections, 8: section8})))
    assert record.statements == ("Sinus rhythm", "Normal ECG")


# ------------------------------------------------------------------------------- damaged SCP files

def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _edited_example(formats, edit) -> bytes:
    sections = scp_sections((formats / "scp-ecg" / "Example.scp").read_bytes())
    edit(sections)
    return scp_file(sections)


def _set_byte(section: int, offset: int, value: int):
    def edit(sections):
        body = bytearray(sections[section])
        body[offset] = value
        sections[section] = bytes(body)

    return edit


def _drop_section(number: int):
    return lambda sections: sections.pop(number)


def _shorten_lead_v3(sections):
    body = sections[6]
    n_leads = 12
    counts = list(struct.unpack_from(f"<{n_leads}H", body, 6))
    start = 6 + 2 * n_leads + sum(counts[:4])
    data = body[:start] + body[start : start + counts[4] // 2] + body[start + counts[4] :]
    counts[4] //= 2
    sections[6] = body[:6] + struct.pack(f"<{n_leads}H", *counts) + data[6 + 2 * n_leads :]


def _one_lead_shorter(sections):
    body = bytearray(sections[3])
    struct.pack_into("<I", body, 2 + 9 * 5 + 4, 4000)  # V4 ends at sample 4000
    sections[3] = bytes(body)


DAMAGED_SCP = {
    "unknown_encoding": (_set_byte(6, 4, 7), "unknown difference encoding 7 in section 6"),
    "bimodal": (_set_byte(6, 5, 1), "bimodal compression (section 6) not supported"),
    "reference_beat": (_set_byte(3, 1, 0x65), "reference-beat subtraction not supported"),
    "no_rhythm": (_drop_section(6), "section 6 missing (rhythm data)"),
    "short_huffman_lead": (_shorten_lead_v3, "truncated rhythm data: lead V3 decodes to"),
    "inconsistent_lengths": (_one_lead_shorter, "inconsistent lead lengths in section 3: V4 samples 1–4,000, the others 1–5,000"),
}


@pytest.mark.parametrize("case", sorted(DAMAGED_SCP))
def test_damaged_scp_files_raise_one_line_reasons(tmp_path, formats, case):
    edit, reason = DAMAGED_SCP[case]
    path = _write(tmp_path / f"{case}.scp", _edited_example(formats, edit))
    with pytest.raises(RecordError) as caught:
        read_record(path)
    assert reason in caught.value.reason and "\n" not in caught.value.reason


def test_scp_truncated_file_and_bad_crc(tmp_path, formats):
    data = (formats / "scp-ecg" / "Example.scp").read_bytes()
    with pytest.raises(RecordError, match=r"truncated file: 20,000 of 34,144 bytes"):
        read_record(_write(tmp_path / "cut.scp", data[:20000]))
    flipped = bytearray(data)
    flipped[10000] ^= 0x40  # inside the rhythm data of section 6
    path = _write(tmp_path / "flipped.scp", bytes(flipped))
    with pytest.raises(RecordError, match=r"CRC mismatch in file: stored 0x[0-9A-F]{4}, computed 0x[0-9A-F]{4}"):
        read_record(path)
    # Without the check, the flipped bit decodes to something else (or fails to decode).
    try:
        changed = read_record(path, verify_checksums=False).signal
        assert not np.array_equal(changed, read_record(formats / "scp-ecg" / "Example.scp").signal)
    except RecordError as error:
        assert "rhythm data" in error.reason


def test_scp_without_lead_v4_is_named_by_canonicalize(tmp_path, formats):
    sections = scp_sections((formats / "scp-ecg" / "demo.scp").read_bytes())
    lead_definitions = sections[3]
    sections[3] = bytes([7, lead_definitions[1]]) + lead_definitions[2 : 2 + 9 * 5] + lead_definitions[2 + 9 * 6 : 2 + 9 * 8]
    rhythm = sections[6]
    counts = struct.unpack_from("<8H", rhythm, 6)
    data = rhythm[6 + 2 * 8 :]
    starts = np.cumsum((0,) + counts)
    kept = [i for i in range(8) if i != 5]
    sections[6] = rhythm[:6] + struct.pack("<7H", *(counts[i] for i in kept)) + b"".join(
        data[starts[i] : starts[i + 1]] for i in kept
    )
    record = read_record(_write(tmp_path / "no_v4.scp", scp_file(sections)))
    assert "V4" not in record.lead_names
    with pytest.raises(RecordError, match="missing leads: V4"):
        canonicalize(record)


# ----------------------------------------------------------------------------- damaged DICOM files


def _dicom_copy(formats, edit, path: Path) -> Path:
    dataset = pydicom.dcmread(formats / "dicom-ecg" / "waveform_ecg.dcm")
    edit(dataset)
    dataset.save_as(path, enforce_file_format=False)
    return path


def _truncate_rhythm(dataset):
    group = dataset.WaveformSequence[0]
    group.WaveformData = group.WaveformData[: 12 * 2 * 4000]


def _unknown_unit(dataset):
    dataset.WaveformSequence[0].ChannelDefinitionSequence[3].ChannelSensitivityUnitsSequence[0].CodeValue = "furlong"


def _drop_channel_v4(dataset):
    group = dataset.WaveformSequence[0]
    samples = np.frombuffer(group.WaveformData, dtype="<i2").reshape(-1, 12)
    group.WaveformData = np.delete(samples, 9, axis=1).tobytes()
    del group.ChannelDefinitionSequence[9]
    group.NumberOfWaveformChannels = 11


def _as_image(dataset):
    dataset.SOPClassUID = dataset.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"  # CT image


def _as_general_ecg(dataset):
    dataset.SOPClassUID = dataset.file_meta.MediaStorageSOPClassUID = dicom_ecg.GENERAL_ECG


def test_dicom_truncated_waveform_and_unknown_unit(tmp_path, formats):
    with pytest.raises(RecordError, match=r"truncated waveform: 4,000 of 10,000 samples per channel"):
        read_record(_dicom_copy(formats, _truncate_rhythm, tmp_path / "short.dcm"))
    with pytest.raises(RecordError, match=r"lead aVR: unknown channel sensitivity unit 'furlong'"):
        read_record(_dicom_copy(formats, _unknown_unit, tmp_path / "furlong.dcm"))
    data = (formats / "dicom-ecg" / "waveform_ecg.dcm").read_bytes()
    with pytest.raises(RecordError, match="unreadable DICOM: "):
        read_record(_write(tmp_path / "cut.dcm", data[:200000]))


def test_dicom_of_another_sop_class_is_not_sniffed_as_ecg(tmp_path, formats):
    path = _dicom_copy(formats, _as_image, tmp_path / "image.dcm")
    assert not dicom_ecg.sniff(path.read_bytes()[:SNIFF_BYTES])
    with pytest.raises(RecordError, match="unrecognised record format"):
        read_record(path)
    with pytest.raises(RecordError, match=r"SOP class 1\.2\.840\.10008\.5\.1\.4\.1\.1\.2 .* is not an ECG waveform"):
        dicom_ecg.read(path)


def test_general_ecg_is_read_when_it_holds_the_12_leads(tmp_path, formats):
    record = read_record(_dicom_copy(formats, _as_general_ecg, tmp_path / "general.dcm"))
    assert record.lead_names == LEADS
    both = lambda dataset: (_as_general_ecg(dataset), _drop_channel_v4(dataset))  # noqa: E731
    with pytest.raises(RecordError, match=r"general ECG waveform without the 12 standard leads \(missing: V4\)"):
        read_record(_dicom_copy(formats, both, tmp_path / "general_no_v4.dcm"))


def test_dicom_sop_class_past_the_head_is_still_read(tmp_path, formats):
    def push_sop_class_back(dataset):
        del dataset.file_meta.MediaStorageSOPClassUID
        dataset.private_block(0x0007, "ECGTOOL TEST", create=True).add_new(0x00, "OB", b"\0" * 6000)

    path = _dicom_copy(formats, push_sop_class_back, tmp_path / "late_sop_class.dcm")
    assert path.read_bytes().find(dicom_ecg.TWELVE_LEAD_ECG.encode()) > SNIFF_BYTES
    record = read_record(path)
    assert record.format == "dicom-ecg" and record.lead_names == LEADS


def test_ingest_stores_the_good_files_and_skips_the_bad_ones(formats, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    good = formats / "scp-ecg" / "Example.scp"
    (inputs / "Example.scp").write_bytes(good.read_bytes())
    (inputs / "waveform_ecg.dcm").write_bytes((formats / "dicom-ecg" / "waveform_ecg.dcm").read_bytes())
    (inputs / "cut.scp").write_bytes(good.read_bytes()[:20000])
    (inputs / "bimodal.scp").write_bytes(_edited_example(formats, _set_byte(6, 5, 1)))
    (inputs / "short.dcm").write_bytes(_dicom_copy(formats, _truncate_rhythm, tmp_path / "short.dcm").read_bytes())
    (inputs / "no_v4.dcm").write_bytes(_dicom_copy(formats, _drop_channel_v4, tmp_path / "no_v4.dcm").read_bytes())
    result = ingest([inputs], tmp_path / "store", options=IngestOptions(workers=1))
    reasons = {Path(s["path"]).name: s["reason"] for s in result.manifest["skipped"]}
    assert reasons.keys() == {"cut.scp", "bimodal.scp", "short.dcm", "no_v4.dcm"}
    assert reasons["cut.scp"].startswith("truncated file")
    assert "bimodal" in reasons["bimodal.scp"]
    assert reasons["short.dcm"].startswith("truncated waveform")
    assert "missing leads: V4" in reasons["no_v4.dcm"]
    assert sum(split["records"] for split in result.manifest["counts"].values()) == 2
