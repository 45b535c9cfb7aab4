"""The representative (median) beat of each lead, from the beats of the dominant morphology.

Every beat whose window fits in the record is cut out around its QRS fiducial. The QRS complexes
(−100…+120 ms, the 8 independent leads together) are aligned on their median by cross-correlation
(±30 ms) and compared by correlation; the largest group of beats correlating ≥ 0.9 with one beat is
the dominant morphology, and the others (ventricular ectopics, artefacts) are left out. The kept
beats are re-aligned on the median of the group (±8 ms) and their sample-wise median per lead is
the median beat.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ecgtool.measure.leads import INDEPENDENT
from ecgtool.measure.quantiles import median

PRE_S = 0.55
POST_S = 0.75
QRS_WINDOW_S = (-0.1, 0.12)
MIN_CORRELATION = 0.9
COARSE_ALIGN_S = 0.03
ALIGN_S = 0.008


@dataclass(frozen=True)
class MedianBeats:
    """The median beat of each lead and the beats behind it.

    Attributes
    ----------
    beats : numpy.ndarray
        (12, n) float64 mV, baseline wander removed (not yet referred to the PR level).
    fiducial : int
        The QRS fiducial's index within ``beats``.
    used : numpy.ndarray
        Indices (into the detected fiducials) of the beats that formed the median.
    excluded : int
        Beats of another morphology (ectopic, artefact) left out.
    record : numpy.ndarray
        (12, samples) the baseline-removed record the beats were cut from.
    centres : numpy.ndarray
        Where in ``record`` each used beat's ``fiducial`` falls, once aligned.
    """

    beats: np.ndarray
    fiducial: int
    used: np.ndarray
    excluded: int
    record: np.ndarray
    centres: np.ndarray

    def windows(self, leads: np.ndarray, span: slice) -> np.ndarray:
        """(leads, used beats, span) the aligned beats the median was taken over, over ``span`` of
        the median beat's samples: cut again where needed rather than kept whole."""
        return _cut(self.record, leads, self.centres, np.arange(span.start, span.stop) - self.fiducial)


def median_beats(signal: np.ndarray, fiducials: np.ndarray, sampling_rate: float,
                 usable: np.ndarray) -> MedianBeats | None:
    """Median beats of ``signal`` (12, n), baseline removed, around ``fiducials``; None if no beat fits."""
    pre, post = round(PRE_S * sampling_rate), round(POST_S * sampling_rate)
    inside = np.flatnonzero((fiducials >= pre) & (fiducials + post <= signal.shape[1]))
    if inside.size == 0:
        return None
    offsets = np.arange(-pre, post)
    leads = INDEPENDENT[usable[INDEPENDENT]]
    qrs = np.arange(round(QRS_WINDOW_S[0] * sampling_rate), round(QRS_WINDOW_S[1] * sampling_rate))
    candidates = fiducials[inside]
    # A coarse alignment on the median of every beat (every other sample and lag), so that the
    # morphology test compares like with like; then the dominant group, finely re-aligned on its
    # own median.
    coarse = round(COARSE_ALIGN_S * sampling_rate)
    candidates = candidates + _alignment(signal, leads, candidates, qrs[::2], coarse, step=2)
    dominant = _dominant_group(_cut(signal, leads, candidates, qrs))
    used = inside[dominant]
    aligned = candidates[dominant]
    aligned = aligned + _alignment(signal, leads, aligned, qrs, round(ALIGN_S * sampling_rate))
    fits = (aligned >= pre) & (aligned + post <= signal.shape[1])
    used, aligned = used[fits], aligned[fits]
    if used.size == 0:
        return None
    windows = _cut(signal, None, aligned, offsets)
    beats = _median_over_beats(windows)
    return MedianBeats(beats=beats, fiducial=pre, used=used, excluded=int(inside.size - used.size), record=signal,
                       centres=aligned)


