"""Rate, rhythm regularity and the PR, QRS and QT intervals (QTc by Bazett and Fridericia)."""

from __future__ import annotations

import numpy as np


def rate(qrs_samples: np.ndarray, sampling_rate: float) -> tuple[dict, dict]:
    """Heart rate, mean RR and RR irregularity from every detected complex (ectopic ones too).

    The ventricular rate is 60 000 / mean RR (ms), as carts print it over the 10-s record. RR
    irregularity is the coefficient of variation of the RR intervals (SD / mean, sample SD): below
    ~0.05 for regular sinus rhythm at rest, above ~0.1 in atrial fibrillation or with ectopy.
    """
    values: dict = {"n_beats": int(qrs_samples.size)}
    reasons: dict = {}
    if qrs_samples.size < 2:
        why = f"fewer than 2 QRS complexes detected ({qrs_samples.size})"
        values.update(heart_rate_bpm=None, rr_ms=None, rr_irregularity=None)
        reasons.update(heart_rate_bpm=why, rr_ms=why, rr_irregularity=why)
        return values, reasons
    rr = np.diff(qrs_samples) / sampling_rate * 1000.0
    mean_rr = float(rr.mean())
    values["rr_ms"] = round(mean_rr)
    values["heart_rate_bpm"] = round(60000.0 / mean_rr, 1)
    if rr.size < 2:
        values["rr_irregularity"] = None
        reasons["rr_irregularity"] = "one RR interval only: no variation to measure"
    else:
        values["rr_irregularity"] = round(float(rr.std(ddof=1) / mean_rr), 3)
    return values, reasons


def durations(points: dict, point_reasons: dict, sampling_rate: float, rr_ms: float | None) -> tuple[dict, dict]:
    """PR, QRS, QT, QTc (Bazett: QT / √RR) and QTcF (Fridericia: QT / ∛RR), RR in seconds.

    All from the global fiducial points: PR from P onset to QRS onset, QRS from onset to offset,
    QT from QRS onset to T offset.
    """
    ms = 1000.0 / sampling_rate
    values: dict = {}
    reasons: dict = {}

    def span(key: str, start: str, end: str) -> None:
        if points.get(start) is None or points.get(end) is None:
            values[key] = None
            reasons[key] = point_reasons.get(start) or point_reasons.get(end) or f"{start} or {end} not found"
        else:
            values[key] = round((points[end] - points[start]) * ms)

    span("pr_ms", "p_onset", "qrs_onset")
    span("qrs_ms", "qrs_onset", "qrs_offset")
    span("qt_ms", "qrs_onset", "t_offset")
    for key, exponent in (("qtc_ms", 0.5), ("qtcf_ms", 1.0 / 3.0)):
        if values["qt_ms"] is None:
            values[key], reasons[key] = None, reasons["qt_ms"]
        elif rr_ms is None:
            values[key], reasons[key] = None, "no RR interval (fewer than 2 beats) to correct the QT by"
        else:
            values[key] = round(values["qt_ms"] / (rr_ms / 1000.0) ** exponent)
    return values, reasons
