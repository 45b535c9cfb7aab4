"""Read GE MUSE ``RestingECG`` XML exports (MUSE 7–9, MAC carts).

The file holds two waveforms: ``Median`` (one representative beat, 600 samples) and
``Rhythm`` (the 10-s recording); only the rhythm is read. Each ``LeadData`` carries its samples
as base64 little-endian integers (``LeadSampleSize`` bytes each) with ``LeadAmplitudeUnitsPerBit``
in ``LeadAmplitudeUnits`` (4.88 µV on MAC carts) and a CRC-32 of the decoded bytes. Carts store
eight leads (I, II, V1–V6); III, aVR, aVL and aVF are derived here from I and II.

The cart's own interpretation and measurements are kept: ``OriginalDiagnosis`` and
``OriginalRestingECGMeasurements`` (what the 12SL program produced), falling back to
``Diagnosis`` and ``RestingECGMeasurements`` (the confirmed copies, which an over-reader may have
edited) when the originals are absent.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from datetime import datetime
from pathlib import Path
from xml.etree.ElementTree import Element

import numpy as np

from ecgtool.errors import RecordError
from ecgtool.io.xml_tools import (
    millivolts_per_unit,
    number,
    parse_xml,
    require_equal_lengths,
    require_leads,
    root_element,
    record_from_leads,
    text_of,
)
from ecgtool.record import Record

FORMAT = "ge-muse"
STORED_LEADS = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
_SAMPLE_DTYPES = {1: "<i1", 2: "<i2", 4: "<i4"}
# MUSE tag → Record measurement key; MUSE gives ms, bpm and degrees without stating units.
_MEASUREMENTS = {
    "VentricularRate": "heart_rate_bpm",
    "PRInterval": "pr_ms",
    "QRSDuration": "qrs_ms",
    "QTInterval": "qt_ms",
    "QTCorrected": "qtc_ms",
    "PAxis": "p_axis_deg",
    "RAxis": "qrs_axis_deg",
    "TAxis": "t_axis_deg",
}


def sniff(head: bytes) -> bool:
    return root_element(head) == "RestingECG"


def read(path: Path, verify_checksums: bool = True) -> Record:
    """Read the rhythm waveform and the cart's statements and measurements of a MUSE export.

    Parameters
    ----------
    path : Path
        The XML file.
    verify_checksums : bool
        Compare each lead's ``LeadDataCRC32`` with the CRC-32 of its decoded bytes.

    Returns
    -------
    Record
        I, II, V1–V6 as stored, then III, aVR, aVL, aVF derived from I and II, in mV.

    Raises
    ------
    RecordError
        Malformed XML, no rhythm waveform, a lead missing or repeated, bad base64, a byte or
        sample count that disagrees with the file, an unknown unit, a CRC mismatch.
    """
    path = Path(path)
    root = parse_xml(path)
    if root.tag != "RestingECG":
        raise RecordError(path, f"not a GE MUSE RestingECG file (root element <{root.tag}>)")
    waveform = _rhythm_waveform(root, path)
    sampling_rate = _sampling_rate(waveform, path)
    leads: dict[str, np.ndarray] = {}
    for lead_data in waveform.findall("LeadData"):
        name = text_of(lead_data, "LeadID")
        if name is None:
            raise RecordError(path, "a LeadData element has no LeadID")
        if name in leads:
            raise RecordError(path, f"lead {name} stored twice")
        leads[name] = _lead_millivolts(lead_data, name, path, verify_checksums)
    require_leads(leads, STORED_LEADS, path, "the rhythm waveform")
    require_equal_lengths(leads, path)
    return record_from_leads(
        path,
        leads,
        sampling_rate,
        patient_id=text_of(root, "PatientDemographics/PatientID"),
        format=FORMAT,
        acquired=_acquired(root),
        device=_device(root),
        statements=_statements(root),
        measurements=_measurements(root),
    )


def _rhythm_waveform(root: Element, path: Path) -> Element:
    types = []
    for waveform in root.findall("Waveform"):
        kind = text_of(waveform, "WaveformType")
        if kind is not None and kind.lower() == "rhythm":
            return waveform
        types.append(kind or "?")
    found = f" (only {', '.join(types)})" if types else ""
    raise RecordError(path, f"no Rhythm waveform{found}")


def _sampling_rate(waveform: Element, path: Path) -> float:
    base = number(text_of(waveform, "SampleBase"))
    exponent = number(text_of(waveform, "SampleExponent")) or 0.0
    if base is None or base <= 0:
        raise RecordError(path, f"invalid or missing SampleBase {text_of(waveform, 'SampleBase')!r}")
    return base * 10.0**exponent


def _lead_millivolts(lead_data: Element, name: str, path: Path, verify_checksums: bool) -> np.ndarray:
    encoded = text_of(lead_data, "WaveFormData")
    if encoded is None:
        raise RecordError(path, f"lead {name} has no WaveFormData")
    try:
        raw = base64.b64decode("".join(encoded.split()), validate=True)
    except (binascii.Error, ValueError):
        raise RecordError(path, f"lead {name}: WaveFormData is not valid base64") from None
    sample_size = int(number(text_of(lead_data, "LeadSampleSize")) or 2)
    if sample_size not in _SAMPLE_DTYPES:
        raise RecordError(path, f"lead {name}: unsupported sample size of {sample_size} bytes")
    byte_count = number(text_of(lead_data, "LeadByteCountTotal"))
    if byte_count is not None and len(raw) != byte_count:
        raise RecordError(path, f"truncated waveform: {len(raw):,} of {int(byte_count):,} bytes of lead {name}")
    if len(raw) % sample_size:
        raise RecordError(path, f"truncated waveform: lead {name} ends within a sample")
    crc = text_of(lead_data, "LeadDataCRC32")
    if verify_checksums and crc is not None and number(crc) is not None and zlib.crc32(raw) != int(number(crc)):
        raise RecordError(path, f"lead {name}: CRC-32 mismatch (file says {crc}, data gives {zlib.crc32(raw)})")
    counts = np.frombuffer(raw, dtype=_SAMPLE_DTYPES[sample_size])
    sample_count = number(text_of(lead_data, "LeadSampleCountTotal"))
    if sample_count is not None and len(counts) != sample_count:
        raise RecordError(path, f"truncated waveform: {len(counts):,} of {int(sample_count):,} samples of lead {name}")
    units_per_bit = number(text_of(lead_data, "LeadAmplitudeUnitsPerBit"))
    if units_per_bit is None or units_per_bit <= 0:
        raise RecordError(path, f"lead {name}: invalid or missing LeadAmplitudeUnitsPerBit")
    unit = text_of(lead_data, "LeadAmplitudeUnits")
    to_mv = millivolts_per_unit(unit)
    if to_mv is None:
        raise RecordError(path, f"lead {name}: unknown amplitude unit {unit!r}")
    return counts.astype(np.float64) * (units_per_bit * to_mv)


def _acquired(root: Element) -> str | None:
    date = text_of(root, "TestDemographics/AcquisitionDate")
    time = text_of(root, "TestDemographics/AcquisitionTime") or "00:00:00"
    if date is None:
        return None
    try:
        return datetime.strptime(f"{date} {time}", "%m-%d-%Y %H:%M:%S").isoformat()
    except ValueError:
        return None


def _device(root: Element) -> str | None:
    cart = text_of(root, "TestDemographics/AcquisitionDevice")
    muse = text_of(root, "MuseInfo/MuseVersion")
    parts = [f"GE {cart}" if cart else None, f"MUSE {muse}" if muse else None]
    return ", ".join(p for p in parts if p) or None


def _statements(root: Element) -> tuple[str, ...]:
    diagnosis = root.find("OriginalDiagnosis")
    if diagnosis is None:
        diagnosis = root.find("Diagnosis")
    if diagnosis is None:
        return ()
    texts = (text_of(statement, "StmtText") for statement in diagnosis.findall("DiagnosisStatement"))
    return tuple(text for text in texts if text)


def _measurements(root: Element) -> dict[str, float]:
    table = root.find("OriginalRestingECGMeasurements")
    if table is None:
        table = root.find("RestingECGMeasurements")
    measurements = {}
    if table is not None:
        for tag, key in _MEASUREMENTS.items():
            value = number(text_of(table, tag))
            if value is not None:
                measurements[key] = value
    rr = number(text_of(root, "PharmaData/PharmaRRinterval"))
    if rr is not None and rr > 0:
        measurements["rr_ms"] = rr
    return measurements
