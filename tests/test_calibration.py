"""Calibrated probabilities of presence, operating points and the report line: the fits on
scores drawn from known models, the bundle round trip, and the shipped model on real records."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ecgtool.bench.run import regressions
from ecgtool.bundle import DEFAULT_BUNDLE, load_bundle
from ecgtool.calibrate import calibrate_bundle
from ecgtool.calibration import (
    FindingCalibration,
    expected_calibration_error,
    fit_finding,
    isotonic_fit,
    operating_point,
    platt_fit,
)
from ecgtool.calibration_file import CalibrationError
from ecgtool.cli import app
from ecgtool.predict import ReadingOptions, predict_directory, predict_record, report_line
from ecgtool.registry import NOTHING_PRESENT, load_registry

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "ptb-xl"
runner = CliRunner()


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


# --- the fits on scores drawn from known models --------------------------------------------------

def test_platt_recovers_a_known_logistic_model():
    rng = np.random.default_rng(1)
    scores = rng.uniform(-0.1, 0.7, 40_000)
    present = rng.random(scores.size) < _sigmoid(14.0 * scores - 6.0)
    a, b = platt_fit(scores, present)
    assert a == pytest.approx(14.0, rel=0.06) and b == pytest.approx(-6.0, rel=0.06)
    grid = np.linspace(-0.1, 0.7, 50)
    calibration = fit_finding("x", scores, present, isotonic_min=10**9)
    assert calibration.method == "platt"
    assert np.abs(calibration.probability(grid) - _sigmoid(14.0 * grid - 6.0)).max() < 0.02


def test_isotonic_recovers_a_monotone_curve_that_is_not_logistic():
    rng = np.random.default_rng(2)
    scores = rng.uniform(0.0, 1.0, 40_000)
    truth = np.where(scores < 0.5, 0.05, 0.05 + 1.6 * (scores - 0.5) ** 1.0)  # flat, then a ramp to 0.85
    present = rng.random(scores.size) < truth
    calibration = fit_finding("x", scores, present)
    assert calibration.method == "isotonic"
    grid = np.linspace(0.02, 0.98, 49)
    expected = np.where(grid < 0.5, 0.05, 0.05 + 1.6 * (grid - 0.5))
    assert np.abs(calibration.probability(grid) - expected).mean() < 0.02
    # Held-out draws from the same model: well calibrated where a logistic curve would not be.
    held_out = rng.uniform(0.0, 1.0, 40_000)
    outcome = rng.random(held_out.size) < np.where(held_out < 0.5, 0.05, 0.05 + 1.6 * (held_out - 0.5))
    assert expected_calibration_error(calibration.probability(held_out), outcome) < 0.01


def test_isotonic_fit_is_non_decreasing_and_pools_violators():
    scores, values = isotonic_fit(np.array([1.0, 2.0, 3.0, 4.0]), np.array([0.0, 1.0, 0.0, 1.0]))
    assert list(values) == [0.0, 0.5, 1.0] and list(scores) == [1.0, 2.5, 4.0]


def test_a_finding_with_too_few_val_positives_gets_no_probability():
    rng = np.random.default_rng(3)
    scores = rng.normal(size=500)
    present = np.zeros(500, dtype=bool)
    present[:4] = True
    calibration = fit_finding("rare", scores, present)
    assert not calibration.calibrated and calibration.operating_point is None
    assert "4 val positives" in calibration.reason
    assert np.isnan(calibration.probability(scores)).all() and calibration.present(scores) is None
    # The JSON form keeps the counts and the reason, and reads back the same.
    assert FindingCalibration.from_dict(calibration.as_dict()) == calibration


def test_the_max_f1_operating_point_is_the_best_threshold_by_brute_force():
    rng = np.random.default_rng(4)
    scores = rng.normal(size=800).round(2)  # ties in score, as cosine similarities rounded have
    present = rng.random(800) < _sigmoid(3 * scores - 2)
    point = operating_point(scores, present)

    def f1(threshold):
        called = scores >= threshold
        tp = (called & present).sum()
        return 2 * tp / (called.sum() + present.sum())

    best = max(np.unique(scores), key=lambda t: (f1(t), t))
    assert point.threshold == best
    assert point.true_positives + point.false_negatives == present.sum()
    assert point.sensitivity == pytest.approx(((scores >= best) & present).sum() / present.sum())
    sensitive = operating_point(scores, present, target_sensitivity=0.9)
    assert sensitive.sensitivity >= 0.9 and sensitive.threshold <= point.threshold


# --- the bundle round trip -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def calibrated_copy(tmp_path_factory, public_store) -> Path:
    """The shipped model, calibrated again on the public store's val split."""
    copy = tmp_path_factory.mktemp("calibrated") / "bundle"
    shutil.copytree(DEFAULT_BUNDLE, copy)
    calibrate_bundle(copy, public_store, "val", force=True)  # fewer findings than the shipped one: forced
    return copy


