"""FHIR R4 export of real readings (ecgtool.fhir), validated by a maintained FHIR library.

The readings are the default model's on the shipped PTB-XL examples, made by the same functions
``ecgtool predict --json`` calls (and once through the CLI itself), and through the writers that
``ecgtool predict --fhir`` calls, for a record and for a directory's JSONL. ``fhir.resources`` checks
every resource: its R4B models, the R4 structure of the resources used here (DiagnosticReport,
Observation, Bundle are unchanged from R4 in R4B).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from fhir.resources.R4B.bundle import Bundle as FhirBundle
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.observation import Observation

from ecgtool.bundle import DEFAULT_BUNDLE, load_bundle
from ecgtool.embeddings import bundle_fingerprint
from ecgtool import __version__
from ecgtool.fhir import (
    FINDINGS_SYSTEM,
    LOINC,
    MEASUREMENTS,
    NARROWER_SNOMED_CODES,
    SNOMED,
    UCUM,
    FhirError,
    ModelInfo,
    measurements_of,
    reading_to_fhir,
    snomed_codes,
    write_directory_fhir,
    write_fhir_json,
    write_fhir_ndjson,
    write_record_fhir,
)
from ecgtool.predict import ReadingOptions, predict_directory, predict_record, prediction_as_dict, report_line
from ecgtool.registry import load_registry

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "ptb-xl"
RECORDS = ("00172_hr", "00180_hr", "00299_hr", "00318_hr")
NOW = datetime(2026, 12, 4, 9, 30, tzinfo=timezone.utc)
MEASURED = {  # Measurements.to_dict() of the measurement engine (issue 22); the numbers are a plausible ECG's
    "heart_rate_bpm": 72, "rr_ms": 833, "pr_ms": 160, "qrs_ms": 92, "qt_ms": 380, "qtc_ms": 416.4, "qtcf_ms": 404.2,
    "p_axis_deg": 45, "qrs_axis_deg": -35, "t_axis_deg": 40, "sokolow_lyon_mv": 3.9, "cornell_mv": 2.1,
    "st_j60_mv": {"V1": 0.05, "V2": None}, "reasons": {"st_j60_mv": "lead V2 unusable (flat or noisy)"},
}
EXPECTED_LOINC = {"heart_rate_bpm": ("8867-4", "/min"), "pr_ms": ("8625-6", "ms"), "qrs_ms": ("8633-0", "ms"),
                  "qt_ms": ("8634-8", "ms"), "qtc_ms": ("8636-3", "ms"), "p_axis_deg": ("8626-4", "deg"),
                  "qrs_axis_deg": ("8632-2", "deg"), "t_axis_deg": ("8638-1", "deg")}


@pytest.fixture(scope="module")
def model():
    return load_bundle(DEFAULT_BUNDLE)


@pytest.fixture(scope="module")
def model_info(model):
    return ModelInfo.from_bundle_description(DEFAULT_BUNDLE.name, model.description)


@pytest.fixture(scope="module")
def registry():
    return load_registry()


@pytest.fixture(scope="module")
def readings(model):
    """(record, lang, top) → the ``--json`` dict of that reading, made once."""
    made = {}

    def reading(record: str, lang: str = "ja", top: int = 5) -> dict:
        if (record, lang, top) not in made:
            prediction = predict_record(EXAMPLES / f"{record}.hea", model, top=top, lang=lang)
            made[record, lang, top] = prediction_as_dict(prediction, model)
        return made[record, lang, top]

    return reading


def validated(bundle: dict) -> FhirBundle:
    """The Bundle as the FHIR library reads it: raises on any structural error."""
    parsed = FhirBundle.model_validate(bundle)
    assert parsed.type == "collection"
    return parsed


def resources(bundle: dict, kind: str) -> list[dict]:
    return [entry["resource"] for entry in bundle["entry"] if entry["resource"]["resourceType"] == kind]


def report_of(bundle: dict) -> dict:
    (report,) = resources(bundle, "DiagnosticReport")
    return report


def finding_observations(bundle: dict) -> dict[str, dict]:
    """Registry id → the Observation of that finding."""
    found = {}
    for observation in resources(bundle, "Observation"):
        ids = [c["code"] for c in observation["code"]["coding"] if c["system"] == FINDINGS_SYSTEM]
        if ids:
            found[ids[0]] = observation
    return found


def codes(observation: dict, system: str) -> list[str]:
    return [c["code"] for c in observation["code"]["coding"] if c["system"] == system]


def probability_components(observation: dict) -> list[dict]:
    return [c for c in observation.get("component", []) if c["code"]["coding"][0]["code"] == "probability-of-presence"]


def measured(finding: dict) -> bool:
    """Called by its measurement criterion (the model has no operating point for it): no probability."""
    return finding.get("decided_by") == "measurement"


def without_times(bundle: dict) -> dict:
    """The Bundle without the assembly time, the one thing two exports of a reading may differ in."""
    copy = json.loads(json.dumps(bundle))
    copy.pop("timestamp")
    report_of(copy).pop("issued")
    return copy


@pytest.mark.parametrize("lang", ["ja", "en"])
@pytest.mark.parametrize("record", RECORDS)
def test_examples_export_to_valid_fhir_with_the_called_findings(record, lang, readings, model_info, registry):
    reading = readings(record, lang)
    bundle = reading_to_fhir(reading, model=model_info, registry=registry, now=NOW)
    parsed = validated(bundle)

    assert isinstance(parsed.entry[0].resource, DiagnosticReport)
    assert all(isinstance(entry.resource, Observation) for entry in parsed.entry[1:])
    report = report_of(bundle)
    assert report["status"] == "preliminary" and report["language"] == lang
    assert report["code"]["coding"] == [{"system": LOINC, "code": "11524-6", "display": "EKG study"}]
    assert report["category"][0]["coding"][0]["code"] == "EC"
    present = [f["id"] for f in reading["present"]]
    assert report["conclusion"] == reading["report"] == report_line(present, lang, registry)
    # every called finding, and only those; each referenced from the report
    observations = finding_observations(bundle)
    assert list(observations) == present
    urls = {entry["fullUrl"] for entry in bundle["entry"]}
    assert {r["reference"] for r in report.get("result", [])} == urls - {bundle["entry"][0]["fullUrl"]}
    assert len(report.get("conclusionCode", [])) == len(present)
    by_id = {f["id"]: f for f in reading["present"]}
    for finding_id, observation in observations.items():
        assert observation["valueBoolean"] is True
        assert observation["code"]["text"] == registry.finding(finding_id).name(lang)
        for code in codes(observation, SNOMED):
            assert finding_id in registry.codes_to_findings("snomed", code) and code not in NARROWER_SNOMED_CODES
        if measured(by_id[finding_id]):  # decided by its criterion: the measurement program made it, no probability
            assert probability_components(observation) == [] and observation["device"]["display"] == f"ecgtool {__version__}"
            continue
        (component,) = probability_components(observation)
        assert component["valueQuantity"] == {"value": round(100 * by_id[finding_id]["probability"], 4), "unit": "%",
                                              "system": UCUM, "code": "%"}
        assert model_info.fingerprint in observation["device"]["display"]
    # the reading's own measurements, LOINC-coded where LOINC has them
    exported = {codes(o, "https://github.com/ecgtool/measurements")[0]: o for o in resources(bundle, "Observation")
                if codes(o, "https://github.com/ecgtool/measurements")}
    assert list(exported) == [m.key for m in MEASUREMENTS if m.key in (reading.get("measurements") or {})]
    for key, (loinc, unit) in EXPECTED_LOINC.items():
        if key in exported:
            assert codes(exported[key], LOINC)[0] == loinc
            assert exported[key].get("valueQuantity", {"code": unit})["code"] == unit


def test_lvh_record_carries_its_snomed_code(readings, model_info, registry):
    """00299_hr is PTB-XL's left ventricular hypertrophy; the default model calls it (docs/predict.md)."""
    bundle = reading_to_fhir(readings("00299_hr"), model=model_info, registry=registry, now=NOW)
    observation = finding_observations(bundle)["left_ventricular_hypertrophy"]
    assert codes(observation, SNOMED) == ["164873001"]
    assert report_of(bundle)["conclusion"].startswith("この心電図は左室肥大")
    english = reading_to_fhir(readings("00299_hr", "en"), model=model_info, registry=registry, now=NOW)
    assert report_of(english)["conclusion"].startswith("This ECG shows Left Ventricular Hypertrophy")
    # the calls are the reading's whatever the language: the same findings, the same ids of codes
    assert [c["coding"][-1]["code"] for c in report_of(english)["conclusionCode"]] == \
        [c["coding"][-1]["code"] for c in report_of(bundle)["conclusionCode"]]


