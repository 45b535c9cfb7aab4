"""Global fiducial points of the median beat, from all independent leads together.

As the measurement programs that IEC 60601-2-25 tests do, one set of points serves every lead:
the earliest onset and the latest offset seen across the leads, found on spatial signals of the
8 independent leads (I, II, V1–V6) rather than lead by lead.

* QRS onset and offset (J point): on the spatial slope S(t) = Σ|dx/dt| (10 ms-smoothed), the
  onset is where S last rises above ``QRS_ONSET_FRACTION`` of its QRS peak (above its floor, the
  10th percentile of S over the beat) before the QRS fiducial, after 16 ms below it; the offset
  is where S first stays below ``QRS_OFFSET_FRACTION`` for 16 ms after the fiducial.
* T offset: on the spatial magnitude M(t) = √Σ(x − x_PR)² of the low-passed (20 ms) leads, the
  trapezium area method (Zhang Q, Illanes Manriquez A, Médigue C, Papelier Y, Sorine M. IEEE Trans
  Biomed Eng 2006;53:2544–2552) from the steepest descent after the T peak, with x_r 200 ms later
  (or 100 ms before the next QRS). The classic tangent method (the tangent at that steepest
  descent down to the level M settles at) was tried first: on the 10 public files that carry a
  machine's own QT (GE 12SL, Philips, Mortara) it fell 26 ± 9 ms short of the machines, the
  trapezium −1 ± 9 ms (docs/measurements.md).
* P wave: sought between 50 ms after the previous beat's T wave ends (or 450 ms before the QRS
  onset) and 20 ms before the QRS onset, around the point where the low-passed leads move most
  (a level that differs between the T-P and PR segments does not move). Present when it repeats
  from beat to beat: its peak-to-peak excursion, over the leads together, at least
  ``P_MIN_SNR`` times the beat-to-beat residual there (and ``P_MIN_MV`` in some lead).
  Fibrillatory waves, flutter waves not locked to the QRS and dissociated P waves average out of
  the median and fail this test. P onset is where the spatial magnitude, referred to the PR
  level, last rises above ``P_EDGE_FRACTION`` of its peak above the level before it, moved back
  along its tangent there to that level (a threshold alone puts an onset late by its height);
  P offset is where it first falls below the same fraction after the peak (for the P axis).

Every point is a sample index within the median beat, or None with the reason.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ecgtool.measure.beats import beat_to_beat_noise
from ecgtool.measure.filters import central_difference, moving_average
from ecgtool.measure.quantiles import percentile

QRS_ONSET_FRACTION = 0.04
QRS_OFFSET_FRACTION = 0.05
QRS_RUN_S = 0.016
QRS_SEARCH_S = (0.2, 0.25)  # before and after the fiducial
T_MIN_MV = 0.04
T_SEARCH_START_S = 0.08  # after the J point
T_REFERENCE_S = 0.2  # Zhang's x_r: this long after the steepest descent, or the next beat
QT_MAX_S = 0.7
P_WINDOW_S = 0.45  # before the QRS onset (PR up to ~0.42 s)
P_GAP_S = 0.02  # the P wave ends at least this long before the QRS onset
P_AFTER_T_S = 0.05
P_MIN_MV = 0.04
P_MIN_SNR = 4.0
P_EDGE_FRACTION = 0.15
P_TANGENT_MAX_S = 0.03
P_HALF_WIDTH_S = 0.12  # P edges are sought this far either side of where the P wave moves most

KEYS = ("p_onset", "p_peak", "p_offset", "qrs_onset", "qrs_offset", "t_peak", "t_offset")


def locate(beats: np.ndarray, fiducial: int, sampling_rate: float, rr_s: float | None,
           leads: np.ndarray, beat_windows: Callable[[np.ndarray, slice], np.ndarray] | None = None
           ) -> tuple[dict, dict]:
    """Fiducial points of median ``beats`` (12, n) around the QRS fiducial at index ``fiducial``.

    Parameters
    ----------
    beats : numpy.ndarray
        (12, n) median beats, mV, baseline wander removed.
    fiducial : int
        The QRS fiducial's index within ``beats``.
    sampling_rate : float
        Hz.
    rr_s : float or None
        The median RR interval, which bounds the T-wave search (the next beat) and the P-wave search
        (the previous T wave); None when there is only one beat.
    leads : numpy.ndarray
        Indices of the leads to use (the independent leads that are neither flat nor noisy).
    beat_windows : callable, optional
        ``(leads, span) → (leads, beats, span)`` the beats behind the median over a span of its
        samples (``MedianBeats.windows``), for the P-wave test.

    Returns
    -------
    points : dict
        ``KEYS`` → sample index within ``beats`` or None.
    reasons : dict
        Key → why it is None.
    """
    fs = sampling_rate
    points: dict[str, int | None] = dict.fromkeys(KEYS)
    reasons: dict[str, str] = {}
    x = beats[leads]
    n = x.shape[1]
    slope = moving_average(np.abs(central_difference(x)).sum(axis=0) * fs, round(0.01 * fs))
    onset, offset = _qrs_bounds(slope, fiducial, fs)
    if onset is None or offset is None:
        reasons.update(dict.fromkeys(KEYS, "QRS onset or offset not found in the median beat"))
        return points, reasons
    points["qrs_onset"], points["qrs_offset"] = onset, offset
    baseline = pr_level(beats, onset, fs)
    smooth = moving_average(x - baseline[leads, None], round(0.02 * fs))
    rr = None if rr_s is None else round(rr_s * fs)
    t_peak, t_offset, why = _t_end(smooth, onset, offset, rr, fs, n)
    points["t_peak"], points["t_offset"] = t_peak, t_offset
    if t_offset is None:
        reasons["t_offset"] = reasons["t_peak"] = why
    p_peak, p_onset, p_offset, why = _p_wave(smooth, onset, t_offset, rr, fs, beat_windows, beats, leads)
    points.update(p_peak=p_peak, p_onset=p_onset, p_offset=p_offset)
    if p_onset is None:
        reasons.update(dict.fromkeys(("p_onset", "p_peak", "p_offset"), why))
    return points, reasons


def pr_level(beats: np.ndarray, qrs_onset: int, sampling_rate: float) -> np.ndarray:
    """(12,) each lead's mean over the 20 ms before the QRS onset (the end of the PR segment): the
    isoelectric reference of every amplitude."""
    start = max(0, qrs_onset - round(0.02 * sampling_rate))
    return beats[:, start: max(start + 1, qrs_onset)].mean(axis=1)


def _runs_below(below: np.ndarray, run: int) -> tuple[np.ndarray, np.ndarray]:
    """(ends, starts): ends[i] when below[i-run+1 .. i] all hold; starts[i] when below[i .. i+run-1] do."""
    counts = np.concatenate([[0], np.cumsum(below)])
    n = below.size
    ends = np.zeros(n, dtype=bool)
    ends[run - 1:] = counts[run:] - counts[:n - run + 1] == run
    starts = np.zeros(n, dtype=bool)
    starts[: n - run + 1] = ends[run - 1:]
    return ends, starts


def _qrs_bounds(slope: np.ndarray, fiducial: int, fs: float) -> tuple[int | None, int | None]:
    n = slope.size
    near = slice(max(0, fiducial - round(0.04 * fs)), min(n, fiducial + round(0.04 * fs) + 1))
    peak = slope[near].max()
    floor = percentile(slope, 10)
    if peak <= floor:
        return None, None
    run = max(1, round(QRS_RUN_S * fs))
    lo = max(0, fiducial - round(QRS_SEARCH_S[0] * fs))
    ends, _ = _runs_below(slope < floor + QRS_ONSET_FRACTION * (peak - floor), run)
    candidates = np.flatnonzero(ends[lo:fiducial]) + lo
    onset = int(candidates[-1]) + 1 if candidates.size else None
    hi = min(n, fiducial + round(QRS_SEARCH_S[1] * fs))
    _, starts = _runs_below(slope < floor + QRS_OFFSET_FRACTION * (peak - floor), run)
    candidates = np.flatnonzero(starts[fiducial:hi]) + fiducial
    offset = int(candidates[0]) if candidates.size else None
    return onset, offset


def _t_end(smooth: np.ndarray, onset: int, offset: int, rr: int | None, fs: float,
           n: int) -> tuple[int | None, int | None, str]:
    magnitude = np.sqrt((smooth**2).sum(axis=0))
    hi = min(n - 1, onset + round(QT_MAX_S * fs))
    if rr is not None:
        hi = min(hi, onset + rr - round(0.1 * fs))
    lo = offset + round(T_SEARCH_START_S * fs)
    if hi - lo < round(0.05 * fs):
        return None, None, "the next beat follows too closely to find the T wave's end"
    t_peak = lo + int(np.argmax(magnitude[lo:hi]))
    if magnitude[t_peak] - magnitude[t_peak:hi + 1].min() < T_MIN_MV:
        return None, None, f"T wave too flat to find its end (under {T_MIN_MV} mV spatial amplitude)"
    descent = central_difference(magnitude)
    reach = min(hi, t_peak + round(0.2 * fs))
    if reach <= t_peak + 1:
        return None, None, "T wave ends beyond the median beat or the next beat"
    steepest = t_peak + int(np.argmin(descent[t_peak:reach]))
    if descent[steepest] >= 0:
        return None, None, "no descending T-wave limb to find its end"
    # Trapezium area (Zhang et al.): the end is the point t after the steepest descent x_m that
    # maximises the area of the trapezium (x_m, M(x_m)), (t, M(t)), (x_r, M(t)), (x_r, M(x_m)).
    reference = min(hi, steepest + round(T_REFERENCE_S * fs))
    t = np.arange(steepest, reference + 1)
    area = (magnitude[steepest] - magnitude[t]) * (2 * reference - t - steepest)
    t_offset = int(t[np.argmax(area)])
    if t_offset >= reference:
        return None, None, "T wave ends beyond the median beat or the next beat"
    return t_peak, t_offset, ""


def _p_wave(smooth: np.ndarray, onset: int, t_offset: int | None, rr: int | None, fs: float,
            beat_windows: Callable[[np.ndarray, slice], np.ndarray] | None, beats: np.ndarray,
            leads: np.ndarray) -> tuple[int | None, int | None, int | None, str]:
    """(P peak, P onset, P offset, why not); ``beats`` holds all 12 leads, ``leads`` says which to use."""
    lo = max(0, onset - round(P_WINDOW_S * fs))
    if rr is not None and t_offset is not None:
        # The previous beat's T wave ends at t_offset − rr; its last, often steep, descent must not
        # pass for the P wave's movement.
        lo = max(lo, t_offset - rr + round(P_AFTER_T_S * fs))
    elif rr is not None:
        lo = max(lo, onset - rr // 2)
    hi = onset - round(P_GAP_S * fs)
    if hi - lo < round(0.08 * fs):
        return None, None, None, "no room for a P wave between the previous T wave and the QRS"
    segment = smooth[:, lo:hi]
    # The P wave is where the low-passed leads move most: a level that differs between the T-P and
    # the PR segments does not move, and would pull a search on amplitude alone to the window's
    # start. Its edges are then read on the amplitude, referred to the PR level, near it.
    energy = moving_average(np.abs(central_difference(segment)).sum(axis=0), round(0.04 * fs))
    centre = int(np.argmax(energy))
    reach = round(P_HALF_WIDTH_S * fs)
    local = slice(max(0, centre - reach), min(segment.shape[1], centre + reach + 1))
    wave = segment[:, local]
    peak_to_peak = np.ptp(wave, axis=1)
    if peak_to_peak.max() < P_MIN_MV:
        return None, None, None, f"no P wave (under {P_MIN_MV} mV in every lead before the QRS)"
    first = lo + local.start
    span = slice(first, first + wave.shape[1])
    windows = None if beat_windows is None else beat_windows(leads, span)
    if windows is not None and windows.shape[1] >= 3:
        # What repeats from beat to beat (the median's excursion) against what does not (each beat's
        # departure from the median, its offset removed), both low-passed, over the leads together.
        width = round(0.02 * fs)
        noise = beat_to_beat_noise(moving_average(windows, width), moving_average(beats[leads, span], width),
                                   slice(None))
        ratio = float(np.linalg.norm(peak_to_peak) / max(float(np.linalg.norm(noise)), 1e-6))
        if ratio < P_MIN_SNR:
            return None, None, None, ("no P wave locked to the QRS (activity before the QRS does not repeat from "
                                      f"beat to beat: {ratio:.1f} times the beat-to-beat residual, {P_MIN_SNR:g} "
                                      "needed)")
    magnitude = np.sqrt((wave**2).sum(axis=0))
    peak = int(np.argmax(magnitude))
    before, after = magnitude[: peak + 1], magnitude[peak:]
    floor = before.min()
    rising = np.flatnonzero(before < floor + P_EDGE_FRACTION * (magnitude[peak] - floor))
    falling = np.flatnonzero(after < after.min() + P_EDGE_FRACTION * (magnitude[peak] - after.min()))
    if rising.size == 0 or falling.size == 0:
        return None, None, None, "P wave not delineated within the window searched"
    # From where the P wave crosses the threshold, its tangent back down to the level before it:
    # a threshold alone puts the onset late by the height of the threshold.
    crossing = int(rising[-1]) + 1
    slope = float(central_difference(magnitude)[crossing])
    back = (magnitude[crossing] - floor) / slope if slope > 0 else 0.0
    p_onset = max(0, crossing - int(round(min(back, P_TANGENT_MAX_S * fs))))
    return first + peak, first + p_onset, first + peak + int(falling[0]), ""
