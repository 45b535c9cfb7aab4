"""The one in-memory form every reader returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Record:
    """One ECG as read from disk, before the canonical transform.

    Attributes
    ----------
    record_id : str
        Identifier unique within a dataset (for WFDB the record name, e.g. ``"00001_hr"``).
    path : str
        The file the record was read from (the header for WFDB), for error messages.
    signal : numpy.ndarray
        ``(n_leads, n_samples)`` float32 physical samples in mV; NaN marks missing samples.
    sampling_rate : float
        Samples per second of ``signal``.
    lead_names : tuple of str
        Lead names as the file spells them, one per row of ``signal``.
    codes : dict
        Label codes found in the file itself, by vocabulary (``"snomed"``, ``"scp"``, ``"cpsc"``).
    patient_id, report : str or None
        When the file itself carries them.
    format : str
        The reader that produced the record (``"wfdb"``, ``"mfer"``, ``"ge-muse"`` …).
    acquired : str or None
        Acquisition time as the file states it, ISO 8601 (``"2019-03-04T10:22:31"``) when known.
    device : str or None
        Manufacturer / model / software as the file names them.
    statements : tuple of str
        The machine's own interpretation statements, verbatim (not a physician's report).
    measurements : dict
        The machine's own measurements by name (``"heart_rate_bpm"``, ``"pr_ms"``, ``"qrs_ms"``,
        ``"qt_ms"``, ``"qtc_ms"``, axes in degrees …), when the file gives them.
    derived_leads : tuple of str
        Leads the reader computed rather than read (III, aVR, aVL, aVF from I and II).
    """

    record_id: str
    path: str
    signal: np.ndarray
    sampling_rate: float
    lead_names: tuple[str, ...]
    codes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    patient_id: str | None = None
    report: str | None = None
    format: str = "wfdb"
    acquired: str | None = None
    device: str | None = None
    statements: tuple[str, ...] = ()
    measurements: dict[str, float] = field(default_factory=dict)
    derived_leads: tuple[str, ...] = ()