def test_all_calibrated_exports_every_calibrated_finding_with_its_call(readings, model_info, registry):
    reading = readings("00299_hr", "ja", 98)
    bundle = reading_to_fhir(reading, model=model_info, registry=registry, all_calibrated=True, now=NOW)
    validated(bundle)
    observations = finding_observations(bundle)
    calibrated = {f["id"]: f for f in reading["findings"] if f["probability"] is not None or measured(f)}
    assert set(observations) == set(calibrated) and len(calibrated) < len(registry)
    calls = {True: 0, False: 0, None: 0}
    for finding_id, observation in observations.items():
        call = calibrated[finding_id]["present"]
        calls[call] += 1
        if call is None:  # no operating point: a probability but no call
            assert "valueBoolean" not in observation and "interpretation" not in observation
            assert observation["dataAbsentReason"]["coding"][0]["code"] == "not-performed"
        else:
            assert observation["valueBoolean"] is call and "dataAbsentReason" not in observation
            assert observation["interpretation"][0]["coding"][0]["code"] == ("POS" if call else "NEG")
        assert len(probability_components(observation)) == (0 if measured(calibrated[finding_id]) else 1)
    assert all(calls.values()), calls  # the record exercises present, absent and not called


def test_a_finding_kept_off_by_an_exclusive_one_says_so(readings, model_info, registry):
    # No example record has an exclusion; the reading states one as predict writes it.
    reading = json.loads(json.dumps(readings("00299_hr", "en", 98)))
    loser = next(f for f in reading["findings"] if f["probability"] is not None and f["present"] is False)
    loser["excluded_by"] = "left_ventricular_hypertrophy"
    observation = finding_observations(reading_to_fhir(reading, model=model_info, registry=registry,
                                                       all_calibrated=True, now=NOW))[loser["id"]]
    validated(reading_to_fhir(reading, model=model_info, registry=registry, all_calibrated=True, now=NOW))
    assert observation["valueBoolean"] is False
    name = registry.finding(loser["id"]).en
    assert observation["note"] == [{"text": f"excluded: {name} (exclusive with Left Ventricular Hypertrophy, which is more probable)"}]


