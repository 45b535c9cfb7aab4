"""Checks every reader test applies to a canonical record: identities, amplitudes, heart rate."""

from __future__ import annotations

import numpy as np
from scipy.signal import butter, filtfilt, find_peaks

from ecgtool.signal import LEADS, SAMPLING_RATE

# Goldberger / Einthoven: a derived lead equals its formula up to float32 rounding.
_FORMULAS = {
    "III": lambda i, ii: ii - i,
    "aVR": lambda i, ii: -(i + ii) / 2,
    "aVL": lambda i, ii: i - ii / 2,
    "aVF": lambda i, ii: ii - i / 2,
}


def limb_identity_error(signal: np.ndarray, lead: str) -> float:
    """Largest |lead − formula(I, II)| in mV over a canonical (12, n) signal."""
    i, ii = signal[0].astype(np.float64), signal[1].astype(np.float64)
    return float(np.max(np.abs(signal[LEADS.index(lead)] - _FORMULAS[lead](i, ii))))


def assert_limb_identities(signal: np.ndarray, leads=("III", "aVR", "aVL", "aVF"), atol: float = 1e-5) -> None:
    for lead in leads:
        error = limb_identity_error(signal, lead)
        assert error <= atol, f"{lead} differs from its Einthoven/Goldberger formula by {error:.3g} mV"


def assert_physiological(signal: np.ndarray, n_valid: int | None = None) -> None:
    """Every lead moves (≥ 0.1 mV peak to peak) and stays within ±10 mV; some lead has a QRS ≥ 0.5 mV."""
    window = signal[:, : n_valid or signal.shape[1]]
    peak_to_peak = window.max(axis=1) - window.min(axis=1)
    assert np.all(peak_to_peak >= 0.1), f"flat leads: {dict(zip(LEADS, peak_to_peak.round(3)))}"
    assert np.abs(window).max() <= 10.0, f"beyond ±10 mV: {np.abs(window).max():.2f} mV (wrong gain?)"
    assert peak_to_peak.max() >= 0.5, f"no lead reaches 0.5 mV peak to peak: {peak_to_peak.max():.3f} (wrong gain?)"


def heart_rate_bpm(signal: np.ndarray, sampling_rate: float = SAMPLING_RATE, n_valid: int | None = None) -> float:
    """Heart rate from a simple R-peak count: 5–30 Hz band, summed absolute slope of all leads.

    Peaks above 35 % of the 98th percentile of the envelope, at least 250 ms apart; the rate is
    60 / median RR.
    """
    window = signal[:, : n_valid or signal.shape[1]].astype(np.float64)
    b, a = butter(2, [5 / (sampling_rate / 2), 30 / (sampling_rate / 2)], btype="band")
    filtered = filtfilt(b, a, window, axis=1)
    envelope = np.abs(np.diff(filtered, axis=1)).sum(axis=0)
    peaks, _ = find_peaks(envelope, height=0.35 * np.percentile(envelope, 98), distance=int(0.25 * sampling_rate))
    if len(peaks) < 3:
        return float("nan")
    return float(60.0 / (np.median(np.diff(peaks)) / sampling_rate))
