"""The model-and-measurement combination (``ecgtool.combined_calibration``): its features on real
records, its fit, its file entry and what predict calls with it."""

from __future__ import annotations

import ast
import csv
import json
import shutil

import numpy as np
import pytest

from ecgtool.bundle import DEFAULT_BUNDLE, load_bundle
from ecgtool.calibration import logistic_fit
from ecgtool.calibration_file import CalibrationError
from ecgtool.combined_calibration import (
    MARGIN_CLIP,
    RIDGE,
    SUPPORTED_BY,
    CombinedCalibration,
    calibrated_columns,
    criterion_margins,
    fit_combined,
)
from ecgtool.errors import RecordError
from ecgtool.io import read_record
from ecgtool.measure import measure
from ecgtool.measure.criteria import CRITERIA, FIRST_DEGREE_AV_BLOCK_PR_MS
from ecgtool.signal import canonicalize

EXAMPLES = DEFAULT_BUNDLE.parents[2] / "examples" / "ptb-xl"


def test_every_criterion_supports_its_findings_and_nothing_else():
    pairs = {(finding, name) for name, findings in CRITERIA.items() for finding in findings}
    assert {(finding, name) for finding, names in SUPPORTED_BY.items() for name in names} == pairs


def test_ridge_logistic_recovers_a_known_model():
    rng = np.random.default_rng(7)
    features = rng.normal(size=(20000, 3))
    truth = np.array([1.5, -0.8, 0.0])
    present = rng.random(20000) < 1 / (1 + np.exp(-(features @ truth - 1.0)))
    weights, bias = logistic_fit(features, present, ridge=RIDGE)
    assert np.allclose(weights, truth, atol=0.08) and abs(bias + 1.0) < 0.08


def test_a_separating_criterion_gets_a_large_finite_weight():
    margin = np.r_[np.full(50, -1.0), np.full(50, 1.0)]
    present = margin > 0
    weights, bias = logistic_fit(margin[:, None], present, ridge=RIDGE)
    assert np.isfinite(weights).all() and weights[0] > 2 and np.isfinite(bias)


def test_margins_on_a_real_record_follow_its_measurements():
    measurements = measure(canonicalize(read_record(EXAMPLES / "00180_hr.hea")).signal)  # LBBB, PR ~160 ms
    margins, unknown = criterion_margins(measurements, ("first_degree_av_block", "qrs_complete_bbb_width"))
    assert not unknown.any()
    assert margins[0] == pytest.approx((measurements["pr_ms"] - FIRST_DEGREE_AV_BLOCK_PR_MS) / 20.0)
    assert margins[1] == MARGIN_CLIP  # QRS far above 120 ms: clipped
    margins, unknown = criterion_margins(None, ("first_degree_av_block",))
    assert unknown.tolist() == [1.0] and margins.tolist() == [0.0]


def test_an_unmeasurable_value_is_unknown_not_a_margin():
    atrial_fibrillation = measure(canonicalize(read_record(EXAMPLES / "00318_hr.hea")).signal)
    assert atrial_fibrillation["pr_ms"] is None  # no P wave: no PR
    margins, unknown = criterion_margins(atrial_fibrillation, ("first_degree_av_block", "sinus_bradycardia"))
    assert unknown.tolist() == [1.0, 0.0] and margins[0] == 0.0
    assert margins[1] == -MARGIN_CLIP  # a rate without a P wave is not sinus bradycardia


@pytest.fixture(scope="module")
def ptbxl_measured(shared_data):
    """The 500 Hz PTB-XL records of ../shared, measured, with their statements."""
    codes = {}
    with open(shared_data / "ptb-xl" / "ptbxl_database.csv", newline="", encoding="utf-8") as stream:
        for row in csv.DictReader(stream):
            codes[int(float(row["ecg_id"]))] = set(ast.literal_eval(row["scp_codes"]))
    rows = []
    for header in sorted((shared_data / "ptb-xl" / "records500").glob("*/*_hr.hea")):
        try:
            rows.append((codes[int(header.name[:5])], measure(canonicalize(read_record(header)).signal)))
        except RecordError:
            continue
    return rows


@pytest.mark.parametrize("finding,code", [("first_degree_atrioventricular_block", "1AVB"),
                                          ("left_ventricular_hypertrophy", "LVH"),
                                          ("complete_left_bundle_branch_block", "CLBBB")])
