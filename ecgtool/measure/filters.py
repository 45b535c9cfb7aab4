"""The few filters of the measurement program, in plain NumPy and linear in the samples.

None of them shifts a wave in time: the moving average is centred, the derivative symmetric, and
the baseline is taken out by subtracting a cubic spline through one isoelectric knot per beat
(Meyer CR, Keiser HN. Comput Biomed Res 1977;10:459–470) rather than by a high-pass filter, so
the ST segment keeps its level (the AHA accepts a 0.67 Hz high-pass for ST
measurement only when it is zero-phase; Kligfield et al., Circulation 2007;115:1306, Part I).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from scipy.interpolate import PPoly

KNOT_BEFORE_QRS_S = 0.1  # the PR segment: this long before the centre of the QRS energy
KNOT_WIDTH_S = 0.02


def running_sum(signal: np.ndarray) -> np.ndarray:
    """(…, n + 1) the sums of the first 0, 1, …, n samples along the last axis: a window's sum is the
    difference of two of them."""
    cumulative = np.empty(signal.shape[:-1] + (signal.shape[-1] + 1,))
    cumulative[..., 0] = 0.0
    signal.cumsum(axis=-1, out=cumulative[..., 1:])
    return cumulative


def moving_average(signal: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average over ``width`` samples along the last axis (edges: shorter windows)."""
    signal = np.asarray(signal, dtype=np.float64)
    n = signal.shape[-1]
    width = max(1, min(int(width), n))
    if width == 1:
        return signal.copy()
    cumulative = running_sum(signal)
    half = width // 2
    out = np.empty_like(signal)
    # Sample i averages [i − half, i − half + width), clipped to the signal: slices of the cumulative
    # sum, the inside worked on in place.
    inside = out[..., half: n - width + half + 1]
    np.subtract(cumulative[..., width:], cumulative[..., : n + 1 - width], out=inside)
    inside /= width
    out[..., :half] = cumulative[..., width - half: width] / np.arange(width - half, width)
    out[..., n - width + half + 1:] = (cumulative[..., n, None] - cumulative[..., n - width + 1: n - half]) / \
        np.arange(width - 1, half, -1)
    return out