def test_no_probability_where_the_reading_has_none(model, readings, model_info, registry):
    # A finding called present without a probability cannot come out of a real bundle; a reading
    # that says so must still not get one invented.
    reading = json.loads(json.dumps(readings("00299_hr")))
    reading["present"][0]["probability"] = None
    observation = finding_observations(reading_to_fhir(reading, model=model_info, registry=registry, now=NOW))
    assert "component" not in observation["left_ventricular_hypertrophy"]
    # An uncalibrated bundle: scores only, so no finding, no probability, no conclusion.
    uncalibrated = dataclasses.replace(model, calibration=None)
    reading = prediction_as_dict(predict_record(EXAMPLES / "00299_hr.hea", uncalibrated, top=98), uncalibrated)
    assert reading["calibrated"] is False
    for all_calibrated in (False, True):
        bundle = reading_to_fhir(reading, model=ModelInfo.from_bundle(uncalibrated), registry=registry,
                                 all_calibrated=all_calibrated, now=NOW)
        validated(bundle)
        assert finding_observations(bundle) == {}  # the measurements, if any, stay
        assert "conclusion" not in report_of(bundle) and "probability" not in json.dumps(bundle)
    assert ModelInfo.from_bundle(uncalibrated).calibration_sha256 is None


def test_measurements_are_loinc_coded_in_ucum_and_nulls_carry_their_reason(readings, model_info, registry):
    measured = {**MEASURED, "pr_ms": None, "reasons": {**MEASURED["reasons"], "pr_ms": "no P wave (atrial fibrillation)"}}
    del measured["cornell_mv"]  # absent: not exported
    bundle = reading_to_fhir(readings("00172_hr"), model=model_info, registry=registry, measurements=measured, now=NOW)
    validated(bundle)
    by_key = {}
    for observation in resources(bundle, "Observation"):
        keys = codes(observation, "https://github.com/ecgtool/measurements")
        if keys:
            by_key[keys[0]] = observation
    assert list(by_key) == [m.key for m in MEASUREMENTS if m.key in measured]
    for key, (loinc, unit) in EXPECTED_LOINC.items():
        observation = by_key[key]
        assert codes(observation, LOINC)[0] == loinc
        if key == "pr_ms":
            assert "valueQuantity" not in observation
            assert observation["dataAbsentReason"]["text"] == "no P wave (atrial fibrillation)"
        else:
            assert observation["valueQuantity"] == {"value": measured[key], "unit": unit, "system": UCUM, "code": unit}
    assert codes(by_key["qtcf_ms"], LOINC) == ["76634-5"]
    assert codes(by_key["rr_ms"], LOINC) == []  # no LOINC code taken on trust: ecgtool's own coding only
    v1, v2 = by_key["st_j60_mv"]["component"]
    assert v1["valueQuantity"]["value"] == 0.05 and v1["valueQuantity"]["code"] == "mV"
    assert "valueQuantity" not in v2 and v2["dataAbsentReason"]["text"] == "lead V2 unusable (flat or noisy)"
    with pytest.raises(FhirError, match="qt_ms"):
        reading_to_fhir(readings("00172_hr"), model=model_info, registry=registry, measurements={"qt_ms": float("nan")})