def test_with_an_uninformative_score_the_fit_leans_on_the_measurement(ptbxl_measured, finding, code):
    present = np.array([code in codes for codes, _ in ptbxl_measured])
    scores = np.random.default_rng(3).normal(size=len(present))  # a model that knows nothing
    fitted = fit_combined(finding, scores, present, [m for _, m in ptbxl_measured], min_positives=8)
    assert fitted.fitted and present.sum() >= 8
    assert fitted.weights[1] > 0.3  # the first criterion's margin raises the probability
    assert fitted.val_auroc["combined"] > fitted.val_auroc["model"] + 0.2
    probability = fitted.probability(scores, np.array([np.concatenate(criterion_margins(m, fitted.criteria))
                                                      for _, m in ptbxl_measured]))
    assert probability[present].mean() > probability[~present].mean()


def test_too_few_positives_are_not_fitted_and_say_so(ptbxl_measured):
    present = np.zeros(len(ptbxl_measured), dtype=bool)
    present[:3] = True
    fitted = fit_combined("prolonged_qt_interval", np.zeros(len(present)), present, [m for _, m in ptbxl_measured])
    assert not fitted.fitted and "3 val positives" in fitted.reason and fitted.operating_point is None


def test_an_entry_round_trips_and_a_bad_one_is_refused(ptbxl_measured):
    present = np.array(["1AVB" in codes for codes, _ in ptbxl_measured])
    scores = np.random.default_rng(5).normal(size=len(present))
    fitted = fit_combined("prolonged_pr_interval", scores, present, [m for _, m in ptbxl_measured], min_positives=8)
    entry = json.loads(json.dumps(fitted.as_dict()))
    assert CombinedCalibration.from_dict(entry) == fitted
    with pytest.raises(ValueError, match="criteria"):
        CombinedCalibration.from_dict({**entry, "criteria": ["long_qt"]})
    with pytest.raises(ValueError, match="weights for"):
        CombinedCalibration.from_dict({**entry, "weights": entry["weights"][:-1]})
    with pytest.raises(ValueError, match="non-finite"):
        CombinedCalibration.from_dict({**entry, "bias": float("nan")})


def test_the_shipped_calibration_carries_combinations_that_load():
    bundle = load_bundle(DEFAULT_BUNDLE)
    fitted = [c for c in bundle.calibration.combined if c.fitted]
    assert fitted, "the shipped model carries no model-and-measurement combination"
    assert {c.finding for c in bundle.calibration.combined} <= set(SUPPORTED_BY)
    for combination in fitted:
        assert combination.criteria == SUPPORTED_BY[combination.finding]


