"""The bench's calibration figures: how well a bundle's probabilities of presence and its
present/absent calls hold on a held-out split.

Over the split's records that have at least one finding (those without carry no label: the same
rule as fitting), for each language the bundle is calibrated in:

* pooled over every (record, calibrated finding) cell: Brier score, expected calibration error
  (10 equal-width bins, count-weighted), the reliability bins; beside them the Brier score of
  always answering the finding's val prevalence (``brier_prevalence``: what calibration must beat);
* per finding: test positives and negatives, Brier score, and at the stored operating point the
  counts, sensitivity, specificity and PPV; the findings a measurement supports read as predict
  reads them, by the model-and-measurement combination where the bundle has one (their threshold
  is then on the combined probability);
* macro sensitivity / specificity / PPV over the findings that have an operating point and at
  least ``MIN_POSITIVES`` test positives.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ecgtool.calibration import brier_score, counts_of, expected_calibration_error, reliability_bins
from ecgtool.combined_calibration import calibrated_columns
from ecgtool.plot import save_figure

MIN_POSITIVES = 10
BINS = 10


def calibration_figures(bundle, reading: np.ndarray, findings: np.ndarray, registry,
                        measurements: list | None = None) -> dict | None:
    """Calibration figures of the reading score (``ecgtool.bundle.reading_scores``, the one score
    calibrated whatever the output language), under ``languages["reading"]``; None when the
    bundle carries no calibration. With ``measurements`` (one per record of the split, None where
    not measured), the findings a measurement supports are read as predict reads them: by the
    bundle's model-and-measurement combinations (``ecgtool.combined_calibration``)."""
    if bundle.calibration is None:
        return None
    labelled = findings.any(axis=1)
    findings = findings[labelled].astype(bool)
    kept = None if measurements is None else [m for m, keep in zip(measurements, labelled) if keep]
    probability_of, called_of, by_measurement = calibrated_columns(
        bundle.calibration.findings, bundle.calibration.combined, reading[labelled], kept)
    result = {"records": int(labelled.sum()), "fitted_on": bundle.calibration.summary.get("fitted_on"),
              "rules": bundle.calibration.summary.get("rules"), "bins": BINS, "languages": {}}
    for lang in ("reading",):
        calibrations = bundle.calibration.findings
        probabilities, truths, prevalence = [], [], []
        rows = []
        for j, calibration in enumerate(calibrations):
            finding = registry.findings[j]
            present = findings[:, j]
            row = {"id": finding.id, "en": finding.en, "ja": finding.ja, "test_positives": int(present.sum()),
                   "test_negatives": int((~present).sum()), "val_positives": calibration.positives,
                   "method": calibration.method}
            if calibration.calibrated:
                p = probability_of[:, j]
                combined = bool(by_measurement[:, j].any())
                row["read_with_measurement"] = combined
                probabilities.append(p)
                truths.append(present)
                prevalence.append(np.full(len(p), calibration.positives / (calibration.positives + calibration.negatives)))
                row["brier"] = brier_score(p, present)
                fitted = _combination(bundle, calibration.finding) if combined else None
                stored = (fitted or calibration).operating_point
                if stored is None:
                    row.update({"threshold": None, "not_called": (fitted or calibration).reason})
                else:
                    point = counts_of(called_of[:, j] == 1, present)
                    row.update({
                        # on the reading score; for a combination, on its probability
                        "threshold": stored.threshold,
                        "sensitivity": point.sensitivity, "specificity": point.specificity, "ppv": point.ppv,
                        "tp": point.true_positives, "fn": point.false_negatives,
                        "fp": point.false_positives, "tn": point.true_negatives,
                        "val_sensitivity": stored.sensitivity, "val_ppv": stored.ppv,
                    })
            rows.append(row)
        if not probabilities:
            continue
        pooled_p, pooled_truth = np.concatenate(probabilities), np.concatenate(truths)
        counted = [row for row in rows if row.get("threshold") is not None and row["test_positives"] >= MIN_POSITIVES]
        result["languages"][lang] = {
            "calibrated_findings": len(probabilities),
            "cells": int(pooled_p.size),
            "brier": brier_score(pooled_p, pooled_truth),
            "brier_prevalence": brier_score(np.concatenate(prevalence), pooled_truth),
            "ece": expected_calibration_error(pooled_p, pooled_truth, BINS),
            "reliability": reliability_bins(pooled_p, pooled_truth, BINS),
            "macro_findings": len(counted),
            **{f"macro_{name}": mean_defined([row[name] for row in counted]) for name in ("sensitivity", "specificity", "ppv")},
            "findings": rows,
        }
    return result


def headline(calibration: dict | None) -> dict[str, float]:
    """Gate figures, in points (× 100); all of them lower-is-better."""
    if not calibration:
        return {}
    figures = {}
    for lang, entry in calibration["languages"].items():
        figures[f"calibration/{lang}/brier"] = 100 * entry["brier"]
        figures[f"calibration/{lang}/ece"] = 100 * entry["ece"]
    return figures


LOWER_IS_BETTER_PREFIX = "calibration/"


# --- rendering ---------------------------------------------------------------------------------

