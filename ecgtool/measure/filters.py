"""The few filters of the measurement program, in plain NumPy and linear in the samples.

None of them shifts a wave in time: the moving average is centred, the derivative symmetric, and
the baseline is taken out by subtracting a cubic spline through one isoelectric knot per beat
(Meyer CR, Keiser HN. Comput Biomed Res 1977;10:459–470) rather than by a high-pass filter, so
the ST segment keeps its level (the AHA accepts a 0.67 Hz high-pass for ST
measurement only when it is zero-phase; Kligfield et al., Circulation 2007;115:1306, Part I).
"""

from __future__ import annotations

import numpy as np

KNOT_BEFORE_QRS_S = 0.1  # the PR segment: this long before the centre of the QRS energy
KNOT_WIDTH_S = 0.02


def moving_average(signal: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average over ``width`` samples along the last axis (edges: shorter windows)."""
    signal = np.asarray(signal, dtype=np.float64)
    n = signal.shape[-1]
    width = max(1, min(int(width), n))
    if width == 1:
        return signal.copy()
    cumulative = np.zeros(signal.shape[:-1] + (n + 1,))
    np.cumsum(signal, axis=-1, out=cumulative[..., 1:])
    half = width // 2
    out = np.empty_like(signal)
    # Sample i averages [i − half, i − half + width), clipped to the signal.
    out[..., half: n - width + half + 1] = (cumulative[..., width:] - cumulative[..., : n + 1 - width]) / width
    head = np.arange(half)
    out[..., :half] = cumulative[..., head - half + width] / (head - half + width)
    tail = np.arange(n - width + half + 1, n)
    out[..., tail] = (cumulative[..., n, None] - cumulative[..., tail - half]) / (n - tail + half)
    return out


def moving_average_at(signal: np.ndarray, width: int, positions: np.ndarray) -> np.ndarray:
    """``moving_average(signal, width)[..., positions]`` without averaging the other samples."""
    n = signal.shape[-1]
    cumulative = np.zeros(signal.shape[:-1] + (n + 1,))
    np.cumsum(signal, axis=-1, out=cumulative[..., 1:])
    low = np.clip(positions - width // 2, 0, n)
    high = np.clip(positions - width // 2 + width, 0, n)
    return (cumulative[..., high] - cumulative[..., low]) / (high - low)


def qrs_slope(signal: np.ndarray, sampling_rate: float) -> np.ndarray:
    """|slope| of ``signal`` (leads, samples) where QRS energy dominates: the difference over 8 ms
    of the 20 ms moving average, a band-pass peaking near 20 Hz (zero at 50 Hz, wander and most of
    the T wave's energy at 1/5 or less of its peak gain), in mV per sample step."""
    n = signal.shape[-1]
    width = max(1, round(0.02 * sampling_rate))
    step = max(1, round(0.004 * sampling_rate))
    cumulative = np.zeros(signal.shape[:-1] + (n + 1,))
    np.cumsum(signal, axis=-1, out=cumulative[..., 1:])
    # The sum over [i + step − h, i + step − h + w) less the sum over [i − step − h, i − step − h + w),
    # h = w // 2, for the samples whose two windows lie inside the signal; 0 elsewhere.
    h = width // 2
    first, last = step + h, n - step - (width - h)
    slope = np.zeros(signal.shape)
    if last > first:
        i = np.arange(first, last + 1)
        ahead = cumulative[..., i + step - h + width] - cumulative[..., i + step - h]
        behind = cumulative[..., i - step - h + width] - cumulative[..., i - step - h]
        slope[..., first: last + 1] = np.abs(ahead - behind) / width
    return slope


def remove_baseline(signal: np.ndarray, qrs_samples: np.ndarray, sampling_rate: float) -> np.ndarray:
    """``signal`` (leads, samples) less a cubic spline through each beat's PR-segment level.

    The knot of a beat is the mean of each lead over 20 ms, 100 ms before its QRS fiducial (the
    PR segment, or the very start of a wide QRS: the same point of every beat either way, so that
    what is left is the wander, and the isoelectric level is taken later on the median beat). With
    2 or 3 knots a straight line joins them; with fewer, the mean of each lead is taken off.
    """
    n = signal.shape[-1]
    half = max(1, round(KNOT_WIDTH_S * sampling_rate / 2))
    knots = qrs_samples - round(KNOT_BEFORE_QRS_S * sampling_rate)
    knots = knots[(knots - half >= 0) & (knots + half < n)]
    if knots.size < 2:
        return signal - signal.mean(axis=-1, keepdims=True)
    levels = signal[:, knots[:, None] + np.arange(-half, half + 1)].mean(axis=-1)  # (leads, knots)
    # Held level before the first knot and after the last: a cubic would run away there.
    samples = np.clip(np.arange(n), knots[0], knots[-1])
    if knots.size < 4:
        segment = np.clip(np.searchsorted(knots, samples, side="right") - 1, 0, knots.size - 2)
        weight = (samples - knots[segment]) / (knots[segment + 1] - knots[segment])
        return signal - (levels[:, segment] * (1.0 - weight) + levels[:, segment + 1] * weight)
    from scipy.interpolate import CubicSpline

    return signal - CubicSpline(knots, levels, axis=1)(samples)