def moving_average_at(signal: np.ndarray, width: int, positions: np.ndarray) -> np.ndarray:
    """``moving_average(signal, width)[..., positions]`` without averaging the other samples."""
    n = signal.shape[-1]
    cumulative = running_sum(signal)
    low = np.minimum(np.maximum(positions - width // 2, 0), n)
    high = np.minimum(np.maximum(positions - width // 2 + width, 0), n)
    return (cumulative[..., high] - cumulative[..., low]) / (high - low)


def central_difference(signal: np.ndarray) -> np.ndarray:
    """``np.gradient(signal, axis=-1)`` (unit spacing, one-sided at the ends), without its overhead.

    The same arithmetic, so the same numbers: (x[i+1] − x[i−1]) / 2 inside, x[1] − x[0] and
    x[−1] − x[−2] at the ends. ``signal`` needs at least 2 samples.
    """
    out = np.empty(signal.shape)
    out[..., 1:-1] = (signal[..., 2:] - signal[..., :-2]) / 2.0
    out[..., 0] = signal[..., 1] - signal[..., 0]
    out[..., -1] = signal[..., -1] - signal[..., -2]
    return out


def qrs_slope(signal: np.ndarray, sampling_rate: float) -> np.ndarray:
    """|slope| of ``signal`` (leads, samples) where QRS energy dominates: the difference over 8 ms
    of the 20 ms moving average, a band-pass peaking near 20 Hz (zero at 50 Hz, wander and most of
    the T wave's energy at 1/5 or less of its peak gain), in mV per sample step."""
    n = signal.shape[-1]
    width = max(1, round(0.02 * sampling_rate))
    step = max(1, round(0.004 * sampling_rate))
    cumulative = running_sum(signal)
    # The sum over [i + step − h, i + step − h + w) less the sum over [i − step − h, i − step − h + w),
    # h = w // 2, for the samples whose two windows lie inside the signal; 0 elsewhere. Slices of the
    # cumulative sum, worked on in place: few passes over the record, and no large temporaries.
    h = width // 2
    first, last = step + h, n - step - (width - h)
    if last <= first:  # too short for the two windows
        return np.zeros(signal.shape)
    slope = np.empty(signal.shape)
    slope[..., :first] = 0.0
    slope[..., last + 1:] = 0.0
    inside = slope[..., first: last + 1]
    np.subtract(cumulative[..., first + step - h + width: last + step - h + width + 1],
                cumulative[..., first + step - h: last + step - h + 1], out=inside)
    inside -= cumulative[..., first - step - h + width: last - step - h + width + 1] - \
        cumulative[..., first - step - h: last - step - h + 1]
    np.abs(inside, out=inside)
    inside /= width
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
    if knots.size < 4:
        samples = np.clip(np.arange(n), knots[0], knots[-1])
        segment = np.clip(np.searchsorted(knots, samples, side="right") - 1, 0, knots.size - 2)
        weight = (samples - knots[segment]) / (knots[segment + 1] - knots[segment])
        return signal - (levels[:, segment] * (1.0 - weight) + levels[:, segment + 1] * weight)
    # The spline evaluated between the end knots only; the held levels are its values there.
    first, last = knots[0], knots[-1]
    wander = _not_a_knot_spline(knots, levels)(np.arange(first, last + 1, dtype=np.float64)).T
    out = np.empty(signal.shape)
    np.subtract(signal[:, :first], wander[:, :1], out=out[:, :first])
    np.subtract(signal[:, first: last + 1], wander, out=out[:, first: last + 1])
    np.subtract(signal[:, last + 1:], wander[:, -1:], out=out[:, last + 1:])
    return out


def _not_a_knot_spline(knots: np.ndarray, levels: np.ndarray) -> PPoly:
    """The cubic spline through ``levels`` (leads, knots) at ``knots`` (increasing, at least 4)
    whose third derivative is continuous at the second and the last but one knot (not-a-knot), as a
    ``scipy.interpolate.PPoly`` of the knot's sample index.

    Built as ``scipy.interpolate.CubicSpline(knots, levels, axis=1)`` builds it (the same banded
    system and arithmetic, so the same numbers) without its input checks, which cost more than the
    solve for a few dozen knots.
    """
    from scipy.interpolate import PPoly
    from scipy.linalg import solve_banded

    x = knots.astype(np.float64)
    dx = np.diff(x)
    y = levels.T
    dxr = dx[:, None]
    slope = np.diff(y, axis=0) / dxr
    # The tridiagonal system for the first derivatives at the knots, in solve_banded's (1, 1) form.
    bands = np.zeros((3, x.size))
    bands[1, 1:-1] = 2 * (dx[:-1] + dx[1:])
    bands[0, 2:] = dx[:-1]
    bands[-1, :-2] = dx[1:]
    rhs = np.empty(y.shape)
    rhs[1:-1] = 3 * (dxr[1:] * slope[:-1] + dxr[:-1] * slope[1:])
    bands[1, 0] = dx[1]
    bands[0, 1] = x[2] - x[0]
    d = x[2] - x[0]
    rhs[0] = ((dxr[0] + 2 * d) * dxr[1] * slope[0] + dxr[0] ** 2 * slope[1]) / d
    bands[1, -1] = dx[-2]
    bands[-1, -2] = x[-1] - x[-3]
    d = x[-1] - x[-3]
    rhs[-1] = (dxr[-1] ** 2 * slope[-2] + (2 * d + dxr[-1]) * dxr[-2] * slope[-1]) / d
    derivative = solve_banded((1, 1), bands, rhs, overwrite_ab=True, overwrite_b=True, check_finite=False)
    # Hermite form: each piece's cubic, quadratic, linear and constant coefficients.
    t = (derivative[:-1] + derivative[1:] - 2 * slope) / dxr
    coefficients = np.stack((t / dxr, (slope - derivative[:-1]) / dxr - t, derivative[:-1], y[:-1]))
    return PPoly.construct_fast(coefficients, x)
