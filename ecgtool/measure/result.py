"""What ``measure`` returns: every value a number (or a flag) or None with the reason."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np

# The keys every Measurements carries, in the order a report prints them.
KEYS = (
    "heart_rate_bpm", "rr_ms", "rr_irregularity", "n_beats",
    "p_wave_present", "pr_ms", "qrs_ms", "qt_ms", "qtc_ms", "qtcf_ms",
    "p_axis_deg", "qrs_axis_deg", "t_axis_deg",
    "sokolow_lyon_mv", "cornell_mv",
    "low_voltage_limb", "low_voltage_chest", "limb_qrs_mv", "chest_qrs_mv",
    "st_j60_mv",
)


@dataclass(frozen=True)
class Measurements:
    """The measurements of one 12-lead ECG.

    Attributes
    ----------
    values : Mapping
        ``KEYS`` → a number (ms, bpm, degrees −180…180, mV), a bool (``p_wave_present``, low
        voltage), a dict lead → mV (``limb_qrs_mv``, ``chest_qrs_mv``, ``st_j60_mv``), or None.
    reasons : Mapping
        Key → why its value is None (or, for a dict, why some leads are None). Every None has one.
    notes : tuple of str
        What the reader of the numbers should know although nothing is None (ectopic beats left
        out of the median, leads left out, some paced beats).
    lead_quality : Mapping
        Lead → ``"flat"`` or ``"noisy"`` for the leads the program left out.
    median_beats : numpy.ndarray or None
        (12, n) float32 median beat per lead, mV, referred to the PR level (0 mV just before the
        QRS onset), canonical lead order; None when no beat could be formed.
    fiducials : Mapping
        ``p_onset``, ``p_peak``, ``qrs_onset``, ``qrs_fiducial``, ``qrs_offset``, ``t_peak``,
        ``t_offset`` → sample index within ``median_beats`` (or None).
    qrs_samples : numpy.ndarray
        Sample index in the record of every detected QRS complex.
    sampling_rate : float
        Hz, of ``median_beats`` and ``qrs_samples``.
    """

    values: Mapping[str, Any]
    reasons: Mapping[str, str]
    notes: tuple[str, ...] = ()
    lead_quality: Mapping[str, str] = field(default_factory=dict)
    median_beats: np.ndarray | None = None
    fiducials: Mapping[str, int | None] = field(default_factory=dict)
    qrs_samples: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    sampling_rate: float = 500.0

    def __post_init__(self) -> None:
        missing = [key for key in KEYS if key not in self.values]
        if missing:
            raise ValueError(f"measurements lack {', '.join(missing)}")
        unexplained = [key for key, value in self.values.items() if value is None and key not in self.reasons]
        if unexplained:
            raise ValueError(f"no reason given for the missing {', '.join(unexplained)}")
        object.__setattr__(self, "values", MappingProxyType(dict(self.values)))
        object.__setattr__(self, "reasons", MappingProxyType(dict(self.reasons)))
        object.__setattr__(self, "lead_quality", MappingProxyType(dict(self.lead_quality)))
        object.__setattr__(self, "fiducials", MappingProxyType(dict(self.fiducials)))

    def __reduce__(self):
        # Read-only mappings do not pickle: rebuilt from plain dicts (reader processes send these).
        return (Measurements, (dict(self.values), dict(self.reasons), self.notes, dict(self.lead_quality),
                               self.median_beats, dict(self.fiducials), self.qrs_samples, self.sampling_rate))

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def to_dict(self) -> dict:
        """``{key: number, bool, {lead: mV} or None, …, "reasons": {key: why}}``, ready for JSON."""
        out = {key: (dict(value) if isinstance(value, Mapping) else value) for key, value in self.values.items()}
        out["reasons"] = dict(self.reasons)
        if self.notes:
            out["notes"] = list(self.notes)
        if self.lead_quality:
            out["lead_quality"] = dict(self.lead_quality)
        return out
