"""The findings a measurement defines, decided from ``Measurements`` by published thresholds.

Each criterion gives ``met`` (True / False / None), the measured value it was decided on, the
threshold as printed, its source, and the reason when ``met`` is None (the measurement itself is
None, or the sex that chooses the threshold is not known and the choice matters, …).

Sources of the thresholds
-------------------------
[Surawicz 2009]
    Surawicz B, Childers R, Deal BJ, Gettes LS. AHA/ACCF/HRS recommendations for the
    standardization and interpretation of the electrocardiogram, Part III: intraventricular
    conduction disturbances. Circulation 2009;119:e235–e240. Complete LBBB / RBBB: QRS ≥ 120 ms in
    adults; incomplete RBBB / LBBB: QRS 110–119 ms; nonspecific IVCD: QRS > 110 ms; LAFB: frontal
    axis −45° to −90°; LPFB: +90° to +180°.
[Rautaharju 2009]
    Rautaharju PM, Surawicz B, Gettes LS. Part IV: the ST segment, T and U waves, and the QT
    interval. Circulation 2009;119:e241–e250. Prolonged QTc: ≥ 450 ms in men, ≥ 460 ms in women.
[Hancock 2009]
    Hancock EW, Deal BJ, Mirvis DM, et al. Part V: electrocardiogram changes associated with
    cardiac chamber hypertrophy. Circulation 2009;119:e251–e261 (reviews the voltage criteria below
    without preferring one).
[Sokolow 1949]
    Sokolow M, Lyon TP. The ventricular complex in left ventricular hypertrophy as obtained by
    unipolar precordial and limb leads. Am Heart J 1949;37:161–186. SV1 + RV5 or RV6 ≥ 3.5 mV.
[Casale 1987]
    Casale PN, Devereux RB, Alonso DR, et al. Improved sex-specific criteria of left ventricular
    hypertrophy for clinical and computer interpretation of electrocardiograms: validation with
    autopsy findings. Circulation 1987;75:565–572. Cornell voltage RaVL + SV3 > 2.8 mV in men,
    > 2.0 mV in women (first proposed in J Am Coll Cardiol 1985;6:572–580).
[Kusumoto 2018]
    Kusumoto FM, Schoenfeld MH, Barrett C, et al. 2018 ACC/AHA/HRS guideline on the evaluation and
    management of patients with bradycardia and cardiac conduction delay. Circulation
    2019;140:e382–e482, section 2 (definitions): sinus bradycardia, sinus rate < 50 bpm;
    first-degree AV block, PR > 200 ms.
[Page 2015]
    Page RL, Joglar JA, Caldwell MA, et al. 2015 ACC/AHA/HRS guideline for the management of adult
    patients with supraventricular tachycardia. Circulation 2016;133:e506–e574: sinus tachycardia,
    sinus rate > 100 bpm.
[conventional]
    The adult frontal QRS axis from −30° to +90° is normal; left axis deviation is −30° to −90°,
    right axis deviation +90° to +180° (the ranges that [Surawicz 2009]'s fascicular blocks are
    stated within). Low voltage: QRS under 0.5 mV peak to peak in every limb lead, under 1.0 mV in
    every chest lead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ecgtool.measure.result import Measurements

# Sinus bradycardia at < 50 bpm as [Kusumoto 2018] defines it; the older textbook limit of 60 would
# call the resting rate of many healthy adults abnormal.
BRADYCARDIA_BPM = 50.0
TACHYCARDIA_BPM = 100.0
FIRST_DEGREE_AV_BLOCK_PR_MS = 200.0
LEFT_AXIS_DEG = -30.0
RIGHT_AXIS_DEG = 90.0
LONG_QTC_MS = {"male": 450.0, "female": 460.0}
SOKOLOW_LYON_MV = 3.5
CORNELL_MV = {"male": 2.8, "female": 2.0}
COMPLETE_BBB_QRS_MS = 120.0
INCOMPLETE_BBB_QRS_MS = 110.0


@dataclass(frozen=True)
class Criterion:
    """One measurement-defined finding: met or not, on what value, by what threshold."""

    name: str
    met: bool | None
    value: Any
    threshold: str
    source: str
    reason: str | None = None

    def to_dict(self) -> dict:
        return {"met": self.met, "value": self.value, "threshold": self.threshold, "source": self.source,
                **({"reason": self.reason} if self.reason else {})}


# Criterion name → the registry findings (labels/findings.yaml ids) it decides or supports.
CRITERIA = {
    "left_axis_deviation": ("left_axis_deviation",),
    "right_axis_deviation": ("right_axis_deviation",),
    "sinus_bradycardia": ("sinus_bradycardia",),
    "bradycardia": ("bradycardia",),
    "sinus_tachycardia": ("sinus_tachycardia",),
    "tachycardia": ("tachycardia",),
    "first_degree_av_block": ("first_degree_atrioventricular_block", "prolonged_pr_interval"),
    "long_qt": ("prolonged_qt_interval",),
    "low_voltage_limb": ("low_voltage_limb_leads",),
    "low_voltage_chest": ("low_voltage_chest_leads",),
    "lvh_sokolow_lyon": ("high_voltage_leads_corresponding_to_left_ventricle", "left_ventricular_hypertrophy"),
    "lvh_cornell": ("high_voltage_leads_corresponding_to_left_ventricle", "left_ventricular_hypertrophy"),
    "qrs_complete_bbb_width": ("complete_right_bundle_branch_block", "complete_left_bundle_branch_block"),
    "qrs_incomplete_bbb_width": ("incomplete_right_bundle_branch_block",),
}


def criteria(measurements: Measurements, sex: str | None = None) -> dict[str, Criterion]:
    """Every criterion of ``CRITERIA`` for ``measurements``.

    Parameters
    ----------
    measurements : Measurements
        What ``measure`` returned.
    sex : {"male", "female", None}
        Chooses the sex-specific limits (long QT, Cornell). Unknown: the higher of the two limits
        (QTc ≥ 460 ms, Cornell > 2.8 mV), so that a finding is not called on a limit that may not
        apply; the threshold text says so.
    """
    if sex not in (None, "male", "female"):
        raise ValueError(f"sex must be 'male', 'female' or None, not {sex!r}")
    m = measurements
    out: dict[str, Criterion] = {}

    def add(name: str, key: str, test, threshold: str, source: str, sinus: bool = False) -> None:
        value = m.values.get(key)
        if value is None:
            out[name] = Criterion(name, None, None, threshold, source, m.reasons.get(key, f"{key} not measured"))
            return
        met = bool(test(value))
        reason = None
        if sinus and met:  # a sinus rhythm is approximated by a P wave locked to every QRS
            present = m.values.get("p_wave_present")
            if present is None:
                why = m.reasons.get("p_wave_present", "not assessed")
                met, reason = None, f"the rate is met, but whether a P wave precedes each QRS is unknown ({why})"
            elif present is False:
                met = False
        out[name] = Criterion(name, met, value, threshold, source, reason)

    add("left_axis_deviation", "qrs_axis_deg", lambda a: -90.0 <= a < LEFT_AXIS_DEG,
        "QRS axis −90° to < −30°", "conventional adult limits, as in [Surawicz 2009]")
    add("right_axis_deviation", "qrs_axis_deg", lambda a: RIGHT_AXIS_DEG < a <= 180.0,
        "QRS axis > +90° to +180° (axes of −90° to −180°, 'northwest', are neither)",
        "conventional adult limits, as in [Surawicz 2009]")
    add("sinus_bradycardia", "heart_rate_bpm", lambda r: r < BRADYCARDIA_BPM,
        f"rate < {BRADYCARDIA_BPM:g} bpm with a P wave locked to each QRS", "[Kusumoto 2018]", sinus=True)
    add("bradycardia", "heart_rate_bpm", lambda r: r < BRADYCARDIA_BPM,
        f"ventricular rate < {BRADYCARDIA_BPM:g} bpm, any rhythm", "[Kusumoto 2018]")
    add("sinus_tachycardia", "heart_rate_bpm", lambda r: r > TACHYCARDIA_BPM,
        f"rate > {TACHYCARDIA_BPM:g} bpm with a P wave locked to each QRS", "[Page 2015]", sinus=True)
    add("tachycardia", "heart_rate_bpm", lambda r: r > TACHYCARDIA_BPM,
        f"ventricular rate > {TACHYCARDIA_BPM:g} bpm, any rhythm", "[Page 2015]")
    add("first_degree_av_block", "pr_ms", lambda pr: pr > FIRST_DEGREE_AV_BLOCK_PR_MS,
        f"PR > {FIRST_DEGREE_AV_BLOCK_PR_MS:g} ms", "[Kusumoto 2018]")
    qtc_limit, qtc_text = _by_sex(LONG_QTC_MS, sex, "QTc (Bazett) ≥ {:g} ms")
    add("long_qt", "qtc_ms", lambda q: q >= qtc_limit, qtc_text, "[Rautaharju 2009]")
    add("low_voltage_limb", "low_voltage_limb", bool, "QRS < 0.5 mV peak to peak in every limb lead", "conventional")
    add("low_voltage_chest", "low_voltage_chest", bool, "QRS < 1.0 mV peak to peak in every chest lead",
        "conventional")
    add("lvh_sokolow_lyon", "sokolow_lyon_mv", lambda v: v >= SOKOLOW_LYON_MV,
        f"SV1 + max(RV5, RV6) ≥ {SOKOLOW_LYON_MV:g} mV", "[Sokolow 1949]")
    cornell_limit, cornell_text = _by_sex(CORNELL_MV, sex, "RaVL + SV3 > {:g} mV")
    add("lvh_cornell", "cornell_mv", lambda v: v > cornell_limit, cornell_text, "[Casale 1987]")
    add("qrs_complete_bbb_width", "qrs_ms", lambda q: q >= COMPLETE_BBB_QRS_MS,
        f"QRS ≥ {COMPLETE_BBB_QRS_MS:g} ms (complete bundle branch block width; morphology not assessed)",
        "[Surawicz 2009]")
    add("qrs_incomplete_bbb_width", "qrs_ms", lambda q: INCOMPLETE_BBB_QRS_MS <= q < COMPLETE_BBB_QRS_MS,
        f"QRS {INCOMPLETE_BBB_QRS_MS:g}–{COMPLETE_BBB_QRS_MS - 1:g} ms (incomplete bundle branch block width; "
        "morphology not assessed)", "[Surawicz 2009]")
    return out


def _by_sex(limits: dict[str, float], sex: str | None, template: str) -> tuple[float, str]:
    if sex is None:
        limit = max(limits.values())
        return limit, template.format(limit) + " (sex unknown: the higher of the men's and women's limits)"
    return limits[sex], template.format(limits[sex]) + f" ({'men' if sex == 'male' else 'women'})"