def summary_table(calibration: dict) -> tuple[list[str], list[list[str]]]:
    header = ["score", "findings", "cells", "Brier", "Brier (val prevalence)", "ECE %",
              "macro sens %", "macro spec %", "macro PPV %", "over findings"]
    rows = []
    for lang, entry in calibration["languages"].items():
        rows.append([lang, str(entry["calibrated_findings"]), str(entry["cells"]), f"{entry['brier']:.4f}",
                     f"{entry['brier_prevalence']:.4f}", f"{100 * entry['ece']:.2f}", _pct(entry["macro_sensitivity"]),
                     _pct(entry["macro_specificity"]), _pct(entry["macro_ppv"]), str(entry["macro_findings"])])
    return header, rows


def reliability_table(calibration: dict) -> tuple[list[str], list[list[str]]]:
    langs = list(calibration["languages"])
    header = ["predicted", *(f"{name} {lang}" for lang in langs for name in ("n", "mean p %", "observed %"))]
    rows = []
    for b in range(calibration["bins"]):
        first = calibration["languages"][langs[0]]["reliability"][b]
        row = [f"{100 * first['low']:.0f}–{100 * first['high']:.0f} %"]
        for lang in langs:
            cell = calibration["languages"][lang]["reliability"][b]
            row += [str(cell["count"]), _pct(cell["mean_probability"]), _pct(cell["observed"])]
        rows.append(row)
    return header, rows


def operating_point_table(calibration: dict, lang: str) -> tuple[list[str], list[list[str]]]:
    """Per calibrated finding with a test positive: counts and rates at the stored operating point."""
    header = ["finding", "所見", "method", "val n+", "test n+", "threshold", "TP", "FN", "FP", "TN",
              "sens %", "spec %", "PPV %", "Brier"]
    rows = []
    for row in calibration["languages"][lang]["findings"]:
        if not row["method"] or not row["test_positives"]:
            continue
        method = row["method"] + (" + measurement" if row.get("read_with_measurement") else "")
        if row["threshold"] is None:
            rows.append([row["en"], row["ja"], method, str(row["val_positives"]), str(row["test_positives"]),
                         "not called", "", "", "", "", "", "", "", f"{row['brier']:.4f}"])
            continue
        rows.append([row["en"], row["ja"], method, str(row["val_positives"]), str(row["test_positives"]),
                     ("p ≥ " if row.get("read_with_measurement") else "") + f"{row['threshold']:.3f}", str(row["tp"]), str(row["fn"]), str(row["fp"]), str(row["tn"]),
                     _pct(row["sensitivity"]), _pct(row["specificity"]), _pct(row["ppv"]), f"{row['brier']:.4f}"])
    rows.sort(key=lambda r: -int(r[4]))
    return header, rows


def uncalibrated_note(calibration: dict, lang: str) -> str:
    rows = calibration["languages"][lang]["findings"]
    missing = [row for row in rows if not row["method"] and row["test_positives"]]
    not_called = [row for row in rows if row["method"] and row.get("threshold") is None]
    notes = []
    if missing:
        names = ", ".join(f"{row['en']} ({row['test_positives']})" for row in sorted(missing, key=lambda r: -r["test_positives"]))
        notes.append(f"uncalibrated (too few val positives), with test positives: {names}.")
    if not_called:
        floor = (calibration.get("rules") or {}).get("min_f1")
        notes.append(f"not called (val F1 below {floor}): " + ", ".join(row["en"] for row in not_called) + ".")
    return " ".join(notes)


def plot_reliability(calibration: dict, out_path: str | Path) -> Path:
    """Reliability diagram: observed frequency against mean predicted probability per bin, one
    line per language, bin counts beneath."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (axes, counts) = plt.subplots(2, 1, figsize=(6, 7), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    axes.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    width = 1.0 / calibration["bins"] / (len(calibration["languages"]) + 1)
    for offset, (lang, entry) in enumerate(calibration["languages"].items()):
        cells = [cell for cell in entry["reliability"] if cell["count"]]
        axes.plot([c["mean_probability"] for c in cells], [c["observed"] for c in cells], marker="o",
                  label=f"{lang}: Brier {entry['brier']:.4f}, ECE {100 * entry['ece']:.2f} %")
        counts.bar([c["low"] + (offset + 0.5) * width for c in entry["reliability"]],
                   [max(c["count"], 0.5) for c in entry["reliability"]], width, label=lang)
    axes.set_ylabel("observed frequency of the finding")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.legend(loc="upper left", fontsize=8)
    axes.set_title(f"Reliability on {calibration['records']} test records (every calibrated finding)", fontsize=9)
    axes.grid(alpha=0.3)
    counts.set_yscale("log")
    counts.set_xlabel("predicted probability of presence")
    counts.set_ylabel("cells")
    counts.grid(alpha=0.3)
    figure.tight_layout()
    return save_figure(figure, out_path)


def _combination(bundle, finding: str):
    return next(c for c in bundle.calibration.combined if c.finding == finding)


def mean_defined(values) -> float:
    """The mean of the values that are defined (not None, not NaN); NaN when none is."""
    values = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def _pct(value) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"
