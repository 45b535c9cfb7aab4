"""The canonical form every model input is brought to, and the checks a record must pass.

``canonicalize`` is the single function that ``ingest`` and ``predict`` both call, so that a record
scored later is transformed exactly as the training records were.

Canonical form (version 1):

* 12 leads in the order ``I, II, III, aVR, aVL, aVF, V1 … V6`` (names matched case-insensitively,
  common aliases accepted);
* 500 Hz, resampled with ``scipy.signal.resample_poly`` (polyphase FIR, Kaiser window β = 5)
  when the source rate differs;
* 10 s = 5000 samples: a longer record keeps its first 10 s; a shorter one (at least
  ``min_seconds``) is zero-padded at the end and its valid length is kept;
* millivolts, no other filtering.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from fractions import Fraction

import numpy as np

from ecgtool.errors import RecordError
from ecgtool.record import Record

CANONICAL_FORM_VERSION = 1
LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
SAMPLING_RATE = 500
N_SAMPLES = 5000

_LEAD_ALIASES = {
    "I": ("I", "DI", "D1", "LEAD I", "LEADI"),
    "II": ("II", "DII", "D2", "LEAD II", "LEADII", "MLII"),
    "III": ("III", "DIII", "D3", "LEAD III", "LEADIII"),
    "aVR": ("AVR", "LEAD AVR"),
    "aVL": ("AVL", "LEAD AVL"),
    "aVF": ("AVF", "LEAD AVF"),
    **{f"V{i}": (f"V{i}", f"LEAD V{i}", f"C{i}") for i in range(1, 7)},
}
_CANONICAL_BY_ALIAS = {alias: lead for lead, aliases in _LEAD_ALIASES.items() for alias in aliases}
_DERIVED_LIMB_LEADS = ("III", "aVR", "aVL", "aVF")


@dataclass(frozen=True)
class QualityThresholds:
    """Limits of the quality checks, in mV (documented in docs/ingest.md)."""

    flat_peak_to_peak_mv: float = 0.01
    saturated_fraction: float = 0.05
    max_abs_mv: float = 25.0


@dataclass(frozen=True)
class CanonicalOptions:
    """The choices of the canonical transform that a user may change.

    Attributes
    ----------
    min_seconds : float
        Records shorter than this are rejected rather than padded.
    derive_limb_leads : bool
        Opt-in repair: build missing III, aVR, aVL, aVF from I and II (Einthoven, Goldberger).
    quality : QualityThresholds
        Limits of the flat, saturated and amplitude checks.
    """

    min_seconds: float = 5.0
    derive_limb_leads: bool = False
    quality: QualityThresholds = QualityThresholds()


@dataclass(frozen=True)
class CanonicalSignal:
    """A record in canonical form: ``signal`` is (12, 5000) float32 mV; ``n_valid`` samples are real."""

    signal: np.ndarray
    n_valid: int
    derived_leads: tuple[str, ...]


def input_contract(options: CanonicalOptions = CanonicalOptions()) -> dict:
    """The input contract that every artefact built from canonical records carries."""
    return {
        "canonical_form_version": CANONICAL_FORM_VERSION,
        "sampling_rate_hz": SAMPLING_RATE,
        "n_samples": N_SAMPLES,
        "duration_s": N_SAMPLES / SAMPLING_RATE,
        "lead_order": list(LEADS),
        "units": "mV",
        "resampler": "scipy.signal.resample_poly (polyphase FIR, Kaiser window beta=5.0)",
        "filters": [],
        "crop": "first 10 s",
        "pad": "zeros at the end; n_valid kept",
        "min_seconds": options.min_seconds,
        "derive_limb_leads": options.derive_limb_leads,
        "quality": asdict(options.quality),
    }


def canonicalize(record: Record, options: CanonicalOptions = CanonicalOptions()) -> CanonicalSignal:
    """Bring ``record`` to the canonical form, or raise ``RecordError`` saying why it cannot be.

    Raises
    ------
    RecordError
        Missing leads, too short, NaN/inf samples, flat, saturated or implausibly large leads.
    """
    leads, derived = _select_leads(record, options.derive_limb_leads)
    duration = leads.shape[1] / record.sampling_rate
    if duration < options.min_seconds:
        raise RecordError(
            record.path, f"too short: {duration:.2f} s, at least {options.min_seconds:g} s needed"
        )
    n_window_source = min(leads.shape[1], int(np.ceil(N_SAMPLES / SAMPLING_RATE * record.sampling_rate)))
    # Checked at the source rate: resampling would blur saturation plateaus and smear NaN.
    check_quality(leads[:, :n_window_source], record.path, options.quality)
    resampled = _resample(leads[:, : n_window_source + _resample_margin(record.sampling_rate)], record.sampling_rate)
    n_valid = min(N_SAMPLES, int(round(n_window_source / record.sampling_rate * SAMPLING_RATE)), resampled.shape[1])
    signal = np.zeros((len(LEADS), N_SAMPLES), dtype=np.float32)
    signal[:, :n_valid] = resampled[:, :n_valid]
    return CanonicalSignal(signal=signal, n_valid=n_valid, derived_leads=tuple(record.derived_leads) + derived)


def _select_leads(record: Record, derive_limb_leads: bool) -> tuple[np.ndarray, tuple[str, ...]]:
    rows = _canonical_rows(record.lead_names)
    missing = [lead for lead in LEADS if lead not in rows]
    derived: tuple[str, ...] = ()
    if missing and derive_limb_leads and set(missing) <= set(_DERIVED_LIMB_LEADS) and {"I", "II"} <= rows.keys():
        derived = tuple(missing)
        missing = []
    if missing:
        raise RecordError(record.path, f"missing leads: {', '.join(missing)} (has: {', '.join(record.lead_names)})")
    if not derived and [rows[lead] for lead in LEADS] == list(range(record.signal.shape[0])):
        return record.signal, derived  # already 12 leads in canonical order: no copy
    signal = np.empty((len(LEADS), record.signal.shape[1]), dtype=np.float32)
    for index, lead in enumerate(LEADS):
        if lead in rows:
            signal[index] = record.signal[rows[lead]]
    if derived:
        derive_limb_leads_from_i_ii(signal, derived)
    return signal, derived


def with_derived_limb_leads(record: Record) -> Record:
    """``record`` with the limb leads it lacks (of III, aVR, aVL, aVF) computed from I and II.

    For formats whose devices store only I, II and V1–V6 by convention (MFER, GE MUSE, SCP-ECG):
    the readers call this, so the derivation is the format's, not an opt-in repair. Leads the
    file does store are kept as stored. Returns ``record`` unchanged when nothing is missing or
    when I or II is absent (``canonicalize`` then names the missing leads).
    """
    rows = _canonical_rows(record.lead_names)
    missing = tuple(lead for lead in _DERIVED_LIMB_LEADS if lead not in rows)
    if not missing or not {"I", "II"} <= rows.keys():
        return record
    canonical_order = np.zeros((len(LEADS), record.signal.shape[1]), dtype=np.float32)
    canonical_order[0], canonical_order[1] = record.signal[rows["I"]], record.signal[rows["II"]]
    derive_limb_leads_from_i_ii(canonical_order, missing)
    extra = np.stack([canonical_order[LEADS.index(lead)] for lead in missing])
    return replace(
        record,
        signal=np.concatenate([record.signal.astype(np.float32, copy=False), extra]),
        lead_names=tuple(record.lead_names) + missing,
        derived_leads=tuple(record.derived_leads) + missing,
    )


def _canonical_rows(lead_names) -> dict[str, int]:
    """Canonical lead name → row of its first occurrence among ``lead_names`` (aliases matched)."""
    rows: dict[str, int] = {}
    for row, name in enumerate(lead_names):
        lead = _CANONICAL_BY_ALIAS.get(" ".join(name.upper().split()))
        if lead is not None and lead not in rows:
            rows[lead] = row
    return rows


def derive_limb_leads_from_i_ii(signal: np.ndarray, leads: tuple[str, ...] = _DERIVED_LIMB_LEADS) -> None:
    """Fill ``leads`` (any of III, aVR, aVL, aVF) of a canonical-order array in place from I and II.

    Einthoven: III = II − I. Goldberger: aVR = −(I + II)/2, aVL = I − II/2, aVF = II − I/2.
    """
    lead_i, lead_ii = signal[0], signal[1]
    formulas = {
        "III": lambda: lead_ii - lead_i,
        "aVR": lambda: -(lead_i + lead_ii) / 2,
        "aVL": lambda: lead_i - lead_ii / 2,
        "aVF": lambda: lead_ii - lead_i / 2,
    }
    for lead in leads:
        signal[LEADS.index(lead)] = formulas[lead]()


def _resample_margin(sampling_rate: float) -> int:
    # Keep a few source samples past the 10-s window so the FIR filter sees real signal at the edge.
    return 0 if sampling_rate == SAMPLING_RATE else int(np.ceil(sampling_rate * 0.1))


def _resample(signal: np.ndarray, sampling_rate: float) -> np.ndarray:
    if sampling_rate == SAMPLING_RATE:
        return signal
    ratio = Fraction(SAMPLING_RATE / sampling_rate).limit_denominator(1000)
    if abs(float(ratio) * sampling_rate - SAMPLING_RATE) > 1e-6 * SAMPLING_RATE:
        raise ValueError(f"cannot resample {sampling_rate} Hz to {SAMPLING_RATE} Hz exactly")
    from scipy.signal import resample_poly  # here: importing scipy.signal costs ~1 s, and most records need no resampling

    resampled = resample_poly(signal, ratio.numerator, ratio.denominator, axis=1)
    return resampled.astype(np.float32, copy=False)


def check_quality(signal: np.ndarray, path: str, thresholds: QualityThresholds = QualityThresholds()) -> None:
    """Raise ``RecordError`` naming the leads that fail a check; ``signal`` is in canonical lead order."""
    if not np.isfinite(signal.sum()):
        bad = [LEADS[i] for i in np.flatnonzero(~np.isfinite(signal).all(axis=1))]
        raise RecordError(path, f"NaN/inf or missing samples in lead(s) {', '.join(bad)}")
    low, high = signal.min(axis=1), signal.max(axis=1)
    flat = high - low < thresholds.flat_peak_to_peak_mv
    if flat.any():
        bad = [LEADS[i] for i in np.flatnonzero(flat)]
        raise RecordError(
            path, f"flat lead(s) {', '.join(bad)}: peak-to-peak below {thresholds.flat_peak_to_peak_mv} mV"
        )
    too_large = np.maximum(np.abs(low), np.abs(high)) > thresholds.max_abs_mv
    if too_large.any():
        bad = [LEADS[i] for i in np.flatnonzero(too_large)]
        raise RecordError(
            path, f"implausible amplitude in lead(s) {', '.join(bad)}: beyond ±{thresholds.max_abs_mv} mV (wrong gain?)"
        )
    at_rail = ((signal == low[:, None]).sum(axis=1) + (signal == high[:, None]).sum(axis=1)) / signal.shape[1]
    saturated = at_rail > thresholds.saturated_fraction
    if saturated.any():
        bad = [LEADS[i] for i in np.flatnonzero(saturated)]
        raise RecordError(
            path,
            f"saturated lead(s) {', '.join(bad)}: over {thresholds.saturated_fraction:.0%} of samples at the lead's extreme",
        )