def beat_to_beat_noise(windows: np.ndarray, beats: np.ndarray, span: slice) -> np.ndarray:
    """(leads,) median over beats of the RMS over ``span`` of (beat − median beat − its mean)."""
    difference = windows[:, :, span] - beats[:, None, span]
    difference -= difference.mean(axis=2, keepdims=True)
    return median(np.sqrt(np.mean(difference**2, axis=2)))


def _median_over_beats(windows: np.ndarray) -> np.ndarray:
    """(leads, samples) median of (leads, beats, samples), which it sorts in place along the beats:
    sorting ~10 beats beats np.median, and no copy of them is needed."""
    windows.sort(axis=1)
    middle = windows.shape[1] // 2
    return windows[:, middle] if windows.shape[1] % 2 else 0.5 * (windows[:, middle - 1] + windows[:, middle])


def _dominant_group(qrs: np.ndarray) -> np.ndarray:
    """Boolean mask of the beats of the dominant QRS morphology; ``qrs`` is (leads, beats, samples)."""
    n_beats = qrs.shape[1]
    if n_beats <= 2:
        return np.ones(n_beats, dtype=bool)
    vectors = np.transpose(qrs, (1, 0, 2)).reshape(n_beats, -1)
    vectors = vectors - vectors.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(vectors, axis=1)
    vectors = vectors / np.maximum(norms, 1e-12)[:, None]
    correlation = vectors @ vectors.T
    similar = correlation >= MIN_CORRELATION
    counts = similar.sum(axis=1)
    if counts.max() < 2:  # no two beats alike: noise rather than ectopy, and the median copes with it
        return np.ones(n_beats, dtype=bool)
    best = np.flatnonzero(counts == counts.max())
    template = best[np.argmax(correlation[best].sum(axis=1))]
    return similar[template]


def _cut(signal: np.ndarray, leads: np.ndarray | None, centres: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """(leads, *centres.shape, offsets) samples of ``signal`` at each centre + ``offsets`` (evenly
    spaced), of the rows ``leads`` (None: every row).

    Whole windows are copied out of a sliding view rather than gathered sample by sample. A window
    that would cross the record's start or end is moved inside it; the beats lie ``PRE_S`` and
    ``POST_S`` inside the record, far more than the QRS windows and shifts reach, so none does.
    """
    step = int(offsets[1] - offsets[0]) if offsets.size > 1 else 1
    span = int(offsets[-1] - offsets[0]) + 1
    starts = np.minimum(np.maximum(centres + offsets[0], 0), signal.shape[1] - span)
    # Every window of the record, ``step`` apart inside: a read-only view (sliding_window_view's, made
    # without its checks), of which the indexing below copies the windows wanted.
    rows, samples = signal.strides
    every = as_strided(signal, (signal.shape[0], signal.shape[1] - span + 1, offsets.size),
                       (rows, samples, samples * step), writeable=False)
    leads = np.arange(signal.shape[0]) if leads is None else leads
    # Both indices as arrays: the copy comes out C-ordered, (leads, *centres.shape, offsets).
    return every[leads.reshape((-1,) + (1,) * starts.ndim), starts]


def _alignment(signal: np.ndarray, leads: np.ndarray, centres: np.ndarray, offsets: np.ndarray,
               reach: int, step: int = 1) -> np.ndarray:
    """Per-beat shift (samples, ±``reach`` by ``step``) that best aligns each beat's QRS with their
    median QRS."""
    if centres.size < 3 or reach == 0:
        return np.zeros(centres.size, dtype=np.int64)
    template = _median_over_beats(_cut(signal, leads, centres, offsets))
    template -= template.mean(axis=1, keepdims=True)
    lags = np.arange(-reach, reach + 1, step)
    shifted = _cut(signal, leads, centres[:, None] + lags, offsets)  # (leads, beats, lags, offsets)
    scores = np.einsum("lbks,ls->bk", shifted, template)
    return lags[np.argmax(scores, axis=1)]
