"""Frontal-plane P, QRS and T axes from leads I and aVF, as carts print them (−180° … +180°).

Under Einthoven's and Goldberger's model lead I = m·cos θ and aVF = (√3/2)·m·sin θ for a frontal
vector of size m and direction θ, so θ = atan2(2·aVF/√3, I): the plain atan2(aVF, I) is off by up
to 8°. What each lead contributes is, per wave, what agreed best with the machines' own axes on
the 10 public files that carry them (GE 12SL, Philips, Mortara; docs/measurements.md):

* QRS and T: the net amplitude, largest positive plus largest negative deflection from the PR
  level between the wave's onset and offset (QRS −2 ± 5°, T +1 ± 3° from the machines; the net
  area gave −2 ± 6° and +7 ± 18°, a T wave at right angles to aVF off by 59°);
* P: the net area of the 20 ms-smoothed leads between P onset and offset, above the straight line
  joining the two (+3 ± 5°, at most 12°; the net amplitude −1 ± 7°, at most 17°, and the area
  above the PR level −3 ± 6°, at most 20°): the P wave is small, and one sample's noise at each
  end of it is the error to keep out.
"""

from __future__ import annotations

import math

import numpy as np

from ecgtool.measure.filters import moving_average
from ecgtool.measure.leads import index

LEAD_I, LEAD_AVF = index("I"), index("aVF")
# Below these sizes of the frontal vector (the P and T waves' in mV·ms, the others' in mV) the
# direction is not worth printing.
MIN_AREA_MV_MS = 0.5
MIN_AMPLITUDE_MV = 0.02

WAVES = {
    "p_axis_deg": ("p_onset", "p_offset", "area"),
    "qrs_axis_deg": ("qrs_onset", "qrs_offset", "amplitude"),
    "t_axis_deg": ("qrs_offset", "t_offset", "amplitude"),
}


def frontal_axis(lead_i: float, lead_avf: float) -> float:
    """Degrees, −180 … +180, of the frontal vector with these lead I and aVF projections."""
    return math.degrees(math.atan2(2.0 * lead_avf / math.sqrt(3.0), lead_i))


def axes(referred: np.ndarray, points: dict, point_reasons: dict, sampling_rate: float,
         unusable: set[str]) -> tuple[dict, dict]:
    """P, QRS and T axes of ``referred`` median beats (12, n; mV, PR level subtracted)."""
    values: dict = {}
    reasons: dict = {}
    for key, (start, end, kind) in WAVES.items():
        values[key] = None
        if {"I", "aVF"} & unusable:
            reasons[key] = f"lead {' and '.join(sorted({'I', 'aVF'} & unusable))} unusable (flat or noisy)"
            continue
        if points.get(start) is None or points.get(end) is None:
            reasons[key] = point_reasons.get(start) or point_reasons.get(end) or f"{start} or {end} not found"
            continue
        span = slice(points[start], points[end] + 1)
        if kind == "area":
            # Low-passed (20 ms) first: the line's two ends would otherwise carry the noise of one
            # sample each across the whole wave.
            wave = moving_average(referred[[LEAD_I, LEAD_AVF]], round(0.02 * sampling_rate))[:, span]
            ends = wave[:, :1] + (wave[:, -1:] - wave[:, :1]) * np.linspace(0.0, 1.0, wave.shape[1])
            lead_i, lead_avf = (wave - ends).sum(axis=1) * (1000.0 / sampling_rate)
            smallest = MIN_AREA_MV_MS
        else:
            wave = referred[[LEAD_I, LEAD_AVF], span]
            lead_i, lead_avf = wave.max(axis=1) + wave.min(axis=1)
            smallest = MIN_AMPLITUDE_MV
        if math.hypot(lead_i, 2.0 * lead_avf / math.sqrt(3.0)) < smallest:
            reasons[key] = "frontal vector too small to give a direction (indeterminate axis)"
            continue
        values[key] = round(frontal_axis(float(lead_i), float(lead_avf)))
    return values, reasons
