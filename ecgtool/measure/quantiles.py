"""Percentile and median along the last axis: NumPy's numbers without NumPy's overhead.

``np.percentile`` and ``np.median`` spend more time checking and moving axes than selecting on the
few hundred to few thousand samples the measurement program gives them (~30 µs a call, several
calls a record). These select with ``np.partition`` along the last axis and interpolate with the
same arithmetic as NumPy's default (``method="linear"``: Hyndman & Fan's 7th), so they return the
very same numbers for finite values; NaN is not looked for (the program zeroes missing leads
first). Most values the program gives them are magnitudes: non-negative doubles order as their
bit patterns read as 64-bit integers do, and integers partition ~30 % faster.
"""

from __future__ import annotations

import numpy as np


def percentile(values: np.ndarray, q: float) -> np.ndarray:
    """``np.percentile(values, q, axis=-1)`` for finite ``values``."""
    n = values.shape[-1]
    index = (n - 1) * (q / 100)
    below = int(index)
    above = min(below + 1, n - 1)
    gamma = index - below
    ordered = _partition(values, (below, above))
    low, high = ordered[..., below], ordered[..., above]
    step = high - low
    # NumPy's _lerp: from the nearer end, so that the result stays within [low, high].
    result = high - step * (1 - gamma) if gamma >= 0.5 else low + step * gamma
    return result[()]  # a scalar, as NumPy's, for 1-D values


def median(values: np.ndarray) -> np.ndarray:
    """``np.median(values, axis=-1)`` for finite ``values`` (of integers: the same number, the
    middle one left an integer)."""
    n = values.shape[-1]
    middle = n // 2
    if n % 2:
        # Two places rather than one: NumPy's single-place selection is the slower here.
        return _partition(values, (middle, min(middle + 1, n - 1)))[..., middle][()]
    ordered = _partition(values, (middle - 1, middle))
    return ((ordered[..., middle - 1] + ordered[..., middle]) / 2.0)[()]


def _partition(values: np.ndarray, kth: tuple[int, int]) -> np.ndarray:
    """``np.partition(values, kth, axis=-1)``, as integers when ``values`` are non-negative doubles."""
    as_integers = values.dtype == np.float64 and values.size and values.min() >= 0
    ordered = (values.view(np.int64) if as_integers else values).copy()
    ordered.partition(kth, axis=-1)
    return ordered.view(np.float64) if as_integers else ordered
