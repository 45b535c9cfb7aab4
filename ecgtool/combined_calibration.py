"""The findings a measurement defines or supports, called from the model's reading score and the
measurement together: one logistic model per finding, fitted on the val split beside the
model-only calibration (``ecgtool.calibration``) by ``ecgtool calibrate``.

For a finding that a criterion of ``ecgtool.measure.criteria`` decides or supports (``CRITERIA``:
first-degree AV block by PR, sinus brady-/tachycardia by the rate, long QT by QTc, low voltage, LV
high voltage and LVH by Sokolow–Lyon and Cornell, the bundle branch blocks by QRS width, the axis
deviations by the axis) and that has at least ``min_positives`` labelled val positives:

    P(present) = sigmoid(a · z + Σ_c (w_c · margin_c + u_c · unknown_c) + b)

* ``z``: the reading score (``ecgtool.bundle.reading_scores``), standardised on the val split;
* ``margin_c``: how far the measurement lies inside (> 0) or outside (< 0) criterion ``c``'s
  range, in the criterion's unit (``RANGES``: 10 bpm, 20 ms, 0.5 mV, 15°, …), clipped to ±3; a
  yes/no criterion (low voltage) gives ±1; a sinus criterion whose rate is met without a P wave
  gives −3 (the rhythm is not sinus);
* ``unknown_c``: 1 where the measurement is None (no P wave: no PR; T too flat: no QT; …) or
  cannot be read (QTc and the LVH voltages over a QRS of 120 ms or more:
  ``ecgtool.measured_findings.UNREADABLE_OVER_WIDE_QRS``), its margin then 0.

Fitted by ``ecgtool.calibration.logistic_fit`` (Newton's method on Platt's smoothed targets) with a
small ridge penalty (``RIDGE``) on everything but the intercept, so that a criterion that separates the val records perfectly gives a
large weight, not an infinite one. The operating point and the F1 floor follow the same rule as the
model-only calibration (``ecgtool.calibration.operating_point``), on the combined probability.

Where a record was not measured (``predict --no-measurements``), the model-only calibration reads
it; where the finding has too few val labels to fit (the axis deviations: PTB-XL states no axis),
the criterion alone decides (``ecgtool.measured_findings``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np

from ecgtool.calibration import (
    MIN_F1,
    MIN_POSITIVES,
    PRESENT_PROBABILITY,
    OperatingPoint,
    counts_at,
    logistic_fit,
    operating_point,
)
from ecgtool.measure import Measurements, criteria
from ecgtool.measure.criteria import (
    BRADYCARDIA_BPM,
    COMPLETE_BBB_QRS_MS,
    CORNELL_MV,
    CRITERIA,
    FIRST_DEGREE_AV_BLOCK_PR_MS,
    INCOMPLETE_BBB_QRS_MS,
    LEFT_AXIS_DEG,
    LONG_QTC_MS,
    RIGHT_AXIS_DEG,
    SOKOLOW_LYON_MV,
    TACHYCARDIA_BPM,
)
from ecgtool.measured_findings import SUPPORTED_BY, readable
from ecgtool.metrics import auroc

METHOD = "logistic(reading score, criterion margins)"
RIDGE = 1.0  # L2 penalty on the weights (not the intercept), in units of the log-likelihood
MARGIN_CLIP = 3.0

# Criterion → (low, high, unit): inside the range [low, high] the criterion is met; the margin is
# min(value − low, high − value) / unit. The limits are criteria.py's (sex unknown: the higher).
RANGES: dict[str, tuple[float, float, float]] = {
    "left_axis_deviation": (-90.0, LEFT_AXIS_DEG, 15.0),
    "right_axis_deviation": (RIGHT_AXIS_DEG, 180.0, 15.0),
    "sinus_bradycardia": (-math.inf, BRADYCARDIA_BPM, 10.0),
    "bradycardia": (-math.inf, BRADYCARDIA_BPM, 10.0),
    "sinus_tachycardia": (TACHYCARDIA_BPM, math.inf, 10.0),
    "tachycardia": (TACHYCARDIA_BPM, math.inf, 10.0),
    "first_degree_av_block": (FIRST_DEGREE_AV_BLOCK_PR_MS, math.inf, 20.0),
    "long_qt": (max(LONG_QTC_MS.values()), math.inf, 20.0),
    "lvh_sokolow_lyon": (SOKOLOW_LYON_MV, math.inf, 0.5),
    "lvh_cornell": (max(CORNELL_MV.values()), math.inf, 0.5),
    "qrs_complete_bbb_width": (COMPLETE_BBB_QRS_MS, math.inf, 10.0),
    "qrs_incomplete_bbb_width": (INCOMPLETE_BBB_QRS_MS, COMPLETE_BBB_QRS_MS, 5.0),
}
YES_NO = ("low_voltage_limb", "low_voltage_chest")
EVERY_CRITERION = tuple(CRITERIA)
SINUS = ("sinus_bradycardia", "sinus_tachycardia")

def criterion_margins(measurements: Measurements | None, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(margins, unknown) of ``names`` for one record: each criterion's margin (0 where unknown)
    and 1.0 where its measurement is None (or the record was not measured)."""
    margins, unknown = np.zeros(len(names)), np.ones(len(names))
    if measurements is None:
        return margins, unknown
    checks = criteria(measurements)  # once per record: every criterion at a time
    for k, name in enumerate(names):
        check = checks[name]
        if check.value is None or not readable(measurements, name):
            continue
        unknown[k] = 0.0
        if name in YES_NO:
            margins[k] = 1.0 if check.value else -1.0
        elif name in SINUS and measurements.values.get("p_wave_present") is False:
            margins[k] = -MARGIN_CLIP
        else:
            low, high, unit = RANGES[name]
            margins[k] = np.clip(min(check.value - low, high - check.value) / unit, -MARGIN_CLIP, MARGIN_CLIP)
    return margins, unknown


