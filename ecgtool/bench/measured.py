"""The bench's figures of the findings a measurement supports: on the held-out split, each read by
the model's score alone, by its criterion alone, and by the two together as predict reads them
(``ecgtool.combined_calibration``).

Over the split's records with at least one finding (the calibration figures' rule), for every
finding the bundle's calibration combines with a measurement: AUROC of the reading score and of
the combined probability, and at the operating points sensitivity, PPV and F1 of the model-only
call, of the criterion (any supporting criterion met: PR > 200 ms, QRS ≥ 120 ms, Sokolow–Lyon ≥
3.5 mV, …) and of the combined call. Macro means over the findings with at least
``MIN_POSITIVES`` test positives (F1: over those of them that both the model and the combination
call, so that the three means are over the same findings).
"""

from __future__ import annotations

import numpy as np

from ecgtool.bench.calibration import mean_defined
from ecgtool.calibration import counts_of
from ecgtool.combined_calibration import calibrated_columns
from ecgtool.measure import criteria
from ecgtool.metrics import auroc

MIN_POSITIVES = 10
READINGS = ("model", "criterion", "combined")


def measured_finding_figures(bundle, reading: np.ndarray, findings: np.ndarray, measurements: list) -> dict | None:
    """The three readings of every combined finding on the split (None: the bundle combines none).

    ``reading``: the reading scores of every record of the split; ``measurements``: one per record
    (None where a record was not measured: it counts as criterion not met)."""
    calibration = bundle.calibration
    if calibration is None or not any(c.fitted for c in calibration.combined):
        return None
    labelled = findings.any(axis=1)
    truth = findings[labelled].astype(bool)
    kept = [m for m, keep in zip(measurements, labelled) if keep]
    scores = reading[labelled]
    _, model_calls, _ = calibrated_columns(calibration.findings, [], scores, None)
    combined_p, combined_calls, _ = calibrated_columns(calibration.findings, calibration.combined, scores, kept)
    checks = [criteria(m) if m is not None else None for m in kept]
    rows = []
    for combination in (c for c in calibration.combined if c.fitted):
        j = bundle.findings.index(combination.finding)
        present = truth[:, j]
        met = np.array([c is not None and any(c[name].met is True for name in combination.criteria) for c in checks])
        calls = {"model": model_calls[:, j], "criterion": met.astype(np.int8), "combined": combined_calls[:, j]}
        row = {"id": combination.finding, "criteria": list(combination.criteria),
               "test_positives": int(present.sum()), "test_negatives": int((~present).sum()),
               "auroc_model": auroc(scores[:, j], present), "auroc_combined": auroc(combined_p[:, j], present)}
        for name, called in calls.items():
            row[name] = _at_point(called, present)
        rows.append(row)
    counted = [row for row in rows if row["test_positives"] >= MIN_POSITIVES]
    # F1 is compared over the same findings: those that both the model and the combination call.
    paired = [row for row in counted if row["model"] is not None and row["combined"] is not None]
    macro = {"findings": len(counted),
             "auroc_model": mean_defined(row["auroc_model"] for row in counted),
             "auroc_combined": mean_defined(row["auroc_combined"] for row in counted),
             "f1_findings": len(paired),
             **{f"f1_{name}": mean_defined(row[name]["f1"] for row in paired) for name in READINGS}}
    return {"records": int(labelled.sum()), "measured": sum(m is not None for m in kept), "findings": rows,
            "macro": macro, "min_positives": MIN_POSITIVES}


def _at_point(called: np.ndarray, present: np.ndarray) -> dict | None:
    """Counts, sensitivity, PPV and F1 of the calls (None: this reading has no operating point)."""
    if not (called >= 0).any():
        return None
    point = counts_of(called == 1, present)
    return {"tp": point.true_positives, "fp": point.false_positives, "fn": point.false_negatives,
            "sensitivity": point.sensitivity, "ppv": point.ppv, "f1": point.f1}
