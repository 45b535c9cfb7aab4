"""Read Philips Sierra ECG 1.03 and PhilipsECG 1.04 XML (PageWriter, HeartStart MRx, TraceMasterVue).

Files are UTF-8 or UTF-16 with the namespace ``http://www3.medical.philips.com``; the root is
``<restingecgdata>``. The recording is ``waveforms/parsedwaveforms``: base64, usually XLI
compressed (LZW + second-difference coding, one chunk per channel, 16 channels of which the
first 12 are the standard leads; the last 0.3 s of each lead holds calibration marks).

XLI decompression is ``ecgtool.io.xli.decode_xli``: the same algorithm as ``sierraecg`` (MIT),
vectorised, 15–30× faster on the sample files and checked sample for sample against
``sierraecg.xli.xli_decode`` in the tests. The rest is done here
because ``sierraecg.read_file`` gives no units, statements, measurements or patient data,
applies the lead reconstruction below to uncompressed files as well, and rounds it with
``floor`` where the reference implementation (sierra-ecg-tools, C#) truncates toward zero.

In XLI data, leads III, aVR, aVL and aVF are stored as small residuals against their
Einthoven/Goldberger value, and rebuilt as (C integer division, truncating)::

    III = II − I − r3        aVR = −r4 − (I + II)/2
    aVL = (I − III)/2 − r5   aVF = (II + III)/2 − r6

Counts are µV × ``resolution`` (``parsedwaveforms@resolution`` in 1.04,
``signalcharacteristics/signalresolution`` in 1.03).
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from xml.etree.ElementTree import Element

import numpy as np

from ecgtool.errors import RecordError
from ecgtool.io.xli import XliError, decode_xli
from ecgtool.io.xml_tools import number, parse_xml, root_element, text_of
from ecgtool.record import Record
from ecgtool.signal import LEADS, with_derived_limb_leads

FORMAT = "philips"
DOCUMENT_TYPES = ("SierraECG", "PhilipsECG")
STANDARD_LEAD_SETS = ("STD-12", "10-WIRE")
_UNCOMPRESSED = ("", "none", "uncompressed")
# Philips measurement tag → Record key; Philips gives ms, bpm and degrees without stating units.
_MEASUREMENTS = {
    "meanventrate": "heart_rate_bpm",
    "meanprint": "pr_ms",
    "meanqrsdur": "qrs_ms",
    "meanqtint": "qt_ms",
    "meanqtc": "qtc_ms",
    "pfrontaxis": "p_axis_deg",
    "qrsfrontaxis": "qrs_axis_deg",
    "tfrontaxis": "t_axis_deg",
}

_PATIENT_ID = "patient/generalpatientdata/patientid"


def sniff(head: bytes) -> bool:
    return root_element(head) == "restingecgdata"


def read_patient_id(path: Path) -> str | None:
    """The patient id alone: the XML is parsed, the XLI waveforms are not decompressed."""
    root = parse_xml(Path(path))
    return text_of(root, _PATIENT_ID)


def read(path: Path, verify_checksums: bool = True) -> Record:
    """Read the rhythm leads and the machine's statements and measurements of a Philips file.

    ``verify_checksums`` is accepted for the common interface; the format has no checksums.

    Raises
    ------
    RecordError
        Malformed XML, an unsupported document type or version, an unknown encoding or
        compression, corrupt XLI data, fewer channels or samples than the file states.
    """
    path = Path(path)
    root = parse_xml(path)
    if root.tag != "restingecgdata":
        raise RecordError(path, f"not a Philips ECG file (root element <{root.tag}>)")
    document_type = text_of(root, "documentinfo/documenttype")
    version = text_of(root, "documentinfo/documentversion") or "?"
    if document_type not in DOCUMENT_TYPES or not (version == "1.03" or version.startswith("1.04")):
        raise RecordError(path, f"unsupported Philips XML: {document_type or 'no document type'} {version}")
    waveforms = root.find("waveforms/parsedwaveforms")
    if waveforms is None:
        raise RecordError(path, "no parsedwaveforms (rhythm leads) in this Philips file")
    signal_details = root.find("dataacquisition/signalcharacteristics")
    sampling_rate = number(waveforms.get("samplespersecond")) or number(text_of(signal_details, "samplingrate"))
    duration_ms = number(waveforms.get("durationperchannel"))
    if not sampling_rate or not duration_ms:
        raise RecordError(path, "sampling rate or durationperchannel missing")
    n_samples = int(round(duration_ms * sampling_rate / 1000))
    lead_names = _lead_names(waveforms, signal_details, path)
    counts, compressed = _decode_counts(waveforms, len(lead_names), n_samples, lead_names, path)
    if compressed and tuple(lead_names[:6]) == LEADS[:6]:
        _rebuild_limb_leads(counts)
    signal = counts.astype(np.float64) * _millivolts_per_count(waveforms, signal_details, path)
    record = Record(
        record_id=path.stem,
        path=str(path),
        signal=signal.astype(np.float32),
        sampling_rate=float(sampling_rate),
        lead_names=tuple(lead_names),
        patient_id=text_of(root, _PATIENT_ID),
        format=FORMAT,
        acquired=_acquired(root.find("dataacquisition")),
        device=_device(root),
        statements=_statements(root),
        measurements=_measurements(root),
    )
    return with_derived_limb_leads(record)


def _lead_names(waveforms: Element, signal_details: Element | None, path: Path) -> list[str]:
    labels = (waveforms.get("leadlabels") or "").split()
    count = number(waveforms.get("numberofleads"))
    if labels:
        return labels[: int(count)] if count else labels
    lead_set = text_of(signal_details, "acquisitiontype") or text_of(signal_details, "leadset")
    channels = number(text_of(signal_details, "numberchannelsallocated"))
    if lead_set not in STANDARD_LEAD_SETS:
        raise RecordError(path, f"unsupported Philips lead set {lead_set!r} without lead labels")
    if channels is not None and channels < len(LEADS):
        raise RecordError(path, f"only {int(channels)} channels allocated, 12 expected for {lead_set}")
    return list(LEADS)


def _decode_counts(waveforms: Element, n_leads: int, n_samples: int, names: list[str], path: Path) -> tuple[np.ndarray, bool]:
    encoding = waveforms.get("dataencoding", "Base64")
    text = waveforms.text or ""
    if encoding == "Plain":
        try:
            flat = np.array([int(value) for value in text.split()], dtype=np.int32)
        except ValueError:
            raise RecordError(path, "parsedwaveforms: a Plain sample is not an integer") from None
        return _split_channels(flat, n_leads, n_samples, names, path), False
    if encoding != "Base64":
        raise RecordError(path, f"unknown waveform encoding {encoding!r}")
    try:
        raw = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise RecordError(path, "parsedwaveforms is not valid base64") from None
    compression = _compression(waveforms)
    if compression.lower() in _UNCOMPRESSED:
        if len(raw) % 2:
            raise RecordError(path, "truncated waveform: odd number of bytes in 16-bit data")
        return _split_channels(np.frombuffer(raw, dtype="<i2").astype(np.int32), n_leads, n_samples, names, path), False
    if compression != "XLI":
        raise RecordError(path, f"unknown compression {compression!r}")
    try:
        chunks = decode_xli(raw)
    except XliError as error:
        raise RecordError(path, f"corrupt XLI waveform data: {error}") from None
    if len(chunks) < n_leads:
        raise RecordError(path, f"XLI data holds {len(chunks)} channels, {n_leads} leads expected (lead {names[len(chunks)]} missing)")
    for name, chunk in zip(names, chunks):
        if len(chunk) < n_samples:
            raise RecordError(path, f"truncated waveform: {len(chunk):,} of {n_samples:,} samples of lead {name}")
    return np.stack([np.asarray(chunk[:n_samples], dtype=np.int32) for chunk in chunks[:n_leads]]), True


def _compression(waveforms: Element) -> str:
    if waveforms.get("compressflag", "").strip().lower() == "false":
        return "Uncompressed"
    return (waveforms.get("compressmethod") or waveforms.get("compression") or "Uncompressed").strip()


def _split_channels(flat: np.ndarray, n_leads: int, n_samples: int, names: list[str], path: Path) -> np.ndarray:
    if len(flat) < n_leads * n_samples:
        lead = names[min(len(flat) // n_samples, n_leads - 1)]
        raise RecordError(path, f"truncated waveform: {len(flat):,} of {n_leads * n_samples:,} samples (lead {lead} short)")
    return flat[: n_leads * n_samples].reshape(n_leads, n_samples)


def _rebuild_limb_leads(counts: np.ndarray) -> None:
    """III, aVR, aVL, aVF from their XLI residuals, in place (rows 2–5; I and II in rows 0–1)."""
    lead_i, lead_ii = counts[0], counts[1]
    counts[2] = lead_ii - lead_i - counts[2]
    counts[3] = -counts[3] - _halve(lead_i + lead_ii)
    counts[4] = _halve(lead_i - counts[2]) - counts[4]
    counts[5] = _halve(lead_ii + counts[2]) - counts[5]


def _halve(values: np.ndarray) -> np.ndarray:
    """Integer halving that truncates toward zero, as C and C# do (NumPy's // floors)."""
    return np.sign(values) * (np.abs(values) // 2)


def _millivolts_per_count(waveforms: Element, signal_details: Element | None, path: Path) -> float:
    resolution = (
        number(waveforms.get("resolution"))
        or number(text_of(signal_details, "resolution"))
        or number(text_of(signal_details, "signalresolution"))
    )
    if resolution is None or resolution <= 0:
        raise RecordError(path, "no signal resolution (µV per count) in this Philips file")
    return resolution / 1000.0


def _acquired(acquisition: Element | None) -> str | None:
    if acquisition is None or not acquisition.get("date"):
        return None
    time = acquisition.get("time")
    return f"{acquisition.get('date')}T{time}" if time else acquisition.get("date")


def _device(root: Element) -> str | None:
    machine = root.find("dataacquisition/machine")
    if machine is None:
        return None
    parts = ["Philips", (machine.text or "").strip(), machine.get("detaildescription", "").strip()]
    return " ".join(part for part in parts if part) if parts[1] else None


def _statements(root: Element) -> tuple[str, ...]:
    """Statements of the first interpretation that no editor changed, then its severity line."""
    interpretation = root.find("interpretations/interpretation")
    if interpretation is None:
        return ()
    statements = []
    for statement in interpretation.findall("statement"):
        if statement.get("editedflag", "").lower() == "true":
            continue  # inserted or changed by a person, not the analysis program
        left, right = text_of(statement, "leftstatement"), text_of(statement, "rightstatement")
        if left or right:
            statements.append(" | ".join(part for part in (left, right) if part))
    severity = text_of(interpretation, "severity")
    if severity:
        statements.append(severity)
    return tuple(statements)


def _measurements(root: Element) -> dict[str, float]:
    table = root.find("internalmeasurements/crossleadmeasurements")  # 1.04
    if table is None:
        table = root.find("measurements/globalmeasurements")  # 1.03
    fallback = root.find("interpretations/interpretation/interpretationmeasurements")
    measurements = {}
    for tag, key in _MEASUREMENTS.items():
        value = number(text_of(table, tag))
        if value is None and tag == "meanventrate":
            value = number(text_of(fallback, "heartrate"))
        elif value is None:
            value = number(text_of(fallback, tag))
        if value is not None:
            measurements[key] = value
    return measurements