def test_a_tampered_combination_in_the_bundle_is_refused(tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(DEFAULT_BUNDLE, copy)
    description = json.loads((copy / "bundle.json").read_text(encoding="utf-8"))
    path = copy / description["calibration"]["file"]
    payload = json.loads(path.read_text(encoding="utf-8"))
    payload["combined"].append(dict(payload["combined"][0]))  # one finding twice
    data = json.dumps(payload).encode()
    path.write_bytes(data)
    import hashlib

    description["calibration"]["sha256"] = hashlib.sha256(data).hexdigest()
    (copy / "bundle.json").write_text(json.dumps(description), encoding="utf-8")
    with pytest.raises(CalibrationError, match=rf"{path.name}.*combined calibrations name findings"):
        load_bundle(copy)


def test_unmeasured_records_are_read_by_the_model_alone():
    bundle = load_bundle(DEFAULT_BUNDLE)
    similarity = np.random.default_rng(1).normal(scale=0.2, size=(3, len(bundle.findings)))
    measured = measure(canonicalize(read_record(EXAMPLES / "00180_hr.hea")).signal)
    alone = calibrated_columns(bundle.calibration.findings, bundle.calibration.combined, similarity, None)
    mixed = calibrated_columns(bundle.calibration.findings, bundle.calibration.combined, similarity,
                               [None, measured, None])
    combined = [bundle.findings.index(c.finding) for c in bundle.calibration.combined if c.fitted]
    assert not alone[2].any() and mixed[2][1, combined].all() and not mixed[2][[0, 2]].any()
    assert np.array_equal(alone[0][[0, 2]], mixed[0][[0, 2]], equal_nan=True)
    others = [j for j in range(len(bundle.findings)) if j not in combined]
    assert np.array_equal(alone[0][1, others], mixed[0][1, others], equal_nan=True)


def test_predict_reads_the_pr_of_00180_and_says_how_each_call_was_made():
    """The issue's case: PTB-XL 00180 (LBBB) was read as first-degree AV block, 22 %, with a
    measured PR of 162 ms; with the measurement the call is absent and says it read it."""
    from ecgtool.predict import MODEL_AND_MEASUREMENT, predict_record

    bundle = load_bundle(DEFAULT_BUNDLE)
    with_pr = predict_record(EXAMPLES / "00180_hr.hea", bundle, top=10)
    alone = predict_record(EXAMPLES / "00180_hr.hea", bundle, top=10, measured=False)
    assert alone.measurements is None and all(f.decided_by is None for f in alone.findings)
    assert with_pr.measurements["pr_ms"] < 200
    avb = {f.id: f for f in with_pr.findings}["first_degree_atrioventricular_block"]
    avb_alone = {f.id: f for f in alone.findings}["first_degree_atrioventricular_block"]
    assert avb.decided_by == MODEL_AND_MEASUREMENT and avb.present is False and avb.probability < avb_alone.probability
    # The model-only reading is the model's calibration, untouched.
    j = bundle.findings.index("first_degree_atrioventricular_block")
    assert avb_alone.probability == pytest.approx(float(bundle.calibration.findings[j].probability([avb_alone.score])[0]))
    supported = {c.finding for c in bundle.calibration.combined if c.fitted}
    assert all((f.decided_by == MODEL_AND_MEASUREMENT) == (f.id in supported) for f in with_pr.findings
               if f.decided_by != "measurement")


def test_the_cli_reads_without_measuring_on_request():
    from typer.testing import CliRunner

    from ecgtool.cli import app

    result = CliRunner().invoke(app, ["predict", str(EXAMPLES / "00180_hr.hea"), "--no-measurements", "--lang", "en"])
    assert result.exit_code == 0, result.output
    assert not result.output.startswith("HR ") and "‡" not in result.output and "†" not in result.output
    measured = CliRunner().invoke(app, ["predict", str(EXAMPLES / "00180_hr.hea"), "--lang", "en"])
    assert measured.output.startswith("HR ") and "‡: the model's score and the measurement together" in measured.output


def test_fhir_says_which_calls_read_the_measurement():
    from ecgtool.api import load_model

    reading = load_model(device="cpu").read(EXAMPLES / "00180_hr.hea")
    combined = [f for f in reading.present if f.decided_by == "model+measurement"]
    assert combined  # complete LBBB read with its QRS width
    bundle = reading.to_fhir()
    methods = [entry["resource"].get("method", {}).get("text", "") for entry in bundle["entry"]]
    together = [text for text in methods if "model and measurement program together" in text]
    assert len(together) == len(combined)


def test_voltages_and_qtc_over_a_wide_qrs_are_read_as_unknown():
    """00180 (LBBB, QRS > 200 ms, Sokolow-Lyon over 3.5 mV): its voltages and QTc are not read,
    neither by the combination nor by a criterion; its QRS width is."""
    from ecgtool.measured_findings import measured_calls, supporting_values

    lbbb = measure(canonicalize(read_record(EXAMPLES / "00180_hr.hea")).signal)
    assert lbbb["qrs_ms"] >= 120 and lbbb["sokolow_lyon_mv"] >= 3.5 and lbbb["qtc_ms"] >= 460
    margins, unknown = criterion_margins(lbbb, ("lvh_sokolow_lyon", "lvh_cornell", "long_qt", "qrs_complete_bbb_width"))
    assert unknown.tolist() == [1.0, 1.0, 1.0, 0.0] and margins[:3].tolist() == [0.0, 0.0, 0.0]
    calls = measured_calls(lbbb)
    assert "prolonged_qt_interval" not in calls and "high_voltage_leads_corresponding_to_left_ventricle" not in calls
    assert "not read over QRS" in supporting_values(lbbb, ("lvh_sokolow_lyon",))
    narrow = measure(canonicalize(read_record(EXAMPLES / "00299_hr.hea")).signal)  # LVH, QRS 90 ms
    margins, unknown = criterion_margins(narrow, ("lvh_sokolow_lyon",))
    assert unknown.tolist() == [0.0] and margins[0] > 0
