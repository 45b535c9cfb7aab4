"""Which leads the measurement program reads, and which it must leave out (flat, noisy)."""

from __future__ import annotations

import numpy as np

from ecgtool.measure.quantiles import median
from ecgtool.signal import LEADS

LIMB_LEADS = LEADS[:6]
CHEST_LEADS = LEADS[6:]
# III, aVR, aVL and aVF are linear combinations of I and II (Einthoven, Goldberger): summing all 12
# would count the frontal plane three times over. Spatial signals use the 8 independent leads.
INDEPENDENT_LEADS = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
INDEPENDENT = np.array([LEADS.index(lead) for lead in INDEPENDENT_LEADS])

FLAT_PEAK_TO_PEAK_MV = 0.02
# A lead whose fast noise (``fast_noise_mv``: muscle tremor, white noise) exceeds this is too noisy to
# measure on; see docs/measurements.md for how the leads of the PTB-XL records of ../shared fall.
NOISY_MV = 0.05
# The median |second difference| of white noise of σ is 0.6745·√6·σ.
_WHITE_NOISE_CURVATURE = 0.6745 * np.sqrt(6.0)


def index(lead: str) -> int:
    return LEADS.index(lead)


def flat_leads(signal: np.ndarray) -> np.ndarray:
    """(12,) True where a lead is missing (non-finite) or nearly flat (< 0.02 mV peak-to-peak)."""
    peak_to_peak = signal.max(axis=1) - signal.min(axis=1)  # NaN or inf where a sample is not finite
    return ~(np.isfinite(peak_to_peak) & (peak_to_peak >= FLAT_PEAK_TO_PEAK_MV))


def curvature(signal: np.ndarray, step: int = 1) -> np.ndarray:
    """(leads, ⌈(n − 2) / step⌉) |x[k+1] − 2x[k] + x[k−1]| at k = 1, 1 + step, …: what changes from
    one sample to the next (every ``step``-th sample of it only, when that is all that is needed)."""
    n = signal.shape[1]
    return np.abs(signal[:, 2::step] - 2.0 * signal[:, 1: n - 1: step] + signal[:, : n - 2: step])


def fast_noise_mv(signal: np.ndarray) -> np.ndarray:
    """(leads,) the σ of white noise that would give the median of ``curvature`` (taken on every
    5th sample). QRS complexes fill ~10 % of a record and leave the median alone; the slow waves
    of the ECG hardly curve from one 2 ms sample to the next."""
    return median(curvature(signal, step=5)) / _WHITE_NOISE_CURVATURE


def describe(flat: np.ndarray, noisy: np.ndarray) -> dict[str, str]:
    """Lead name → ``"flat"`` / ``"noisy"`` for the leads left out."""
    quality = {LEADS[i]: "flat" for i in np.flatnonzero(flat)}
    quality.update({LEADS[i]: "noisy" for i in np.flatnonzero(noisy & ~flat)})
    return quality
