"""Read GE CardioSoft ``CardiologyXML`` resting-ECG exports (CardioSoft 6, 12SL analysis).

Not MUSE: the 10-s recording is ``StripData`` with one ``<WaveformData lead="I">`` per lead,
comma-separated integers, ``SampleRate`` (Hz) and ``Resolution`` (units stated in its
``units`` attribute, "uVperLsb" = µV per count). All 12 leads are stored. ``MedianSamples``
(the representative beat), ``VectorLoops`` and ``FullDisclosure`` (minutes of continuous ECG,
another sampling of the same session) are ignored.

The machine's interpretation is ``Interpretation/Diagnosis/DiagnosisText`` (``Conclusion``
is the copy a physician confirms or edits); measurements come from ``RestingECGMeasurements``
with the units each element states.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from xml.etree.ElementTree import Element

import numpy as np

from ecgtool.errors import RecordError
from ecgtool.io.xml_tools import (
    millivolts_per_unit,
    milliseconds_per_unit,
    number,
    parse_xml,
    require_equal_lengths,
    require_leads,
    root_element,
    record_from_leads,
    text_of,
)
from ecgtool.record import Record
from ecgtool.signal import LEADS

FORMAT = "ge-cardiosoft"
# CardioSoft tag → (Record key, kind of unit).
_MEASUREMENTS = {
    "VentricularRate": ("heart_rate_bpm", "rate"),
    "PQInterval": ("pr_ms", "duration"),
    "PRInterval": ("pr_ms", "duration"),
    "QRSDuration": ("qrs_ms", "duration"),
    "QTInterval": ("qt_ms", "duration"),
    "QTCInterval": ("qtc_ms", "duration"),
    "RRInterval": ("rr_ms", "duration"),
    "PAxis": ("p_axis_deg", "angle"),
    "RAxis": ("qrs_axis_deg", "angle"),
    "TAxis": ("t_axis_deg", "angle"),
}
_RATE_UNITS = {"bpm", "/min", "1/min", "beats/min"}
_ANGLE_UNITS = {"degrees", "deg", "degree", "°"}


def sniff(head: bytes) -> bool:
    return root_element(head) == "CardiologyXML"


def read(path: Path, verify_checksums: bool = True) -> Record:
    """Read the 10-s strip and the machine's statements and measurements of a CardioSoft export.

    ``verify_checksums`` is accepted for the common interface; the format has no checksums.

    Raises
    ------
    RecordError
        Malformed XML, no ``StripData``, a lead missing or repeated, a non-integer sample,
        leads of unequal length or shorter than ``ChannelSampleCountTotal``, an unknown unit.
    """
    path = Path(path)
    root = parse_xml(path)
    if root.tag != "CardiologyXML":
        raise RecordError(path, f"not a GE CardioSoft CardiologyXML file (root element <{root.tag}>)")
    strip = root.find("StripData")
    if strip is None:
        raise RecordError(path, "no StripData (the 10-s resting ECG) in this CardiologyXML file")
    sampling_rate = number(text_of(strip, "SampleRate"))
    if sampling_rate is None or sampling_rate <= 0:
        raise RecordError(path, f"invalid or missing SampleRate {text_of(strip, 'SampleRate')!r}")
    mv_per_count = _millivolts_per_count(strip, path)
    expected = number(text_of(strip, "ChannelSampleCountTotal"))
    leads: dict[str, np.ndarray] = {}
    for waveform in strip.findall("WaveformData"):
        name = (waveform.get("lead") or "").strip()
        if not name:
            raise RecordError(path, "a WaveformData element has no lead attribute")
        if name in leads:
            raise RecordError(path, f"lead {name} stored twice")
        counts = _counts(waveform.text or "", name, path)
        if expected is not None and len(counts) != expected:
            raise RecordError(path, f"truncated waveform: {len(counts):,} of {int(expected):,} samples of lead {name}")
        leads[name] = counts * mv_per_count
    require_leads(leads, ("I", "II", *LEADS[6:]), path, "StripData")
    require_equal_lengths(leads, path)
    # Files from 8-channel carts may lack the limb leads the cart did not store.
    return record_from_leads(
        path,
        leads,
        sampling_rate,
        patient_id=text_of(root, "PatientInfo/PID"),
        format=FORMAT,
        acquired=_acquired(root.find("ObservationDateTime")),
        device=_device(root),
        statements=_statements(root),
        measurements=_measurements(root.find("RestingECGMeasurements")),
    )


def _millivolts_per_count(strip: Element, path: Path) -> float:
    resolution = strip.find("Resolution")
    value = number(resolution.text if resolution is not None else None)
    if value is None or value <= 0:
        raise RecordError(path, "invalid or missing StripData Resolution")
    unit = resolution.get("units", "uVperLsb")
    to_mv = millivolts_per_unit(unit)
    if to_mv is None:
        raise RecordError(path, f"unknown Resolution unit {unit!r}")
    return value * to_mv


def _counts(text: str, name: str, path: Path) -> np.ndarray:
    fields = [field for field in text.replace("\n", ",").split(",") if field.strip()]
    try:
        return np.array([int(field) for field in fields], dtype=np.float64)
    except ValueError:
        bad = next(field.strip() for field in fields if not field.strip().lstrip("-").isdigit())
        raise RecordError(path, f"lead {name}: sample {bad[:20]!r} is not an integer") from None


def _acquired(when: Element | None) -> str | None:
    if when is None:
        return None
    parts = [number(text_of(when, tag)) for tag in ("Year", "Month", "Day", "Hour", "Minute", "Second")]
    if any(part is None for part in parts[:3]):
        return None
    try:
        return datetime(*(int(part or 0) for part in parts)).isoformat()
    except ValueError:
        return None


def _device(root: Element) -> str | None:
    info = root.find("ClinicalInfo/DeviceInfo")
    parts = [text_of(info, tag) for tag in ("Desc", "SoftwareVer", "AnalysisVer")]
    return " ".join(part for part in parts if part) or None


def _statements(root: Element) -> tuple[str, ...]:
    interpretation = root.find("Interpretation")
    if interpretation is None:
        return ()
    lines = interpretation.findall("Diagnosis/DiagnosisText") or interpretation.findall(".//Statement")
    texts = ((line.text or "").strip() for line in lines)
    return tuple(text for text in texts if text)


def _measurements(table: Element | None) -> dict[str, float]:
    measurements: dict[str, float] = {}
    if table is None:
        return measurements
    for tag, (key, kind) in _MEASUREMENTS.items():
        element = table.find(tag)
        value = number(element.text if element is not None else None)
        if value is None or key in measurements:
            continue
        unit = (element.get("units") or "").strip()
        if kind == "duration":
            factor = milliseconds_per_unit(unit or "ms")
            if factor is not None:
                measurements[key] = value * factor
        elif kind == "rate" and (not unit or unit.lower() in _RATE_UNITS):
            measurements[key] = value
        elif kind == "angle" and (not unit or unit.lower() in _ANGLE_UNITS):
            measurements[key] = value
    return measurements