def test_measurements_inside_the_reading_are_exported(readings, model_info, registry):
    reading = {**readings("00180_hr"), "measurements": {"heart_rate_bpm": 61}}
    (observation,) = [o for o in resources(reading_to_fhir(reading, model=model_info, registry=registry, now=NOW), "Observation")
                      if codes(o, LOINC) == ["8867-4"]]
    assert observation["valueQuantity"]["value"] == 61


def test_same_reading_gives_the_same_bundle(readings, model_info, registry):
    reading = readings("00318_hr")
    options = dict(model=model_info, registry=registry, measurements=MEASURED, all_calibrated=True,
                   patient_reference="Patient/p1", acquired="2019-03-04T10:22:31+09:00")
    first = reading_to_fhir(reading, now=NOW, **options)
    assert json.dumps(first, ensure_ascii=False) == json.dumps(reading_to_fhir(json.loads(json.dumps(reading)), now=NOW, **options),
                                                               ensure_ascii=False)
    later = reading_to_fhir(reading, now=NOW + timedelta(days=1), **options)
    assert [e["fullUrl"] for e in later["entry"]] == [e["fullUrl"] for e in first["entry"]]
    assert later["timestamp"] != first["timestamp"]
    for entry in first["entry"]:
        assert entry["fullUrl"] == f"urn:uuid:{entry['resource']['id']}"
        assert entry["resource"].get("subject") == {"reference": "Patient/p1"}
        assert entry["resource"]["effectiveDateTime"] == "2019-03-04T10:22:31+09:00"
    other_patient = reading_to_fhir(reading, now=NOW, **{**options, "patient_reference": "Patient/p2"})
    english = reading_to_fhir(readings("00318_hr", "en"), now=NOW, **options)
    ids = {e["fullUrl"] for e in first["entry"]}
    assert ids.isdisjoint(e["fullUrl"] for e in other_patient["entry"])
    assert ids.isdisjoint(e["fullUrl"] for e in english["entry"])


def test_times(readings, model_info, registry):
    reading = readings("00180_hr")
    local = reading_to_fhir(reading, model=model_info, registry=registry, acquired="2019-03-04T10:22:31", now=NOW)
    validated(local)
    assert report_of(local)["effectiveDateTime"] == "2019-03-04"  # no UTC offset in the file: no time guessed
    assert "effectiveDateTime" not in report_of(reading_to_fhir(reading, model=model_info, registry=registry, now=NOW))
    assert report_of(local)["issued"] == local["timestamp"] == "2026-12-04T09:30:00+00:00"
    with pytest.raises(FhirError, match="timezone"):
        reading_to_fhir(reading, model=model_info, registry=registry, now=datetime(2026, 12, 4))
    with pytest.raises(FhirError, match="acquired"):
        reading_to_fhir(reading, model=model_info, registry=registry, acquired="04/03/2019")


def test_readings_fhir_cannot_express_are_refused(model, readings, model_info, registry):
    with pytest.raises(FhirError, match="not in 'ja'"):
        reading_to_fhir(readings("00299_hr", "en"), model=model_info, registry=registry, lang="ja")
    assert report_of(reading_to_fhir(readings("00299_hr", "en"), model=model_info, registry=registry))["language"] == "en"
    with pytest.raises(FhirError, match="schema version 1"):
        reading_to_fhir({**readings("00299_hr"), "schema_version": 1}, model=model_info, registry=registry)
    superset = prediction_as_dict(predict_record(EXAMPLES / "00299_hr.hea", model, superset="rhythm"), model)
    with pytest.raises(FhirError, match="superset"):
        reading_to_fhir(superset, model=model_info, registry=registry)


