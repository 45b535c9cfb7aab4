"""Per-finding calibration: from a label prompt's cosine similarity to the probability that the
finding is present, and an operating point that calls it present or absent.

Fitted on a store's validation split (never on its test split), per finding and per language:

* fewer than ``min_positives`` val positives (or fewer than ``min_positives`` negatives): no
  calibration and no operating point; the finding is reported as uncalibrated, never given an
  invented probability;
* from ``isotonic_min`` positives and negatives on: isotonic regression (pool-adjacent-violators),
  interpolated linearly between the pooled blocks' mean scores;
* between the two: Platt scaling, a logistic curve in the score fitted by Newton's method on
  Platt's smoothed targets ((P+1)/(P+2) and 1/(N+2)), so that few positives cannot make it 0 or 1.

Probabilities are kept inside [1/(n+2), (n+1)/(n+2)] for ``n`` val records: a few hundred ECGs
cannot support a certainty beyond that.

Operating point (the threshold on the score at and above which the finding is called present),
by ``rule``:

* ``max_f1`` (default): the val threshold of highest F1 (ties: the higher threshold); the
  probability at that threshold is often below 50 %: a call there trades precision for
  sensitivity the way F1 weighs them;
* ``probability``: where the calibrated probability reaches ``PRESENT_PROBABILITY`` (0.5): a
  finding is called present when it is more likely present than not (fewer, surer calls);
* ``sensitivity``: the highest val threshold whose sensitivity reaches ``target_sensitivity``.

A finding whose val F1 at that point is
below ``min_f1`` gets no operating point: it keeps its probability but is never called present
(a statement right less than one time in five is not one an ECG machine should print).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

CALIBRATION_FORMAT_VERSION = 3  # 3: adds the model-and-measurement combinations (ecgtool.combined_calibration)
READABLE_FORMAT_VERSIONS = (2, 3)  # 2: one calibration of the language-independent reading score (1: one per language)
MIN_POSITIVES = 10
ISOTONIC_MIN = 100
MIN_F1 = 0.2
PRESENT_PROBABILITY = 0.5
RULES = ("probability", "max_f1", "sensitivity")


@dataclass(frozen=True)
class OperatingPoint:
    threshold: float
    rule: str
    sensitivity: float
    specificity: float
    ppv: float
    true_positives: int
    false_negatives: int
    false_positives: int
    true_negatives: int

    @property
    def f1(self) -> float:
        return 2 * self.true_positives / max(1, 2 * self.true_positives + self.false_positives + self.false_negatives)


@dataclass(frozen=True)
class FindingCalibration:
    """One finding's calibration in one language (``method`` None: uncalibrated)."""

    finding: str
    positives: int
    negatives: int
    method: str | None
    reason: str = ""
    platt: tuple[float, float] | None = None  # probability = 1 / (1 + exp(-(a * score + b)))
    isotonic_scores: tuple[float, ...] = ()
    isotonic_probabilities: tuple[float, ...] = ()
    floor: float = 0.0
    ceiling: float = 1.0
    operating_point: OperatingPoint | None = None

    @property
    def calibrated(self) -> bool:
        return self.method is not None

    def present(self, scores: np.ndarray) -> np.ndarray | None:
        """Called present at the operating point; None where the finding has none."""
        if self.operating_point is None:
            return None
        return np.asarray(scores) >= self.operating_point.threshold

    def probability(self, scores: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of presence for ``scores`` (NaN when uncalibrated)."""
        scores = np.asarray(scores, dtype=np.float64)
        if self.method == "platt":
            a, b = self.platt
            values = _sigmoid(a * scores + b)
        elif self.method == "isotonic":
            values = np.interp(scores, self.isotonic_scores, self.isotonic_probabilities)
        else:
            return np.full(scores.shape, np.nan)
        return np.clip(values, self.floor, self.ceiling)

    def as_dict(self) -> dict:
        entry = {"finding": self.finding, "positives": self.positives, "negatives": self.negatives,
                 "method": self.method}
        if self.method is None:
            entry["reason"] = self.reason
            return entry
        if self.method == "platt":
            entry["platt"] = {"a": self.platt[0], "b": self.platt[1]}
        else:
            entry["isotonic"] = {"scores": list(self.isotonic_scores), "probabilities": list(self.isotonic_probabilities)}
        entry["floor"], entry["ceiling"] = self.floor, self.ceiling
        entry["operating_point"] = asdict(self.operating_point) if self.operating_point else None
        if self.reason:
            entry["reason"] = self.reason
        return entry

    @classmethod
    def from_dict(cls, entry: dict) -> "FindingCalibration":
        method = entry["method"]
        if method is None:
            return cls(entry["finding"], entry["positives"], entry["negatives"], None, entry.get("reason", ""))
        if method not in ("platt", "isotonic"):
            raise ValueError(f"unknown calibration method {method!r} for {entry['finding']}")
        platt = (float(entry["platt"]["a"]), float(entry["platt"]["b"])) if method == "platt" else None
        iso = entry.get("isotonic", {"scores": [], "probabilities": []})
        if method == "isotonic" and (len(iso["scores"]) != len(iso["probabilities"]) or not iso["scores"]
                                     or np.any(np.diff(iso["scores"]) < 0) or np.any(np.diff(iso["probabilities"]) < 0)):
            raise ValueError(f"isotonic calibration of {entry['finding']} is not a non-decreasing curve")
        point = entry["operating_point"]
        values = [*(platt or ()), *iso["scores"], *iso["probabilities"], entry["floor"], entry["ceiling"],
                  *([point["threshold"]] if point else [])]
        if not np.all(np.isfinite(values)):
            raise ValueError(f"calibration of {entry['finding']} holds non-finite values")
        return cls(entry["finding"], entry["positives"], entry["negatives"], method, entry.get("reason", ""), platt,
                   tuple(iso["scores"]), tuple(iso["probabilities"]), float(entry["floor"]), float(entry["ceiling"]),
                   OperatingPoint(**point) if point else None)


def fit_finding(finding: str, scores: np.ndarray, present: np.ndarray, min_positives: int = MIN_POSITIVES,
                isotonic_min: int = ISOTONIC_MIN, rule: str = "max_f1", target_sensitivity: float | None = None,
                min_f1: float = MIN_F1) -> FindingCalibration:
    """Calibrate one finding from its val scores and whether it is present in each val record."""
    scores = np.asarray(scores, dtype=np.float64)
    present = np.asarray(present, dtype=bool)
    positives, negatives = int(present.sum()), int((~present).sum())
    if positives < min_positives or negatives < min_positives:
        fewer = "positives" if positives < min_positives else "negatives"
        return FindingCalibration(finding, positives, negatives, None,
                                  f"{min(positives, negatives)} val {fewer} (at least {min_positives} needed)")
    n = positives + negatives
    floor, ceiling = 1.0 / (n + 2), (n + 1.0) / (n + 2)
    if positives >= isotonic_min and negatives >= isotonic_min:
        block_scores, block_probabilities = isotonic_fit(scores, present.astype(np.float64))
        fitted = FindingCalibration(finding, positives, negatives, "isotonic", "", None,
                                    tuple(block_scores), tuple(block_probabilities), floor, ceiling)
    else:
        fitted = FindingCalibration(finding, positives, negatives, "platt", "", platt_fit(scores, present),
                                    floor=floor, ceiling=ceiling)
    if rule == "probability":
        threshold = probability_threshold(fitted, PRESENT_PROBABILITY)
        if threshold is None:
            return replace(fitted, reason=f"its probability never reaches {PRESENT_PROBABILITY:.0%}: never called present")
        point = counts_at(scores, present, threshold, f"probability>={PRESENT_PROBABILITY:g}")
    else:
        point = operating_point(scores, present, target_sensitivity if rule == "sensitivity" else None)
    if point.f1 < min_f1:
        return replace(fitted, reason=f"val F1 {point.f1:.2f} at its operating point (below {min_f1:g}): never called present")
    return replace(fitted, operating_point=point)


def probability_threshold(calibration: FindingCalibration, probability: float) -> float | None:
    """The score at which the calibrated probability first reaches ``probability`` (None: never)."""
    if calibration.method == "platt":
        a, b = calibration.platt
        if a <= 0:
            return None
        threshold = (np.log(probability / (1 - probability)) - b) / a
        return float(threshold) if calibration.ceiling >= probability else None
    xs, ys = np.asarray(calibration.isotonic_scores), np.asarray(calibration.isotonic_probabilities)
    reaching = np.nonzero(ys >= probability)[0]
    if not len(reaching) or calibration.ceiling < probability:
        return None
    k = int(reaching[0])
    if k == 0:
        return float(xs[0])
    return float(xs[k - 1] + (probability - ys[k - 1]) * (xs[k] - xs[k - 1]) / (ys[k] - ys[k - 1]))


def platt_fit(scores: np.ndarray, present: np.ndarray, iterations: int = 100) -> tuple[float, float]:
    """Platt's logistic fit ``p = sigmoid(a * score + b)`` with smoothed targets (Newton–Raphson
    on the cross-entropy, with step halving; Lin, Lin & Weng 2007)."""
    scores = np.asarray(scores, dtype=np.float64)
    # Standardised scores keep Newton well conditioned; the result is mapped back.
    centre, spread = scores.mean(), scores.std() or 1.0
    (a,), b = logistic_fit(((scores - centre) / spread)[:, None], present, ridge=0.0, iterations=iterations)
    return float(a / spread), float(b - a * centre / spread)


def logistic_fit(features: np.ndarray, present: np.ndarray, ridge: float = 0.0,
                 iterations: int = 100) -> tuple[np.ndarray, float]:
    """Weights and intercept of ``P = sigmoid(features @ w + b)`` on Platt's smoothed targets
    ((P+1)/(P+2) and 1/(N+2)), with ``ridge / 2 · |w|²`` added to the cross-entropy (not on the
    intercept): Newton–Raphson with step halving. What ``platt_fit`` (one feature, no ridge) and
    ``ecgtool.combined_calibration`` (score and criterion margins) fit."""
    present = np.asarray(present, dtype=bool)
    x = np.column_stack([np.asarray(features, dtype=np.float64), np.ones(len(present))])
    positives, negatives = present.sum(), (~present).sum()
    target = np.where(present, (positives + 1.0) / (positives + 2.0), 1.0 / (negatives + 2.0))
    penalty = np.full(x.shape[1], float(ridge))
    penalty[-1] = 0.0
    theta = np.zeros(x.shape[1])
    theta[-1] = float(np.log((positives + 1.0) / (negatives + 1.0)))

    def loss(t: np.ndarray) -> float:
        z = x @ t
        return float(np.sum(np.logaddexp(0.0, z) - target * z) + 0.5 * np.sum(penalty * t * t))

    current = loss(theta)
    for _ in range(iterations):
        p = _sigmoid(x @ theta)
        gradient = x.T @ (p - target) + penalty * theta
        hessian = (x * np.maximum(p * (1 - p), 1e-12)[:, None]).T @ x + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hessian, gradient)
        scale, candidate = 1.0, current
        while scale > 1e-6:
            candidate = loss(theta - scale * step)
            if candidate <= current + 1e-12:
                break
            scale /= 2
        theta = theta - scale * step
        improvement, current = current - candidate, candidate
        if abs(improvement) < 1e-10 * max(1.0, abs(current)):
            break
    return theta[:-1], float(theta[-1])


def isotonic_fit(scores: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pool adjacent violators: the non-decreasing step fit of ``targets`` in ``scores``, as the
    blocks' mean scores and values (ties in score are pooled first)."""
    order = np.argsort(scores, kind="stable")
    scores, targets = np.asarray(scores, dtype=np.float64)[order], np.asarray(targets, dtype=np.float64)[order]
    unique, start = np.unique(scores, return_index=True)
    weights = np.diff(np.append(start, len(scores))).astype(np.float64)
    sums = np.add.reduceat(targets, start)
    score_sums = unique * weights
    blocks: list[list[float]] = []  # [weight, target sum, score sum]
    for w, t, s in zip(weights, sums, score_sums):
        blocks.append([w, t, s])
        while len(blocks) > 1 and blocks[-2][1] / blocks[-2][0] >= blocks[-1][1] / blocks[-1][0]:
            w2, t2, s2 = blocks.pop()
            blocks[-1][0] += w2
            blocks[-1][1] += t2
            blocks[-1][2] += s2
    block = np.array(blocks)
    return block[:, 2] / block[:, 0], block[:, 1] / block[:, 0]


