"""The measurements every ECG machine prints: rate, PR, QRS, QT/QTc, axes, voltages, ST at J+60.

``measure(signal)`` reads a canonical ECG (12 × 5000 float32 mV at 500 Hz, ``ecgtool.signal``
lead order) and returns ``Measurements``: each value a number or None with the reason, the median
beats and their fiducial points. ``criteria(measurements)`` decides the findings that a
measurement defines (axis deviation, brady-/tachycardia, first-degree AV block, long QT, low and
high voltage, QRS widening). The method, keys, reasons and thresholds with their sources are in
docs/measurements.md.

The program, in the order it runs (one module each):

1. ``leads``: flat or missing leads, and leads with more than 0.05 mV of fast noise, are left out;
2. ``detect``: QRS complexes, fused across the independent leads; ``intervals.rate``: RR, rate,
   RR irregularity;
3. ``pacing``: pacemaker spikes before the QRS;
4. ``filters.remove_baseline`` and ``beats``: the median beat per lead, from the beats of the
   dominant QRS morphology;
5. ``fiducials``: P onset, QRS onset and offset, T offset from the independent leads together;
6. ``intervals.durations``, ``axes``, ``voltages``: the values; ``criteria``: the findings.
"""

from __future__ import annotations

import numpy as np

from ecgtool.measure.axes import WAVES as _AXIS_KEYS
from ecgtool.measure.axes import axes as _axes
from ecgtool.measure.beats import median_beats
from ecgtool.measure.criteria import CRITERIA, Criterion, criteria
from ecgtool.measure.detect import detect_qrs
from ecgtool.measure.fiducials import locate, pr_level
from ecgtool.measure.filters import remove_baseline
from ecgtool.measure.intervals import durations, rate
from ecgtool.measure.leads import INDEPENDENT, NOISY_MV, describe, fast_noise_mv, flat_leads
from ecgtool.measure.pacing import paced_beats
from ecgtool.measure.quantiles import median as _median
from ecgtool.measure.result import KEYS, Measurements
from ecgtool.measure.voltages import qrs_voltages, st_j60
from ecgtool.signal import LEADS, SAMPLING_RATE

__all__ = ["CRITERIA", "KEYS", "Criterion", "Measurements", "criteria", "measure"]

MIN_SECONDS = 2.0
MIN_LEADS = 3
_MORPHOLOGY_KEYS = ("p_wave_present", "pr_ms", "qrs_ms", "qt_ms", "qtc_ms", "qtcf_ms", *_AXIS_KEYS,
                    "sokolow_lyon_mv", "cornell_mv", "low_voltage_limb", "low_voltage_chest",
                    "limb_qrs_mv", "chest_qrs_mv", "st_j60_mv")