def test_snomed_codes_are_the_registrys_own(registry):
    mapped = registry.vocabularies["snomed"].mapped
    assert NARROWER_SNOMED_CODES <= set(mapped)  # the list cannot outlive the registry's codes
    reverse = snomed_codes(registry)
    for finding_id, found in reverse.items():
        assert found and all(finding_id in mapped[code] for code in found)
    assert reverse["atrial_fibrillation"] == ("164889003",)
    assert reverse["supraventricular_tachycardia"] == ("426761007",)
    assert "ventricular_rhythm" not in reverse  # every code the registry has for it is a narrower one
    assert reverse["ventricular_couplet"] == reverse["ventricular_premature_contractions_couplets"] == ("251182009",)


def test_model_info_names_the_bundle_as_its_embeddings_do(model, model_info):
    assert model_info.fingerprint == bundle_fingerprint(model)
    assert model_info.calibration_sha256 == model.description["calibration"]["sha256"]


def test_writers_write_whole_files(tmp_path, readings, model_info, registry):
    bundles = [reading_to_fhir(readings(record), model=model_info, registry=registry, now=NOW) for record in RECORDS]
    write_fhir_json(tmp_path / "one.json", bundles[0])
    assert json.loads((tmp_path / "one.json").read_text(encoding="utf-8")) == bundles[0]
    assert write_fhir_ndjson(tmp_path / "all.ndjson", iter(bundles)) == len(RECORDS)
    lines = (tmp_path / "all.ndjson").read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(RECORDS)
    for line, bundle in zip(lines, bundles):
        assert json.loads(line) == bundle
        validated(json.loads(line))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["all.ndjson", "one.json"]  # no temporary left


