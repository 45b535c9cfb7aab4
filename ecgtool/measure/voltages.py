"""QRS voltages of the median beat: Sokolow–Lyon, Cornell, low voltage, and the ST level at J+60 ms.

Amplitudes are read between the QRS onset and offset of the median beat, referred to the PR level
(the mean over the 20 ms before the QRS onset): R is the most positive deflection, S the most
negative (as a positive number of mV), peak to peak their sum.
"""

from __future__ import annotations

import numpy as np

from ecgtool.measure.leads import CHEST_LEADS, LIMB_LEADS, index
from ecgtool.signal import LEADS

LOW_VOLTAGE_LIMB_MV = 0.5
LOW_VOLTAGE_CHEST_MV = 1.0
ST_AFTER_J_S = 0.06


def qrs_voltages(referred: np.ndarray, points: dict, point_reasons: dict, unusable: set[str]) -> tuple[dict, dict]:
    """Sokolow–Lyon (SV1 + max(RV5, RV6)), Cornell (RaVL + SV3) and low voltage, in mV.

    ``low_voltage_limb`` is True when every limb lead's QRS is under 0.5 mV peak to peak, and
    ``low_voltage_chest`` when every chest lead's is under 1.0 mV; ``limb_qrs_mv`` and
    ``chest_qrs_mv`` hold the peak-to-peak amplitudes they were decided on.
    """
    keys = ("sokolow_lyon_mv", "cornell_mv", "low_voltage_limb", "low_voltage_chest", "limb_qrs_mv", "chest_qrs_mv")
    onset, offset = points.get("qrs_onset"), points.get("qrs_offset")
    if onset is None or offset is None:
        why = point_reasons.get("qrs_onset") or point_reasons.get("qrs_offset") or "QRS not delineated"
        return dict.fromkeys(keys), dict.fromkeys(keys, why)
    qrs = referred[:, onset: offset + 1]
    r = np.maximum(qrs.max(axis=1), 0.0)
    s = np.maximum(-qrs.min(axis=1), 0.0)
    peak_to_peak = qrs.max(axis=1) - qrs.min(axis=1)
    values: dict = {}
    reasons: dict = {}

    def needs(key: str, leads: tuple[str, ...]) -> bool:
        bad = sorted(set(leads) & unusable, key=LEADS.index)
        if bad:
            values[key] = None
            reasons[key] = f"lead {', '.join(bad)} unusable (flat or noisy)"
        return not bad

    if needs("sokolow_lyon_mv", ("V1", "V5", "V6")):
        values["sokolow_lyon_mv"] = round(float(s[index("V1")] + max(r[index("V5")], r[index("V6")])), 3)
    if needs("cornell_mv", ("aVL", "V3")):
        values["cornell_mv"] = round(float(r[index("aVL")] + s[index("V3")]), 3)
    groups = (("limb", LIMB_LEADS, LOW_VOLTAGE_LIMB_MV), ("chest", CHEST_LEADS, LOW_VOLTAGE_CHEST_MV))
    for group, leads, limit in groups:
        amplitudes = {lead: round(float(peak_to_peak[index(lead)]), 3) for lead in leads}
        values[f"{group}_qrs_mv"] = amplitudes
        if needs(f"low_voltage_{group}", leads):
            values[f"low_voltage_{group}"] = bool(all(a < limit for a in amplitudes.values()))
    return values, reasons


def st_j60(referred: np.ndarray, points: dict, point_reasons: dict, sampling_rate: float,
           unusable: set[str]) -> tuple[dict, dict]:
    """``st_j60_mv``: lead → ST level 60 ms after the J point (mV, PR level = 0), None where unusable."""
    offset = points.get("qrs_offset")
    if offset is None:
        return {"st_j60_mv": None}, {"st_j60_mv": point_reasons.get("qrs_offset") or "J point not found"}
    at = offset + round(ST_AFTER_J_S * sampling_rate)
    if at >= referred.shape[1]:
        return {"st_j60_mv": None}, {"st_j60_mv": "J+60 ms falls outside the median beat"}
    t_offset = points.get("t_offset")
    if t_offset is not None and at > t_offset:
        return {"st_j60_mv": None}, {"st_j60_mv": "J+60 ms falls after the T wave's end"}
    # The mean over 8 ms around J+60 rather than one sample: the median beat still carries some noise.
    half = max(1, round(0.004 * sampling_rate))
    level = referred[:, at - half: at + half + 1].mean(axis=1)
    values = {lead: (None if lead in unusable else round(float(level[i]), 3)) for i, lead in enumerate(LEADS)}
    reasons = {}
    if unusable:
        reasons["st_j60_mv"] = f"lead {', '.join(sorted(unusable, key=LEADS.index))} unusable (flat or noisy)"
    return {"st_j60_mv": values}, reasons