def margin_matrix(measurements: list[Measurements | None], names: tuple[str, ...]) -> np.ndarray:
    """(n, 2 · len(names)): each record's margins, then its unknown flags."""
    rows = [np.concatenate(criterion_margins(m, names)) for m in measurements]
    return np.asarray(rows, dtype=np.float64).reshape(len(measurements), 2 * len(names))


@dataclass(frozen=True)
class CombinedCalibration:
    """One finding's model-and-measurement calibration (``weights`` empty: not fitted, ``reason``)."""

    finding: str
    criteria: tuple[str, ...]
    positives: int
    negatives: int
    score_centre: float = 0.0
    score_spread: float = 1.0
    weights: tuple[float, ...] = ()  # score, then each criterion's margin, then each one's unknown flag
    bias: float = 0.0
    floor: float = 0.0
    ceiling: float = 1.0
    operating_point: OperatingPoint | None = None  # threshold on the combined probability
    val_auroc: dict | None = None  # {"model": …, "combined": …} on the val records it was fitted on
    reason: str = ""

    @property
    def fitted(self) -> bool:
        return bool(self.weights)

    def probability(self, scores: np.ndarray, margins: np.ndarray) -> np.ndarray:
        """P(present) for reading ``scores`` (n,) and ``margin_matrix`` rows (n, 2 · criteria)."""
        z = (np.asarray(scores, dtype=np.float64) - self.score_centre) / self.score_spread
        features = np.column_stack([z, np.asarray(margins, dtype=np.float64)])
        return np.clip(_sigmoid(features @ np.asarray(self.weights) + self.bias), self.floor, self.ceiling)

    def present(self, probabilities: np.ndarray) -> np.ndarray | None:
        """Called present at the operating point; None where there is none."""
        if self.operating_point is None:
            return None
        return np.asarray(probabilities) >= self.operating_point.threshold

    def as_dict(self) -> dict:
        entry = {"finding": self.finding, "criteria": list(self.criteria), "positives": self.positives,
                 "negatives": self.negatives, "method": METHOD if self.fitted else None}
        if not self.fitted:
            return {**entry, "reason": self.reason}
        return {**entry, "score_centre": self.score_centre, "score_spread": self.score_spread,
                "weights": list(self.weights), "bias": self.bias, "floor": self.floor, "ceiling": self.ceiling,
                "operating_point": asdict(self.operating_point) if self.operating_point else None,
                "val_auroc": self.val_auroc, **({"reason": self.reason} if self.reason else {})}

    @classmethod
    def from_dict(cls, entry: dict) -> "CombinedCalibration":
        """Read back, checking what the entry claims: known criteria that support the finding, one
        weight per feature, finite numbers, a spread above zero."""
        finding, names = entry["finding"], tuple(entry["criteria"])
        if names != SUPPORTED_BY.get(finding, ()):
            raise ValueError(f"combined calibration of {finding}: criteria {list(names)} are not the ones that "
                             f"support it ({list(SUPPORTED_BY.get(finding, ()))})")
        if entry["method"] is None:
            return cls(finding, names, int(entry["positives"]), int(entry["negatives"]), reason=entry.get("reason", ""))
        if entry["method"] != METHOD:
            raise ValueError(f"combined calibration of {finding}: unknown method {entry['method']!r}")
        weights = tuple(float(w) for w in entry["weights"])
        if len(weights) != 1 + 2 * len(names):
            raise ValueError(f"combined calibration of {finding}: {len(weights)} weights for {1 + 2 * len(names)} features")
        point = entry["operating_point"]
        numbers = [*weights, entry["bias"], entry["score_centre"], entry["score_spread"], entry["floor"],
                   entry["ceiling"], *([point["threshold"]] if point else [])]
        if not all(math.isfinite(float(v)) for v in numbers) or float(entry["score_spread"]) <= 0:
            raise ValueError(f"combined calibration of {finding} holds non-finite values or a zero spread")
        return cls(finding, names, int(entry["positives"]), int(entry["negatives"]), float(entry["score_centre"]),
                   float(entry["score_spread"]), weights, float(entry["bias"]), float(entry["floor"]),
                   float(entry["ceiling"]), OperatingPoint(**point) if point else None, entry.get("val_auroc"),
                   entry.get("reason", ""))


