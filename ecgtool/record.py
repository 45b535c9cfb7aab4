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
    """

    record_id: str
    path: str
    signal: np.ndarray
    sampling_rate: float
    lead_names: tuple[str, ...]
    codes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    patient_id: str | None = None
    report: str | None = None