def operating_point(scores: np.ndarray, present: np.ndarray, target_sensitivity: float | None = None) -> OperatingPoint:
    """The val threshold of highest F1 (or the highest reaching ``target_sensitivity``), with the
    val counts at it."""
    scores = np.asarray(scores, dtype=np.float64)
    present = np.asarray(present, dtype=bool)
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_present = scores[order], present[order]
    # Candidate thresholds: each distinct score; calling ">= t" present takes every record down to
    # the last one with that score.
    last_of_value = np.append(sorted_scores[1:] != sorted_scores[:-1], True)
    tp = np.cumsum(sorted_present)[last_of_value]
    fp = np.cumsum(~sorted_present)[last_of_value]
    thresholds = sorted_scores[last_of_value]
    positives = int(present.sum())
    if target_sensitivity is None:
        f1 = 2 * tp / (tp + fp + positives)
        index = int(np.argmax(f1))  # first maximum: the highest threshold among ties
        rule = "max_f1"
    else:
        reaching = np.nonzero(tp >= target_sensitivity * positives - 1e-9)[0]
        index = int(reaching[0])
        rule = f"sensitivity>={target_sensitivity:g}"
    return counts_at(scores, present, float(thresholds[index]), rule)


def counts_at(scores: np.ndarray, present: np.ndarray, threshold: float, rule: str = "") -> OperatingPoint:
    """Sensitivity, specificity and PPV of calling ``score >= threshold`` present."""
    return counts_of(np.asarray(scores) >= threshold, present, threshold, rule)