def measure(signal: np.ndarray, sampling_rate: float = SAMPLING_RATE, detector: str = "fused") -> Measurements:
    """Measure one 12-lead ECG.

    Parameters
    ----------
    signal : numpy.ndarray
        (12, n) mV in ``ecgtool.signal.LEADS`` order, as ``canonicalize`` makes it (trailing zero
        padding is ignored). Non-finite samples mark a lead as missing.
    sampling_rate : float
        Hz (500 for canonical signals).
    detector : {"fused", "xqrs"}
        QRS detector (``ecgtool.measure.detect``): the fast fused one, or wfdb's XQRS per lead.

    Returns
    -------
    Measurements
        Never raises on a bad ECG: what cannot be measured is None with the reason.

    Raises
    ------
    ValueError
        ``signal`` is not (12, n), or ``detector`` is unknown.

    Examples
    --------
    >>> m = measure(canonical.signal)
    >>> m["qrs_ms"], m.reasons.get("pr_ms")
    (92, None)
    """
    x = np.asarray(signal, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != len(LEADS):
        raise ValueError(f"expected a ({len(LEADS)}, n) signal in {', '.join(LEADS)} order, got shape {x.shape}")
    x = x[:, : _valid_length(x)]
    if x.shape[1] == 0:
        return _nothing("every lead is flat (all zeros)", np.ones(len(LEADS), dtype=bool), sampling_rate)
    if x.shape[1] < MIN_SECONDS * sampling_rate:
        return _nothing(f"record shorter than {MIN_SECONDS:g} s (before any zero padding)", flat_leads(x),
                        sampling_rate)
    flat = flat_leads(x)
    if flat.any():
        x = np.where(flat[:, None], 0.0, x)  # a missing lead's NaN must not reach the spatial sums
    if (~flat[INDEPENDENT]).sum() < MIN_LEADS:
        return _nothing(f"fewer than {MIN_LEADS} of the 8 independent leads carry a signal (flat or missing)",
                        flat, sampling_rate)
    qrs = detect_qrs(x, sampling_rate, ~flat, method=detector)
    values, reasons = rate(qrs, sampling_rate)
    notes: list[str] = []
    noise = fast_noise_mv(x)
    paced = paced_beats(x, noise, qrs, sampling_rate, ~flat)
    median = median_beats(remove_baseline(x, qrs, sampling_rate), qrs, sampling_rate, ~flat) if qrs.size else None
    if median is None:
        why = "no QRS complex detected" if qrs.size == 0 else "no complete beat (P to T) within the record"
        _unmeasured(values, reasons, why)
        return _result(values, reasons, notes, flat, np.zeros_like(flat), None, {}, qrs, sampling_rate)
    noisy = (noise > NOISY_MV) & ~flat
    unusable = flat | noisy
    leads = INDEPENDENT[~unusable[INDEPENDENT]]
    if median.excluded:
        notes.append(f"{median.excluded} beat(s) of another QRS morphology (ectopic or artefact) left out of the "
                     f"median beat of {median.used.size}")
    if leads.size < MIN_LEADS:
        noisy_names = ", ".join(LEADS[i] for i in INDEPENDENT if noisy[i])
        _unmeasured(values, reasons, f"fewer than {MIN_LEADS} of the 8 independent leads free of noise "
                                     f"(noisy: {noisy_names}; flat or missing: {sum(flat[INDEPENDENT])})")
        return _result(values, reasons, notes, flat, noisy, None, {}, qrs, sampling_rate)
    rr_s = float(_median(qrs[1:] - qrs[:-1])) / sampling_rate if qrs.size >= 2 else None
    points, point_reasons = locate(median.beats, median.fiducial, sampling_rate, rr_s, leads, median.windows)
    onset = points["qrs_onset"]
    referred = median.beats - (pr_level(median.beats, onset, sampling_rate)[:, None] if onset is not None else 0.0)
    unusable_names = {LEADS[i] for i in np.flatnonzero(unusable)}
    for part in (durations(points, point_reasons, sampling_rate, values.get("rr_ms")),
                 _axes(referred, points, point_reasons, sampling_rate, unusable_names),
                 qrs_voltages(referred, points, point_reasons, unusable_names),
                 st_j60(referred, points, point_reasons, sampling_rate, unusable_names)):
        values.update(part[0])
        reasons.update(part[1])
    values["p_wave_present"] = _p_present(points, point_reasons)
    if values["p_wave_present"] is None:
        reasons["p_wave_present"] = point_reasons.get("p_onset", "P wave not assessed")
    if paced.any():
        share = f"pacing spikes before {int(paced.sum())} of {paced.size} QRS complexes"
        if paced.mean() >= 0.5:
            _unmeasured(values, reasons, f"paced rhythm ({share}): paced complexes are not measured")
        else:
            notes.append(share)
    fiducials = {**points, "qrs_fiducial": median.fiducial}
    return _result(values, reasons, notes, flat, noisy, referred, fiducials, qrs, sampling_rate)


def _p_present(points: dict, point_reasons: dict) -> bool | None:
    if points["p_onset"] is not None:
        return True
    if point_reasons.get("p_onset", "").startswith("no P wave"):
        return False
    return None


def _valid_length(x: np.ndarray) -> int:
    """Samples before the zero padding that ``canonicalize`` adds to a short record."""
    if x.shape[1] == 0 or np.any(x[:, -1] != 0):
        return x.shape[1]
    nonzero = np.flatnonzero(np.any(x != 0, axis=0))
    return int(nonzero[-1]) + 1 if nonzero.size else 0


def _nothing(why: str, flat: np.ndarray, sampling_rate: float) -> Measurements:
    values = dict.fromkeys(KEYS)
    values["n_beats"] = 0
    return Measurements(values=values, reasons={key: why for key in KEYS if key != "n_beats"},
                        lead_quality=describe(flat, np.zeros_like(flat)), sampling_rate=float(sampling_rate))


def _unmeasured(values: dict, reasons: dict, why: str) -> None:
    """Everything but the rate: None, for one reason."""
    for key in _MORPHOLOGY_KEYS:
        values[key] = None
        reasons[key] = why


def _result(values: dict, reasons: dict, notes: list[str], flat: np.ndarray, noisy: np.ndarray,
            referred: np.ndarray | None, fiducials: dict, qrs: np.ndarray, sampling_rate: float) -> Measurements:
    return Measurements(
        values=values,
        # A reason stays for what is None, and for a per-lead dict whose unusable leads are None.
        reasons={key: why for key, why in reasons.items() if values.get(key) is None or isinstance(values[key], dict)},
        notes=tuple(notes),
        lead_quality=describe(flat, noisy),
        median_beats=None if referred is None else referred.astype(np.float32),
        fiducials=fiducials,
        qrs_samples=qrs,
        sampling_rate=float(sampling_rate),
    )
