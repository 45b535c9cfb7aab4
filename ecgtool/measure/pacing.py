"""Pacemaker stimuli: spikes far sharper than any QRS, in several leads at once, before the QRS.

At 500 Hz a pacing stimulus (< 2 ms) is one or two samples of several mV/ms, which the cart's
anti-aliasing filter leaves as a second difference |x[n+1] − 2x[n] + x[n−1]| of 0.5 mV or more; the
steepest native QRS of the 550 PTB-XL records of ../shared reaches 0.36 mV. A spike counts when it
is seen in at least ``MIN_LEADS`` of the 8 independent leads at once (±1 sample), each time at least
``QRS_MULTIPLE`` times as sharp as the lead's steepest QRS slopes (which keeps records at a wrong,
5× gain from passing for paced) and well above its noise. A beat is paced
when a spike falls from ``BEFORE_S`` (atrial or sequential pacing) to 10 ms before its QRS fiducial
(the centre of the QRS energy): the notches of native QRS complexes that reach the spike level
fall at the fiducial itself (PTB-XL 00420, an incomplete RBBB), ventricular stimuli 14–110 ms
before it (PTB-XL's 6 paced records of ../shared).
"""

from __future__ import annotations

import numpy as np

from ecgtool.measure.leads import INDEPENDENT, curvature
from ecgtool.measure.quantiles import percentile

SPIKE_MV = 0.5
MIN_LEADS = 2
NOISE_MULTIPLE = 16.0  # × the white-noise σ: ~10 × the median second difference
QRS_MULTIPLE = 2.5  # × the lead's 98th percentile of |first difference| (its steepest QRS slopes)
BEFORE_S = 0.3
AFTER_S = -0.01  # the stimulus precedes the QRS centre; sharp notches of native QRS complexes fall on it


def paced_beats(signal: np.ndarray, noise_mv: np.ndarray, qrs_samples: np.ndarray, sampling_rate: float,
                usable: np.ndarray) -> np.ndarray:
    """(beats,) bool: a pacing spike precedes the beat's QRS.

    ``signal`` is the raw, unfiltered record and ``noise_mv`` its leads' ``leads.fast_noise_mv``.
    """
    leads = INDEPENDENT[usable[INDEPENDENT]]
    if qrs_samples.size == 0 or leads.size < MIN_LEADS:
        return np.zeros(qrs_samples.size, dtype=bool)
    independent = signal[leads]
    sharpness = curvature(independent)
    # A stimulus stands out of the lead's own noise (white noise of 0.1 mV alone would reach 0.5 mV
    # of second difference somewhere in two leads) and of its own QRS complexes: at a wrong gain
    # (the Challenge 2020 copies of PTB-XL, 5× too large) native QRS complexes reach 0.5 mV too.
    floor = np.maximum(SPIKE_MV, NOISE_MULTIPLE * noise_mv[leads])[:, None]
    if np.count_nonzero((sharpness >= floor).any(axis=1)) < MIN_LEADS:
        return np.zeros(qrs_samples.size, dtype=bool)  # most records: the QRS limit is not even needed
    # The |first difference| at every other sample: what its 98th percentile is taken over.
    steep = percentile(np.abs(independent[:, 1::2] - independent[:, :-1:2]), 98)
    above = sharpness >= np.maximum(floor, QRS_MULTIPLE * steep[:, None])
    sharp = np.zeros((leads.size, above.shape[1] + 2), dtype=bool)
    sharp[:, 1:-1] = above
    sharp[:, 1:] |= sharp[:, :-1].copy()  # ±1 sample: leads see the stimulus one sample apart
    sharp[:, :-1] |= sharp[:, 1:].copy()
    spikes = np.flatnonzero(sharp.sum(axis=0) >= MIN_LEADS)
    if spikes.size == 0:
        return np.zeros(qrs_samples.size, dtype=bool)
    first = np.searchsorted(spikes, qrs_samples - round(BEFORE_S * sampling_rate))
    last = np.searchsorted(spikes, qrs_samples + round(AFTER_S * sampling_rate), side="right")
    return last > first