def fit_combined(finding: str, scores: np.ndarray, present: np.ndarray, measurements: list[Measurements | None],
                 **options) -> CombinedCalibration:
    """Fit one finding's combination on its val scores, labels and measurements (``options``:
    ``min_positives``, ``rule``, ``target_sensitivity``, ``min_f1``, as ``fit_finding`` takes them)."""
    return _fit_on_margins(finding, scores, present, margin_matrix(measurements, SUPPORTED_BY[finding]), **options)


def _fit_on_margins(finding: str, scores: np.ndarray, present: np.ndarray, margins: np.ndarray,
                    min_positives: int = MIN_POSITIVES, rule: str = "max_f1", target_sensitivity: float | None = None,
                    min_f1: float = MIN_F1) -> CombinedCalibration:
    """``fit_combined`` on the ``margin_matrix`` rows of the finding's own criteria."""
    names = SUPPORTED_BY[finding]
    scores = np.asarray(scores, dtype=np.float64)
    present = np.asarray(present, dtype=bool)
    positives, negatives = int(present.sum()), int((~present).sum())
    if positives < min_positives or negatives < min_positives:
        fewer = "positives" if positives < min_positives else "negatives"
        return CombinedCalibration(finding, names, positives, negatives,
                                   reason=f"{min(positives, negatives)} val {fewer} (at least {min_positives} needed)")
    centre, spread = float(scores.mean()), float(scores.std()) or 1.0
    features = np.column_stack([(scores - centre) / spread, margins])
    weights, bias = logistic_fit(features, present, ridge=RIDGE)
    n = positives + negatives
    fitted = CombinedCalibration(finding, names, positives, negatives, centre, spread, tuple(weights), bias,
                                 1.0 / (n + 2), (n + 1.0) / (n + 2))
    probabilities = fitted.probability(scores, features[:, 1:])
    fitted = replace(fitted, val_auroc={"model": auroc(scores, present), "combined": auroc(probabilities, present)})
    if rule == "probability":
        point = counts_at(probabilities, present, PRESENT_PROBABILITY, f"probability>={PRESENT_PROBABILITY:g}")
    else:
        point = operating_point(probabilities, present, target_sensitivity if rule == "sensitivity" else None)
    if point.f1 < min_f1:
        return replace(fitted, reason=f"val F1 {point.f1:.2f} at its operating point (below {min_f1:g}): never called present")
    return replace(fitted, operating_point=point)


