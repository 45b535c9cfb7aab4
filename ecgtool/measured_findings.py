"""Findings that a measurement defines, decided by their criterion where the model cannot call them.

A finding is *measurement-defined* when its published criterion is its definition (``DEFINED_BY``:
axis deviations, bradycardia and tachycardia, first-degree AV block and a long PR, long QT, low
voltage, left-ventricular high voltage). The text model calls findings through their calibrated
operating points; where the calibration gave a finding none (too few labelled val records: PTB-XL
states no axis at all), the criterion decides instead, and the call says so (``decided_by``). A
criterion that cannot be evaluated (the measurement is None, with its reason) decides nothing.

Findings the model can call are called from the model's score and the measurement together where
the bundle's calibration fitted that combination on the val split (``ecgtool.combined_calibration``),
from the model's score alone otherwise; the criteria are reported beside them (``criteria`` in the
JSON output).
"""

from __future__ import annotations

from dataclasses import dataclass

from ecgtool.measure import CRITERIA, Measurements, criteria

# Finding id → the criteria that decide or support it: measure.criteria.CRITERIA read the other way.
SUPPORTED_BY: dict[str, tuple[str, ...]] = {}
for _criterion, _findings in CRITERIA.items():
    for _finding in _findings:
        SUPPORTED_BY[_finding] = SUPPORTED_BY.get(_finding, ()) + (_criterion,)

# Findings a criterion supports but does not define: LVH is more than its voltages, a bundle branch
# block more than its QRS width (the morphology is the model's, or a cardiologist's, to judge).
SUPPORTED_ONLY = ("left_ventricular_hypertrophy", "complete_right_bundle_branch_block",
                  "complete_left_bundle_branch_block", "incomplete_right_bundle_branch_block")

# Finding id → the criteria that define it (any met: met; all evaluated and none met: not met).
DEFINED_BY: dict[str, tuple[str, ...]] = {finding: names for finding, names in SUPPORTED_BY.items()
                                          if finding not in SUPPORTED_ONLY}


# What each criterion reads, as ECG reports abbreviate it in every language, and its unit.
MEASURED = {
    "left_axis_deviation": ("QRS axis", "°"), "right_axis_deviation": ("QRS axis", "°"),
    "sinus_bradycardia": ("HR", " bpm"), "bradycardia": ("HR", " bpm"), "sinus_tachycardia": ("HR", " bpm"),
    "tachycardia": ("HR", " bpm"), "first_degree_av_block": ("PR", " ms"), "long_qt": ("QTc", " ms"),
    "low_voltage_limb": ("limb QRS < 0.5 mV", ""), "low_voltage_chest": ("chest QRS < 1.0 mV", ""),
    "lvh_sokolow_lyon": ("Sokolow-Lyon", " mV"), "lvh_cornell": ("Cornell", " mV"),
    "qrs_complete_bbb_width": ("QRS", " ms"), "qrs_incomplete_bbb_width": ("QRS", " ms"),
}


# Criteria a wide QRS (>= 120 ms: bundle branch block, ventricular conduction delay, pacing) leaves
# unreadable, and an unmeasured QRS leaves unknown: the QT holds the widened QRS ([Rautaharju 2009]
# advises against the usual QTc limits there), and a conduction delay changes the QRS voltages the
# LVH criteria read ([Hancock 2009] reviews their loss of accuracy with intraventricular conduction
# defects). Over a wide QRS they decide nothing, and the model-and-measurement combination reads
# them as unknown (ecgtool.combined_calibration).
WIDE_QRS_MS = 120.0
UNREADABLE_OVER_WIDE_QRS = ("long_qt", "lvh_sokolow_lyon", "lvh_cornell")


def readable(measurements: Measurements, criterion: str) -> bool:
    """Whether ``criterion`` can be read on this record: False for a criterion of
    ``UNREADABLE_OVER_WIDE_QRS`` where the QRS is wide or unmeasured."""
    if criterion not in UNREADABLE_OVER_WIDE_QRS:
        return True
    qrs = measurements.values.get("qrs_ms")
    return qrs is not None and qrs < WIDE_QRS_MS


@dataclass(frozen=True)
class MeasuredCall:
    """A criterion's verdict on one finding: ``met`` True / False, what it rests on (the criterion
    as published: ``threshold``), and the measured values (``values``, e.g. "QTc 462 ms")."""

    finding: str
    met: bool
    threshold: str
    values: str


def measured_calls(measurements: Measurements | None) -> dict[str, MeasuredCall]:
    """The verdict on every measurement-defined finding whose criteria could be evaluated."""
    if measurements is None:
        return {}
    checks = criteria(measurements)
    calls = {}
    for finding, names in DEFINED_BY.items():
        results = [checks[name] for name in names if readable(measurements, name)]
        if not results:
            continue  # e.g. a QT or voltages over a wide (or unmeasured) QRS
        met = [c for c in results if c.met]
        used = met or (results if all(c.met is False for c in results) else None)
        if used is not None:
            calls[finding] = MeasuredCall(finding, bool(met), "; ".join(c.threshold for c in used),
                                          ", ".join(_shown(c) for c in used))
    return calls


def supporting_values(measurements: Measurements | None, criterion_names: tuple[str, ...]) -> str:
    """The measured values the named criteria read, as printed ("PR 162 ms", "QRS 142 ms"; once
    each), or "not measured"."""
    if measurements is None:
        return "not measured"
    checks = criteria(measurements)

    def shown(name: str) -> str:
        label = MEASURED.get(name, (name,))[0]
        if checks[name].value is None:
            return f"{label} –"
        if not readable(measurements, name):
            qrs = measurements.values.get("qrs_ms")
            return f"{_shown(checks[name])} not read " + ("(QRS not measured)" if qrs is None else f"over QRS {qrs:g} ms")
        return _shown(checks[name])

    return ", ".join(dict.fromkeys(shown(name) for name in criterion_names))


def _shown(check) -> str:
    label, unit = MEASURED.get(check.name, (check.name, ""))
    if isinstance(check.value, bool):
        return label if check.value else f"not {label}"
    return f"{label} {check.value:g}{unit}"
