"""The Python API (ecgtool.api, which ``import ecgtool`` re-exports) on the shipped PTB-XL examples.

The same file read through the CLI (``ecgtool predict FILE --json``) and through the API, and the
same samples passed as an array (read with ``wfdb.rdrecord``), give the same findings.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import wfdb
from fhir.resources.R4B.bundle import Bundle as FhirBundle
from typer.testing import CliRunner

from ecgtool.api import Model, Reading, SourceError, labels, load_model, read_record
from ecgtool.cli import app
from ecgtool.errors import RecordError
from ecgtool.fhir import MEASUREMENTS, reading_to_fhir
from ecgtool.registry import LanguageError
from ecgtool.signal import LEADS

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "ptb-xl"
RECORDS = ("00172_hr", "00180_hr", "00299_hr", "00318_hr")
NOW = datetime(2026, 12, 4, 9, 30, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def model() -> Model:
    return load_model(device="cpu")


@pytest.fixture(scope="module")
def readings(model):
    """record → its reading from the file, top 5 in Japanese (the CLI's defaults)."""
    return {record: model.read(EXAMPLES / f"{record}.hea") for record in RECORDS}


def calls(reading: Reading) -> list[tuple]:
    """What a reading decides, finding by finding, in table order."""
    return [(f.id, f.call, f.excluded_by, f.decided_by) for f in reading.findings]


def assert_same_findings(one: Reading, other: Reading, tolerance: float = 0.0) -> None:
    assert calls(one) == calls(other)
    assert one.report_line() == other.report_line()
    for a, b in zip(one.findings, other.findings):
        assert a.score == pytest.approx(b.score, abs=tolerance, rel=0)
        assert (a.probability is None) == (b.probability is None)
        if a.probability is not None:
            assert a.probability == pytest.approx(b.probability, abs=tolerance, rel=0)


@pytest.mark.parametrize("record", RECORDS)
def test_cli_and_api_read_a_file_alike(record, readings):
    result = CliRunner().invoke(app, ["predict", f"examples/ptb-xl/{record}.hea", "--json"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    from_cli = json.loads(result.stdout)
    api = readings[record].to_dict()
    assert {**api, "path": from_cli["path"]} == from_cli  # byte for byte, but for the path as spelt
    assert [f["id"] for f in from_cli["findings"]] == [f.id for f in readings[record].findings]


@pytest.mark.parametrize("record", RECORDS)
def test_a_wfdb_array_reads_as_its_file(record, model, readings):
    wfdb_record = wfdb.rdrecord(str(EXAMPLES / record))
    array = model.read(wfdb_record.p_signal.T, sampling_rate=wfdb_record.fs, leads=wfdb_record.sig_name)
    # wfdb scales to mV in float64, ecgtool's reader in float32: the samples differ in the last bit
    assert_same_findings(array, readings[record], tolerance=1e-6)
    assert array.path is None and array.record_id == "array"
    # the samples ecgtool itself reads, passed as an array: the very same reading
    raw = read_record(EXAMPLES / f"{record}.hea", canonical=False)
    same = model.read(raw.signal, sampling_rate=raw.sampling_rate, leads=raw.lead_names, record_id=record)
    assert {**same.to_dict(), "path": readings[record].path} == readings[record].to_dict()


def test_an_array_at_another_rate_is_resampled_as_a_file_would_be(model, readings):
    """PTB-XL's 100 Hz copy of 00299 read as an array reads like the file at 500 Hz (same calls)."""
    raw = read_record(EXAMPLES / "00299_hr.hea", canonical=False)
    from scipy.signal import resample_poly

    low = resample_poly(raw.signal, 1, 5, axis=1).astype(np.float32)
    reading = model.read(low, sampling_rate=100, leads=list(raw.lead_names))
    assert [f.id for f in reading.present][:1] == [f.id for f in readings["00299_hr"].present][:1]


def test_read_record_is_canonical(model):
    record = read_record(EXAMPLES / "00180_hr.hea")
    assert record.signal.shape == (12, 5000) and record.signal.dtype == np.float32
    assert record.lead_names == LEADS and record.sampling_rate == 500 and record.record_id == "00180_hr"
    assert model.read(record).to_dict()["findings"] == model.read(EXAMPLES / "00180_hr.hea").to_dict()["findings"]


def test_read_many_reads_in_batches_as_one_by_one(model, readings):
    wfdb_record = wfdb.rdrecord(str(EXAMPLES / "00318_hr"))
    sources = [EXAMPLES / f"{record}.hea" for record in RECORDS] + [wfdb_record.p_signal.T]
    many = model.read_many(sources, batch_size=3, sampling_rate=wfdb_record.fs, leads=wfdb_record.sig_name)
    assert [r.record_id for r in many] == [*RECORDS, "array-4"]
    for record, reading in zip(RECORDS, many):
        assert_same_findings(reading, readings[record], tolerance=1e-5)  # batched convolutions round differently
        assert reading.measurements == readings[record].measurements
    assert_same_findings(many[-1], readings["00318_hr"], tolerance=1e-5)
    assert model.read_many([]) == []
    with pytest.raises(SourceError, match="batch_size 0"):
        model.read_many(sources, batch_size=0)


def test_the_language_changes_the_words_only(model, readings):
    japanese = readings["00299_hr"]
    english = model.read(EXAMPLES / "00299_hr.hea", lang="en")
    assert calls(english) == calls(japanese)
    assert [f.score for f in english.findings] == [f.score for f in japanese.findings]
    assert japanese.report_line("en") == english.report_line() and english.report_line("ja") == japanese.report_line()
    assert japanese.to_dict("en") == english.to_dict() and english.to_dict("ja") == japanese.to_dict()
    assert japanese.report_line().startswith("この心電図は左室肥大")
    assert english.report_line().startswith("This ECG shows Left Ventricular Hypertrophy")
    finding = japanese.findings[0]
    assert (finding.id, finding.ja, finding.en, finding.name("en")) == (
        "left_ventricular_hypertrophy", "左室肥大", "Left Ventricular Hypertrophy", "Left Ventricular Hypertrophy")
    assert [f.id for f in japanese.present] == [f["id"] for f in japanese.to_dict()["present"]]
    with pytest.raises(LanguageError):
        japanese.report_line("fr")


def test_measurements_are_the_readings(readings):
    for reading in readings.values():
        exported = reading.to_dict().get("measurements") or {}
        for key, value in exported.items():
            assert reading.measurements[key] == value, key


def test_to_fhir_is_the_fhir_of_to_dict(model, readings):
    reading = readings["00318_hr"]
    fhir = reading.to_fhir(patient_reference="Patient/p1", now=NOW)
    FhirBundle.model_validate(fhir)
    assert fhir == reading_to_fhir(reading.to_dict(), model=model.info, patient_reference="Patient/p1", now=NOW,
                                   measurements=dict(reading.measurements))
    english = reading.to_fhir(lang="en", now=NOW)
    assert english["entry"][0]["resource"]["conclusion"] == reading.report_line("en")
    exported = {c["code"] for e in fhir["entry"] for c in e["resource"]["code"]["coding"]
                if c["system"] == "https://github.com/ecgtool/measurements"}
    assert exported == {m.key for m in MEASUREMENTS if m.key in reading.measurements}


def test_an_uncalibrated_bundle_reads_scores_only(model):
    uncalibrated = Model(dataclasses.replace(model.bundle, calibration=None), model.device, model.registry)
    reading = uncalibrated.read(EXAMPLES / "00299_hr.hea", top=3)
    assert not reading.calibrated and reading.report_line() is None and reading.present == ()
    assert [f.probability for f in reading.findings] == [None] * 3
    FhirBundle.model_validate(reading.to_fhir(now=NOW))


def test_bad_sources_are_one_line_errors(model, tmp_path):
    signal = np.random.default_rng(0).normal(0, 0.3, (12, 5000)).astype(np.float32)
    cases = [
        (lambda: model.read(tmp_path / "none.hea"), RecordError, r"none\.hea: no such file"),
        (lambda: model.read(EXAMPLES / "00299_hr.hea", sampling_rate=500), SourceError, r"00299_hr\.hea: sampling_rate and leads are for arrays"),
        (lambda: model.read(signal, leads=LEADS), SourceError, r"^array: sampling_rate is required"),
        (lambda: model.read(signal, sampling_rate=0, leads=LEADS), SourceError, r"sampling_rate 0: expected a positive"),
        (lambda: model.read(signal, sampling_rate=500), SourceError, r"^array: leads is required"),
        (lambda: model.read(signal[0], sampling_rate=500, leads=LEADS), SourceError, r"expected a 2-D array \(leads × samples\), got shape \(5000,\)"),
        (lambda: model.read(signal.T, sampling_rate=500, leads=LEADS), SourceError, r"5000 rows and 12 lead names.*pass array\.T"),
        (lambda: model.read(signal, sampling_rate=500, leads=[*LEADS[:11], "V7"]), SourceError, r"unknown lead name\(s\) 'V7'"),
        (lambda: model.read(signal, sampling_rate=500, leads=[*LEADS[:11], "v1"]), SourceError, r"lead\(s\) V1 named more than once"),
        (lambda: model.read(signal[:6], sampling_rate=500, leads=LEADS[:6], record_id="limb"), RecordError, r"^limb: missing leads: V1"),
        (lambda: model.read(signal, sampling_rate=257.3, leads=LEADS), SourceError, r"cannot be resampled"),
        (lambda: model.read({"I": [0.0]}, sampling_rate=500, leads=["I"]), SourceError, r"expected a record file path or a NumPy array"),
        (lambda: model.read(signal, sampling_rate=500, leads=LEADS, top=0), SourceError, r"top 0"),
        (lambda: model.read(signal, sampling_rate=500, leads=LEADS, lang="de"), LanguageError, r"de"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message) as raised:
            call()
        assert "\n" not in str(raised.value)
    assert model.read(signal.tolist(), sampling_rate=500, leads=list(LEADS)).record_id == "array"  # nested lists too


def test_labels_are_the_registry(model):
    found = labels()
    assert [f.id for f in found] == model.bundle.findings
    assert found[0].name("ja") and found[0].name("en")
