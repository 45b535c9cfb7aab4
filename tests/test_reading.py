"""The reading of the shipped model as a user sees it (issues 22 and 25): one reading whatever
the language, no exclusive findings called together, measurements in every reading, and the
findings a measurement defines decided by it where the model has no operating point."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ecgtool.bundle import DEFAULT_BUNDLE, load_bundle
from ecgtool.predict import ReadingOptions, predict_directory, predict_record, prediction_as_dict
from ecgtool.registry import load_registry

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "ptb-xl"
MEASUREMENT_KEYS = {"heart_rate_bpm", "rr_ms", "pr_ms", "qrs_ms", "qt_ms", "qtc_ms", "qtcf_ms", "p_axis_deg",
                    "qrs_axis_deg", "t_axis_deg", "sokolow_lyon_mv", "cornell_mv", "st_j60_mv"}


def _conflicting_pairs(called_ids, registry) -> list[tuple[str, str]]:
    indices = [registry.index(i) for i in called_ids]
    return [(registry.findings[a].id, registry.findings[b].id) for a in indices for b in indices
            if a < b and registry.exclusions.conflicts[a, b]]


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.hea")))
def test_each_example_reads_the_same_in_japanese_and_english_without_contradiction(example):
    bundle, registry = load_bundle(DEFAULT_BUNDLE), load_registry()
    ja = predict_record(EXAMPLES / example, bundle, top=5, lang="ja")
    en = predict_record(EXAMPLES / example, bundle, top=5, lang="en")
    assert [f.id for f in ja.present] == [f.id for f in en.present]
    assert [(f.id, f.probability, f.present, f.excluded_by) for f in ja.findings] == [
        (f.id, f.probability, f.present, f.excluded_by) for f in en.findings]
    assert ja.report == registry.templates["ja"].fill(registry.finding(f.id).ja for f in ja.present) or not ja.present
    assert _conflicting_pairs([f.id for f in ja.present], registry) == []
    # every finding the report line names is a row of the table, in the table's order
    rows = [f.id for f in ja.findings]
    assert [f.id for f in ja.present] == [i for i in rows if i in {f.id for f in ja.present}]


def test_no_exclusive_pair_is_called_together_on_the_challenge_records(shared_data, tmp_path):
    registry = load_registry()
    out = tmp_path / "challenge.jsonl"
    result = predict_directory([shared_data / "challenge"], out, load_bundle(DEFAULT_BUNDLE), ReadingOptions(top=5))
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert result.scored == len(lines) >= 250
    excluded = 0
    for line in lines:
        called = [f["id"] for f in line["present"]]
        assert _conflicting_pairs(called, registry) == [], line["record_id"]
        excluded += sum(f["excluded_by"] is not None for f in line["findings"])
        assert MEASUREMENT_KEYS <= set(line["measurements"])
    print(f"{len(lines)} records, {excluded} findings excluded by a stronger exclusive one")


def test_measurements_are_in_every_reading_and_a_measured_axis_decides_left_axis_deviation():
    bundle = load_bundle(DEFAULT_BUNDLE)
    # 00172: complete RBBB with left anterior fascicular block; the machine-style axis is about -40°.
    prediction = predict_record(EXAMPLES / "00172_hr.hea", bundle, top=5, lang="ja")
    measured = prediction_as_dict(prediction)["measurements"]
    assert MEASUREMENT_KEYS <= set(measured) and -60 < measured["qrs_axis_deg"] < -30
    assert measured["qrs_ms"] >= 120  # a complete bundle branch block is wide
    lad = next(f for f in prediction.findings if f.id == "left_axis_deviation")
    assert lad.present is True and lad.decided_by == "measurement" and lad.probability is None
    assert "左軸偏位" in prediction.report and "正常心電図" not in prediction.report
    # 00318: atrial fibrillation has no P wave: no PR interval, with the reason
    af = prediction_as_dict(predict_record(EXAMPLES / "00318_hr.hea", bundle, top=5))["measurements"]
    assert af["pr_ms"] is None and af["reasons"]["pr_ms"]


def test_the_directory_csv_has_one_column_per_measurement(shared_data, tmp_path):
    out = tmp_path / "examples.csv"
    predict_directory([EXAMPLES], out, load_bundle(DEFAULT_BUNDLE), ReadingOptions(top=3))
    import csv
    rows = list(csv.DictReader(open(out, encoding="utf-8")))
    assert len(rows) == 4
    for row in rows:
        assert {"heart_rate_bpm", "pr_ms", "qrs_ms", "qt_ms", "qtc_ms", "qtcf_ms", "qrs_axis_deg",
                "st_j60_mv:V2"} <= set(row)
        assert 30 < float(row["heart_rate_bpm"]) < 200 and np.isfinite(float(row["qrs_ms"]))


def test_predict_writes_a_fhir_bundle_and_reads_several_records_named_on_the_command_line(tmp_path):
    from typer.testing import CliRunner

    from ecgtool.cli import app

    runner = CliRunner()
    out = tmp_path / "reading.json"
    result = runner.invoke(app, ["predict", str(EXAMPLES / "00318_hr.hea"), "--fhir", str(out)])
    assert result.exit_code == 0, result.output
    bundle = json.loads(out.read_text(encoding="utf-8"))
    assert bundle["resourceType"] == "Bundle"
    report = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "DiagnosticReport")
    assert report["conclusion"].startswith("この心電図は")
    both = runner.invoke(app, ["predict", str(EXAMPLES / "00318_hr.hea"), str(EXAMPLES / "00172_hr.hea"), "--lang", "en"])
    assert both.exit_code == 0, both.output
    assert "00318_hr:" in both.output and "00172_hr:" in both.output and both.output.count("This ECG shows") == 2
    wrong = runner.invoke(app, ["predict", str(EXAMPLES), "--out", str(tmp_path / "r.csv"), "--fhir", str(tmp_path / "r.ndjson")])
    assert wrong.exit_code == 1 and "--out FILE.jsonl" in wrong.output