def test_a_calibration_that_would_calibrate_fewer_findings_is_refused_unless_forced(public_store, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(DEFAULT_BUNDLE, copy)
    before = {p.name: p.read_bytes() for p in copy.iterdir()}
    shipped = json.loads((copy / "bundle.json").read_text(encoding="utf-8"))["calibration"]["calibrated_findings"]
    with pytest.raises(CalibrationError, match=rf"calibrates \d+ findings, the bundle's current one {shipped} .*--force") as caught:
        calibrate_bundle(copy, public_store, "val")
    assert "no longer calibrated: " in str(caught.value)
    assert {p.name: p.read_bytes() for p in copy.iterdir()} == before  # nothing replaced, nothing deleted


def test_calibration_round_trips_through_the_bundle(calibrated_copy, public_store):
    description = json.loads((calibrated_copy / "bundle.json").read_text(encoding="utf-8"))
    entry = description["calibration"]
    assert entry["fitted_on"]["split"] == "val" and entry["fitted_on"]["records"] > 0
    assert len(list(calibrated_copy.glob("calibration-*.json"))) == 1  # the shipped one was replaced
    bundle = load_bundle(calibrated_copy)
    stored = json.loads((calibrated_copy / entry["file"]).read_text(encoding="utf-8"))
    # One calibration of the reading score, whatever the output language.
    calibrations = bundle.calibration.findings
    assert [c.finding for c in calibrations] == bundle.findings and entry["languages"] == ["ja", "en"]
    for calibration, row in zip(calibrations, stored["findings"]):
        assert calibration.positives == row["positives"] and calibration.method == row["method"]
    # The public val split is small: most findings stay uncalibrated, with their counts said.
    uncalibrated = [c for c in calibrations if not c.calibrated]
    assert uncalibrated and all("val positives" in c.reason for c in uncalibrated)
    assert sum(c.calibrated for c in calibrations) == entry["calibrated_findings"] > 0


def test_calibration_is_never_fitted_on_the_test_split(calibrated_copy, public_store):
    with pytest.raises(CalibrationError, match="never fitted on the test split"):
        calibrate_bundle(calibrated_copy, public_store, "test")


def test_a_damaged_or_foreign_calibration_is_refused(calibrated_copy, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(calibrated_copy, damaged)
    path = next(damaged.glob("calibration-*.json"))
    path.write_bytes(path.read_bytes() + b" ")
    with pytest.raises(CalibrationError, match="does not match the checksum"):
        load_bundle(damaged)
    foreign = tmp_path / "foreign"
    shutil.copytree(calibrated_copy, foreign)
    description = json.loads((foreign / "bundle.json").read_text(encoding="utf-8"))
    description["calibration"]["weights"]["model.safetensors"] = "0" * 64
    (foreign / "bundle.json").write_text(json.dumps(description), encoding="utf-8")
    with pytest.raises(CalibrationError, match="fitted for other weights"):
        load_bundle(foreign)


def test_an_old_bundle_without_calibration_still_predicts_with_a_note(tmp_path):
    old = tmp_path / "old"
    shutil.copytree(DEFAULT_BUNDLE, old)
    description = json.loads((old / "bundle.json").read_text(encoding="utf-8"))
    del description["calibration"]
    (old / "bundle.json").write_text(json.dumps(description), encoding="utf-8")
    result = runner.invoke(app, ["predict", str(EXAMPLES / "00318_hr.hea"), "--model", str(old)])
    assert result.exit_code == 0, result.output
    assert "carries no calibration" in result.output and "P(present)" not in result.output
    prediction = predict_record(EXAMPLES / "00318_hr.hea", load_bundle(old))
    assert prediction.report is None and all(f.probability is None and f.present is None for f in prediction.findings)


# --- the shipped model on real records -------------------------------------------------------------

# Test-fold PTB-XL records (never trained or calibrated on) whose two findings the shipped model
# calls, both languages: complete RBBB with left anterior fascicular block, and AF with complete LBBB.
TWO_FINDINGS = {
    "ptb-xl/records100/12000/12552_lr.hea": {"complete_right_bundle_branch_block", "left_anterior_fascicular_block"},
    "ptb-xl/records100/00000/00598_lr.hea": {"atrial_fibrillation", "complete_left_bundle_branch_block"},
}


@pytest.mark.device
@pytest.mark.parametrize("record", sorted(TWO_FINDINGS))
def test_a_record_with_two_findings_gets_both_called_present(record, shared_data, device):
    import torch

    bundle = load_bundle(DEFAULT_BUNDLE).to(torch.device(device))
    registry = load_registry()
    for lang in ("ja", "en"):
        prediction = predict_record(shared_data / record, bundle, top=98, lang=lang, device=torch.device(device))
        called = {f.id: f for f in prediction.present}
        assert TWO_FINDINGS[record] <= set(called), (lang, sorted(called))
        thresholds = {c.finding: c.operating_point for c in bundle.calibration.findings}
        for finding_id in TWO_FINDINGS[record]:
            assert called[finding_id].score >= thresholds[finding_id].threshold
            assert called[finding_id].probability is not None and called[finding_id].present is True
        # The report line is the registry's template over exactly the findings called present, in the table's order.
        assert prediction.report == report_line(list(called), lang, registry)
        assert list(called) == [f.id for f in prediction.findings if f.present]


def test_report_line_follows_the_registry_template_in_the_tables_order_and_says_when_nothing_is_present():
    registry = load_registry()
    ids = ["left_anterior_fascicular_block", "complete_right_bundle_branch_block"]  # the table's order, not the registry's
    names = [registry.finding(i) for i in ids]
    assert report_line(ids, "ja", registry) == f"この心電図は{names[0].ja}、{names[1].ja}を示す。"
    assert report_line(ids, "en", registry) == f"This ECG shows {names[0].en}, {names[1].en}."
    assert report_line([], "ja", registry) == NOTHING_PRESENT["ja"]


def test_the_example_reads_as_a_report_in_80_columns():
    from rich.cells import cell_len

    for extra in ([], ["--lang", "en", "--ids"]):
        result = runner.invoke(app, ["predict", str(EXAMPLES / "00172_hr.hea"), "--top", "5", *extra], env={"COLUMNS": "80"})
        assert result.exit_code == 0, result.output
        lines = result.output.splitlines()
        assert max(cell_len(line) for line in lines) <= 80
        # the machine's measurement line, then the report line
        assert lines[0].startswith("心拍数 " if not extra else "HR ") and "QT/QTc" in lines[0]
        assert lines[1].startswith("この心電図は" if not extra else "This ECG shows")
        assert "P(present)" in result.output
        if extra:  # ids stay on their row (cut short, never wrapped onto the next)
            rows = [line for line in lines if re.match(r" \d \s", line)]
            # the top 5, and every finding called present below them (the report line names only rows of the table)
            assert len(rows) >= 5 and all("_" in row for row in rows)


def test_directory_outputs_carry_the_same_fields_and_every_probability(shared_data, tmp_path):
    bundle = load_bundle(DEFAULT_BUNDLE)
    folder = shared_data / "ptb-xl" / "records100" / "00000"
    paths = sorted(folder.glob("*.hea"))[:6]
    listing = tmp_path / "records.txt"
    listing.write_text("\n".join(str(p) for p in paths), encoding="utf-8")
    out_csv, out_jsonl = tmp_path / "scores.csv", tmp_path / "scores.jsonl"
    predict_directory([listing], out_csv, bundle, ReadingOptions(top=3, all_probabilities=True))
    predict_directory([listing], out_jsonl, bundle, ReadingOptions(top=3))
    rows = list(csv.DictReader(open(out_csv, encoding="utf-8")))
    lines = [json.loads(line) for line in out_jsonl.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == len(lines) == 6
    for row, line in zip(rows, lines):
        one = predict_record(row["path"], bundle, top=3)
        assert row["report"] == line["report"] == one.report
        called = [f.id for f in one.present]
        assert (row["present"].split(";") if row["present"] else []) == [f["id"] for f in line["present"]] == called
        top = line["findings"][0]["probability"]  # None where the finding is uncalibrated: an empty cell
        assert row["top1_probability"] == ("" if top is None else f"{top:.6f}")
        assert line["schema_version"] == 4 and line["findings"][0]["present"] in (True, False, None)
        assert row["decided_by"] == ";".join(f"{f['id']}:{f['decided_by']}" for f in line["findings"] if f["decided_by"])
        probability_columns = [key for key in row if key.startswith("probability:")]
        assert len(probability_columns) == 98
        assert row[f"probability:{one.findings[0].id}"] == row["top1_probability"]
    # Resuming with other options would mix two layouts in one file: refused.
    with pytest.raises(Exception, match="with other options"):
        predict_directory([listing], out_csv, bundle, ReadingOptions(top=5, all_probabilities=True))
    for out in (out_csv, out_jsonl):  # nor lines read with measurements and lines read without
        with pytest.raises(Exception, match="no-measurements"):
            predict_directory([listing], out, bundle, ReadingOptions(top=3, all_probabilities=out == out_csv,
                                                                     measure=False))


# --- bench -----------------------------------------------------------------------------------------

def test_the_gate_treats_calibration_errors_as_lower_is_better():
    before = {"headline": {"calibration/ja/brier": 2.6, "calibration/ja/ece": 0.2}}
    worse = {"headline": {"calibration/ja/brier": 5.0, "calibration/ja/ece": 0.1}}
    assert regressions(worse, before, 2.0) == ["calibration/ja/brier: 2.60 -> 5.00 (+2.40 points)"]
    better = {"headline": {"calibration/ja/brier": 0.1, "calibration/ja/ece": 0.1}}
    assert regressions(better, before, 2.0) == []


def test_directory_scoring_writes_embeddings_and_a_lost_commit_is_redone(shared_data, tmp_path):
    from ecgtool.embeddings import read_embeddings

    bundle = load_bundle(DEFAULT_BUNDLE)
    folder = shared_data / "ptb-xl" / "records100" / "00000"
    listing = tmp_path / "records.txt"
    listing.write_text("\n".join(str(p) for p in sorted(folder.glob("*.hea"))[:5]), encoding="utf-8")
    out, vectors = tmp_path / "scores.csv", tmp_path / "vectors.h5"
    first = predict_directory([listing], out, bundle, ReadingOptions(top=3), embeddings=vectors)
    stored = read_embeddings(vectors, bundle)
    assert first.scored == 5 and sorted(stored.record_ids) == sorted(r["record_id"] for r in csv.DictReader(open(out)))
    # Vectors equal the bundle's own embedding of each record (float16 in the file).
    one = predict_record(sorted(folder.glob("*.hea"))[0], bundle)
    from ecgtool.bundle import canonical_options
    from ecgtool.io.canonical import load_canonical
    import torch

    _, signal = load_canonical(sorted(folder.glob("*.hea"))[0], canonical_options(bundle))
    expected = bundle.embed(torch.from_numpy(signal[None])).numpy()[0]
    assert np.abs(stored.vectors[stored.record_ids.index(one.record_id)].astype(np.float32) - expected).max() < 2e-3
    # An interruption that lost the vector file after the scores were written: the re-run adds
    # the vectors back without writing any score line twice.
    vectors.unlink()
    again = predict_directory([listing], out, bundle, ReadingOptions(top=3), embeddings=vectors)
    assert again.scored == 0 and again.embeddings_not_added == 0
    assert len(read_embeddings(vectors, bundle).record_ids) == 5
    assert len(list(csv.DictReader(open(out)))) == 5