def test_cli_json_exports_as_the_library_reading(readings, model_info, registry):
    done = subprocess.run([sys.executable, "-m", "ecgtool.cli", "predict", str(EXAMPLES / "00299_hr.hea"), "--json"],
                          capture_output=True, text=True, cwd=REPO, env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    from_cli = json.loads(done.stdout)
    library = readings("00299_hr")
    assert {**from_cli, "path": library["path"]} == library
    assert reading_to_fhir(from_cli, model=model_info, registry=registry, now=NOW) == \
        reading_to_fhir(library, model=model_info, registry=registry, now=NOW)


def test_model_info_of_a_loaded_bundle(model, model_info):
    assert ModelInfo.from_bundle(model) == model_info
    assert ModelInfo.from_bundle(model).name == "default"


def test_cli_record_writer(tmp_path, model, registry):
    """``write_record_fhir``: what ``ecgtool predict FILE --fhir OUT.json`` calls."""
    prediction = predict_record(EXAMPLES / "00318_hr.hea", model, top=98, lang="en")
    written = write_record_fhir(tmp_path / "00318_hr.json", prediction, model, lang="en", all_calibrated=True)
    assert json.loads((tmp_path / "00318_hr.json").read_text(encoding="utf-8")) == written
    validated(written)
    expected = reading_to_fhir(prediction_as_dict(prediction, model), model=ModelInfo.from_bundle(model), registry=registry,
                               measurements=measurements_of(prediction), all_calibrated=True, now=NOW)
    assert without_times(written) == without_times(expected)
    with pytest.raises(FhirError, match=r"out\.ndjson: expected a \.json file \(one record's FHIR Bundle\)"):
        write_record_fhir(tmp_path / "out.ndjson", prediction, model, lang="en")
    with pytest.raises(FhirError, match="not in 'ja'"):
        write_record_fhir(tmp_path / "ja.json", prediction, model, lang="ja")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00318_hr.json"]


def test_cli_directory_writer(tmp_path, model, readings, registry):
    """``write_directory_fhir``: what ``ecgtool predict DIR --out X.jsonl --fhir OUT.ndjson`` calls:
    one Bundle per line of the JSONL, each with the ids of the record's own export."""
    jsonl = tmp_path / "readings.jsonl"
    predict_directory([EXAMPLES], jsonl, model, ReadingOptions(top=5, lang="ja"), registry=registry)
    assert write_directory_fhir(tmp_path / "readings.ndjson", jsonl, model, lang="ja") == len(RECORDS)
    lines = (tmp_path / "readings.ndjson").read_text(encoding="utf-8").splitlines()
    by_record = {}
    for line in lines:
        bundle = json.loads(line)
        validated(bundle)
        by_record[report_of(bundle)["identifier"][0]["value"]] = bundle
    assert sorted(by_record) == list(RECORDS)
    info = ModelInfo.from_bundle(model)
    for record, bundle in by_record.items():
        single = reading_to_fhir(readings(record), model=info, registry=registry, now=NOW)
        assert [e["fullUrl"] for e in bundle["entry"]] == [e["fullUrl"] for e in single["entry"]]
        assert report_of(bundle)["conclusion"] == report_of(single)["conclusion"]
    with pytest.raises(FhirError, match="not in 'en'"):
        write_directory_fhir(tmp_path / "en.ndjson", jsonl, model, lang="en")
    with pytest.raises(FhirError, match=r"\.jsonl"):
        write_directory_fhir(tmp_path / "x.ndjson", tmp_path / "readings.ndjson", model, lang="ja")
    with pytest.raises(FhirError, match=r"x\.json: expected a \.ndjson file"):
        write_directory_fhir(tmp_path / "x.json", jsonl, model, lang="ja")
    assert not (tmp_path / "en.ndjson").exists() and not (tmp_path / "en.ndjson.tmp").exists()


def test_cli_directory_writer_names_the_line_it_cannot_export(tmp_path, model, registry):
    superset = tmp_path / "rhythm.jsonl"
    predict_directory([EXAMPLES], superset, model, ReadingOptions(top=3, lang="en", superset="rhythm"), registry=registry)
    with pytest.raises(FhirError, match=r"rhythm\.jsonl: line 1: .*superset"):
        write_directory_fhir(tmp_path / "rhythm.ndjson", superset, model, lang="en")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"schema_version": 3}\n{not json\n', encoding="utf-8")
    with pytest.raises(FhirError, match=r"broken\.jsonl: line 1: not a reading of ecgtool predict \(no 'present' field\)$"):
        write_directory_fhir(tmp_path / "broken.ndjson", broken, model, lang="en")
    broken.write_text('[1, 2]\n', encoding="utf-8")
    with pytest.raises(FhirError, match=r"broken\.jsonl: line 1: not a reading of ecgtool predict \(not an object"):
        write_directory_fhir(tmp_path / "broken.ndjson", broken, model, lang="en")
    broken.write_text('{"record_id": "x", "schema_version": 3, "present": [], "findings": []}\n{not json\n', encoding="utf-8")
    with pytest.raises(FhirError, match=r"broken\.jsonl: line 2: not JSON"):
        write_directory_fhir(tmp_path / "broken.ndjson", broken, model, lang="en")
    with pytest.raises(FhirError, match=r"missing\.jsonl: cannot read"):
        write_directory_fhir(tmp_path / "missing.ndjson", tmp_path / "missing.jsonl", model, lang="en")
    assert sorted(p.name for p in tmp_path.iterdir() if "ndjson" in p.name) == []


def test_the_docs_example_is_a_live_export(model_info, registry):
    """docs/fhir.md's example is 00318_hr's export as the page says it is made (refresh the
    example from that call when the default model or the measurements change)."""
    import re

    from ecgtool.api import load_model

    text = (REPO / "docs" / "fhir.md").read_text(encoding="utf-8")
    example = text[text.index("## Example"):]
    bundle = load_model(device="cpu").read(EXAMPLES / "00318_hr.hea").to_fhir(patient_reference="Patient/example", now=NOW)
    validated(bundle)
    ids = {bundle["id"]} | {entry["resource"]["id"] for entry in bundle["entry"]}
    shown = set(re.findall(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", example))
    assert shown and shown <= ids, sorted(shown - ids)
    report = report_of(bundle)
    by_key = {codes(o, "https://github.com/ecgtool/measurements")[0]: o for o in resources(bundle, "Observation")
              if codes(o, "https://github.com/ecgtool/measurements")}
    (af,) = probability_components(finding_observations(bundle)["atrial_fibrillation"])
    for expected in (f'"conclusion": "{report["conclusion"]}"', f'"id": "{bundle["id"]}"',
                     f'"value": {by_key["heart_rate_bpm"]["valueQuantity"]["value"]}',
                     f'"text": "{by_key["pr_ms"]["dataAbsentReason"]["text"]}"',
                     f'"value": {af["valueQuantity"]["value"]}', f"fingerprint {model_info.fingerprint}"):
        assert expected in example, expected