def fit_all_combined(finding_ids: list[str], scores: np.ndarray, findings: np.ndarray,
                     measurements: list[Measurements | None], **options) -> list[CombinedCalibration]:
    """A combination for every finding of ``finding_ids`` that a criterion supports, in that order."""
    margins = margin_matrix(measurements, EVERY_CRITERION)  # each record's criteria once
    return [_fit_on_margins(finding, scores[:, j], findings[:, j].astype(bool), margins[:, _columns(finding)],
                            **options)
            for j, finding in enumerate(finding_ids) if finding in SUPPORTED_BY]


def _columns(finding: str) -> list[int]:
    """The columns of a ``margin_matrix`` of ``EVERY_CRITERION`` that hold ``finding``'s own
    criteria: their margins, then their unknown flags."""
    own = [EVERY_CRITERION.index(name) for name in SUPPORTED_BY[finding]]
    return own + [len(EVERY_CRITERION) + k for k in own]


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=np.float64)))


def calibrated_columns(calibrations: list, combined: list[CombinedCalibration], similarity: np.ndarray,
                       measurements: list[Measurements | None] | None = None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What a calibrated bundle says of each finding of each record, ``(B, n_findings)`` each:
    the probability of presence (NaN: uncalibrated), the call at the operating point (-1: no
    operating point, 0 below, 1 at or above) and whether the measurement took part (True where a
    fitted combination read the record's measurement).

    ``calibrations`` are the model-only ``FindingCalibration``s in the bundle's finding order;
    ``combined`` the fitted ``CombinedCalibration``s; ``measurements`` one per record (None: not
    measured, read by the model-only calibration). Exclusions are applied afterwards; where
    neither has an operating point, ``ecgtool.measured_findings`` lets the criterion decide.
    """
    probability = np.full(similarity.shape, np.nan)
    present = np.full(similarity.shape, -1, dtype=np.int8)
    for j, calibration in enumerate(calibrations):
        if calibration.calibrated:
            probability[:, j] = calibration.probability(similarity[:, j])
            called = calibration.present(similarity[:, j])
            if called is not None:
                present[:, j] = called
    by_measurement = np.zeros(similarity.shape, dtype=bool)
    if measurements is None:
        return probability, present, by_measurement
    rows = np.array([m is not None for m in measurements], dtype=bool)
    if not rows.any():
        return probability, present, by_measurement
    index = {c.finding: j for j, c in enumerate(calibrations)}
    margins = margin_matrix([m for m, kept in zip(measurements, rows) if kept], EVERY_CRITERION)  # criteria once
    for combination in combined:
        if not combination.fitted or combination.finding not in index:
            continue
        j = index[combination.finding]
        p = combination.probability(similarity[rows, j], margins[:, _columns(combination.finding)])
        probability[rows, j] = p
        called = combination.present(p)
        present[rows, j] = -1 if called is None else called
        by_measurement[rows, j] = True
    return probability, present, by_measurement