def counts_of(called: np.ndarray, present: np.ndarray, threshold: float = float("nan"), rule: str = "") -> OperatingPoint:
    """Counts, sensitivity, specificity and PPV of the calls ``called`` (present where True)."""
    called = np.asarray(called, dtype=bool)
    present = np.asarray(present, dtype=bool)
    tp, fn = int((called & present).sum()), int((~called & present).sum())
    fp, tn = int((called & ~present).sum()), int((~called & ~present).sum())
    return OperatingPoint(float(threshold), rule, _ratio(tp, tp + fn), _ratio(tn, tn + fp), _ratio(tp, tp + fp),
                          tp, fn, fp, tn)


def fit_all(finding_ids: list[str], scores: np.ndarray, findings: np.ndarray, **options) -> list[FindingCalibration]:
    """Calibrate every column of ``scores`` ``(n, n_findings)`` against the multi-hot ``findings``."""
    return [fit_finding(finding, scores[:, j], findings[:, j].astype(bool), **options)
            for j, finding in enumerate(finding_ids)]


def brier_score(probabilities: np.ndarray, present: np.ndarray) -> float:
    return float(np.mean((np.asarray(probabilities, dtype=np.float64) - np.asarray(present, dtype=np.float64)) ** 2))


def reliability_bins(probabilities: np.ndarray, present: np.ndarray, bins: int = 10) -> list[dict]:
    """Equal-width bins of predicted probability: count, mean predicted, observed frequency."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    present = np.asarray(present, dtype=np.float64)
    index = np.minimum((probabilities * bins).astype(int), bins - 1)
    rows = []
    for b in range(bins):
        members = index == b
        count = int(members.sum())
        rows.append({"low": b / bins, "high": (b + 1) / bins, "count": count,
                     "mean_probability": float(probabilities[members].mean()) if count else None,
                     "observed": float(present[members].mean()) if count else None})
    return rows


def expected_calibration_error(probabilities: np.ndarray, present: np.ndarray, bins: int = 10) -> float:
    """Count-weighted mean |observed − predicted| over equal-width probability bins."""
    rows = reliability_bins(probabilities, present, bins)
    total = sum(row["count"] for row in rows)
    return float(sum(row["count"] * abs(row["observed"] - row["mean_probability"]) for row in rows if row["count"]) / total)


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=np.float64)))


def _ratio(part: int, whole: int) -> float:
    return float(part / whole) if whole else float("nan")
