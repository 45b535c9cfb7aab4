"""Read DICOM ECG waveforms: 12-Lead ECG Waveform Storage and General ECG Waveform Storage.

The rhythm multiplex group (not the median beats) is read with pydicom and scaled per channel:
``value = (stored × Channel Sensitivity × Correction Factor + Channel Baseline)`` in the units of
the Channel Sensitivity Units Sequence (UCUM), converted to mV. Lead names come from the channel
source code (SCPECG ``5.6.3-9-n`` or MDC ``2:n``, both numbered as SCP-ECG's lead table), or else
from its code meaning. Patient id, acquisition time, device, the machine's free-text statements
and its coded global measurements are read from the dataset and its Waveform Annotation Sequence.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ecgtool.errors import RecordError
from ecgtool.io.scp_ecg import SCP_LEAD_NAMES
from ecgtool.record import Record
from ecgtool.signal import LEADS, with_derived_limb_leads

TWELVE_LEAD_ECG = "1.2.840.10008.5.1.4.1.1.9.1.1"
GENERAL_ECG = "1.2.840.10008.5.1.4.1.1.9.1.2"
ECG_SOP_CLASSES = {TWELVE_LEAD_ECG: "12-lead ECG waveform", GENERAL_ECG: "general ECG waveform"}

_STORAGE_SOP_CLASS = re.compile(rb"1\.2\.840\.10008\.5\.1\.4\.1\.1\.[0-9.]*[0-9]")
_SAMPLE_DTYPES = {
    (8, "SB"): "i1", (8, "UB"): "u1", (8, "MB"): "u1", (8, "AB"): "u1",
    (16, "SS"): "<i2", (16, "US"): "<u2", (32, "SL"): "<i4", (32, "UL"): "<u4",
}
_MILLIVOLTS_PER_UNIT = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "nv": 1e-6, "v": 1e3}
_LEAD_CODE = re.compile(r"5\.6\.3-9-(\d+)|2:(\d+)")
_MDC_LEAD_PARTITION = 2 << 16  # MDC codes also appear as one number: partition 2 × 65536 + lead code
_LEAD_BY_UPPER_NAME = {name.upper(): name for name in SCP_LEAD_NAMES.values()}

# Global measurements by the code meaning of their concept name (SCPECG / DICOM CID 3678 wording).
_MEASUREMENT_KEYS = {
    "rr interval": "rr_ms",
    "pr interval": "pr_ms",
    "qrs duration": "qrs_ms",
    "qt interval": "qt_ms",
    "qtc interval": "qtc_ms",
    "p axis": "p_axis_deg",
    "qrs axis": "qrs_axis_deg",
    "t axis": "t_axis_deg",
    "heart rate": "heart_rate_bpm",
    "ventricular heart rate": "heart_rate_bpm",
    "ventricular rate": "heart_rate_bpm",
}
# UCUM unit → factor to the unit a measurement key ends in.
_UNIT_FACTORS = {"ms": {"ms": 1.0, "s": 1000.0}, "deg": {"deg": 1.0}, "bpm": {"/min": 1.0, "bpm": 1.0}}


def sniff(head: bytes) -> bool:
    """'DICM' at byte 128 and an ECG waveform SOP class as the first storage SOP class UID in the head.

    A DICOM file whose head names no storage SOP class at all (a file meta group without it) is
    accepted too, so that ``read`` can look further; one that names another class (an image) is not.
    """
    if len(head) < 132 or head[128:132] != b"DICM":
        return False
    match = _STORAGE_SOP_CLASS.search(head, 132)
    return match is None or match.group().decode("ascii") in ECG_SOP_CLASSES


def read(path: Path, verify_checksums: bool = True) -> Record:
    """Read the rhythm waveform of a DICOM ECG.

    Parameters
    ----------
    path : Path
        The DICOM file (Part 10, with preamble).
    verify_checksums : bool
        Unused: DICOM waveforms carry no checksum.

    Returns
    -------
    Record
        The rhythm multiplex group in mV with canonical lead names; III, aVR, aVL, aVF derived
        from I and II when the file stores only I, II and V1–V6.

    Raises
    ------
    RecordError
        Not DICOM, another SOP class, no rhythm group, truncated waveform data, unknown units or
        sample format, a general ECG without the 12 standard leads.
    """
    import pydicom  # a heavy import, paid only when a DICOM file is read

    path = Path(path)
    try:
        dataset = pydicom.dcmread(path)
        record = _record_from_dataset(path, dataset)
    except RecordError:
        raise
    except _Malformed as error:
        raise RecordError(path, str(error)) from None
    except Exception as error:  # pydicom converts elements lazily: a damaged value raises any type on access
        raise RecordError(path, f"unreadable DICOM: {_one_line(error)}") from None
    return record


def _record_from_dataset(path: Path, dataset) -> Record:
    import pydicom

    sop_class = str(dataset.get("SOPClassUID") or dataset.file_meta.get("MediaStorageSOPClassUID") or "")
    if sop_class not in ECG_SOP_CLASSES:
        name = pydicom.uid.UID(sop_class).name if sop_class else "unknown"
        raise _Malformed(f"DICOM SOP class {sop_class or 'missing'} ({name}) is not an ECG waveform")
    group = rhythm_group(dataset)
    signal, lead_names = read_multiplex_group(group)
    record = Record(
        record_id=path.stem,
        path=str(path),
        signal=signal,
        sampling_rate=float(group.SamplingFrequency),
        lead_names=lead_names,
        patient_id=_text(dataset.get("PatientID")),
        format="dicom-ecg",
        acquired=_acquisition_time(dataset),
        device=_device(dataset),
        statements=machine_statements(dataset),
        measurements=global_measurements(dataset),
    )
    record = with_derived_limb_leads(record)
    if sop_class == GENERAL_ECG and not set(LEADS) <= set(record.lead_names):
        missing = ", ".join(lead for lead in LEADS if lead not in record.lead_names)
        raise _Malformed(f"general ECG waveform without the 12 standard leads (missing: {missing})")
    return record


class _Malformed(Exception):
    """A problem in the waveform module; ``read`` turns it into a ``RecordError``."""


def rhythm_group(dataset):
    """The multiplex group holding the rhythm: labelled RHYTHM, else the longest ORIGINAL group."""
    groups = list(dataset.get("WaveformSequence") or [])
    if not groups:
        raise _Malformed("no waveform sequence (5400,0100)")
    for group in groups:
        if str(group.get("MultiplexGroupLabel", "")).strip().upper() == "RHYTHM":
            return group
    candidates = [g for g in groups if str(g.get("WaveformOriginality", "")).upper() == "ORIGINAL"] or groups
    candidates = [g for g in candidates if "MEDIAN" not in str(g.get("MultiplexGroupLabel", "")).upper()]
    if not candidates:
        raise _Malformed("only median-beat waveforms, no rhythm multiplex group")
    return max(candidates, key=_duration_s)


def _duration_s(group) -> float:
    try:
        return float(group.NumberOfWaveformSamples) / float(group.SamplingFrequency)
    except (AttributeError, TypeError, ValueError, ZeroDivisionError):
        return 0.0


def read_multiplex_group(group) -> tuple[np.ndarray, tuple[str, ...]]:
    """``(n_channels, n_samples)`` float32 mV and the lead name of each channel."""
    try:
        n_channels = int(group.NumberOfWaveformChannels)
        n_samples = int(group.NumberOfWaveformSamples)
        bits = int(group.WaveformBitsAllocated)
        interpretation = str(group.WaveformSampleInterpretation)
        sampling_rate = float(group.SamplingFrequency)
        channels = list(group.ChannelDefinitionSequence)
        waveform_data = bytes(group.WaveformData)
    except AttributeError as error:
        raise _Malformed(f"rhythm multiplex group lacks {_missing_attribute(error)}") from None
    if sampling_rate <= 0:
        raise _Malformed(f"sampling frequency {sampling_rate:g} Hz")
    dtype = _SAMPLE_DTYPES.get((bits, interpretation))
    if dtype is None:
        raise _Malformed(f"unsupported waveform sample format: {bits} bits, interpretation {interpretation!r}")
    if len(channels) != n_channels:
        raise _Malformed(f"{len(channels)} channel definitions for {n_channels} waveform channels")
    n_stored = len(waveform_data) // (np.dtype(dtype).itemsize * n_channels)
    if n_stored < n_samples:
        raise _Malformed(f"truncated waveform: {n_stored:,} of {n_samples:,} samples per channel")
    stored = np.frombuffer(waveform_data, dtype=dtype, count=n_samples * n_channels).reshape(n_samples, n_channels)
    padding = group.get("WaveformPaddingValue")
    signal = np.empty((n_channels, n_samples), dtype=np.float32)
    lead_names = []
    for index, channel in enumerate(channels):
        name = lead_name(channel) or f"channel {index + 1}"
        gain_mv, offset_mv = _channel_scale(channel, name)
        samples = stored[:, index].astype(np.float64) * gain_mv + offset_mv
        if padding is not None:
            samples[stored[:, index] == _padding_value(padding, dtype)] = np.nan
        signal[index] = samples
        lead_names.append(name)
    return signal, tuple(lead_names)


def _channel_scale(channel, name: str) -> tuple[float, float]:
    """(mV per stored unit, baseline in mV) of one channel."""
    if "ChannelSensitivity" not in channel:
        raise _Malformed(f"lead {name}: no channel sensitivity (003A,0210), amplitude unknown")
    units_sequence = channel.get("ChannelSensitivityUnitsSequence") or []
    unit = str(units_sequence[0].get("CodeValue", "")) if units_sequence else ""
    millivolts = _MILLIVOLTS_PER_UNIT.get(unit.lower())
    if millivolts is None:
        raise _Malformed(f"lead {name}: unknown channel sensitivity unit {unit or 'missing'!r}")
    sensitivity = float(channel.ChannelSensitivity)
    correction = float(channel.get("ChannelSensitivityCorrectionFactor") or 1.0)
    baseline = float(channel.get("ChannelBaseline") or 0.0)
    return sensitivity * correction * millivolts, baseline * millivolts


def _padding_value(padding, dtype: str) -> int:
    raw = padding if isinstance(padding, (bytes, bytearray)) else bytes(padding)
    return int(np.frombuffer(raw[: np.dtype(dtype).itemsize], dtype=dtype)[0])


def lead_name(channel) -> str | None:
    """The canonical name of a channel's lead from its Channel Source Sequence (code, else meaning)."""
    sources = channel.get("ChannelSourceSequence") or []
    if not sources:
        return None
    source = sources[0]
    code = str(source.get("CodeValue", "")).strip()
    match = _LEAD_CODE.fullmatch(code)
    if match:
        lead_code = int(match.group(1) or match.group(2))
        if lead_code in SCP_LEAD_NAMES:
            return SCP_LEAD_NAMES[lead_code]
    if code.isdigit() and int(code) - _MDC_LEAD_PARTITION in SCP_LEAD_NAMES:
        return SCP_LEAD_NAMES[int(code) - _MDC_LEAD_PARTITION]
    meaning = re.sub(r"\(.*?\)", "", str(source.get("CodeMeaning", ""))).strip()
    meaning = re.sub(r"^lead\s+", "", meaning, flags=re.IGNORECASE)
    return _LEAD_BY_UPPER_NAME.get(meaning.upper(), meaning or None)


def machine_statements(dataset) -> tuple[str, ...]:
    """The free-text statements of the Waveform Annotation Sequence, in order."""
    statements = []
    for annotation in dataset.get("WaveformAnnotationSequence") or []:
        text = _text(annotation.get("UnformattedTextValue"))
        if text:
            statements.append(text)
    return tuple(statements)


def global_measurements(dataset) -> dict[str, float]:
    """Coded numeric annotations that name a global interval, axis or rate in known units."""
    measurements: dict[str, float] = {}
    for annotation in dataset.get("WaveformAnnotationSequence") or []:
        names = annotation.get("ConceptNameCodeSequence") or []
        if "NumericValue" not in annotation or not names or "ReferencedSamplePositions" in annotation:
            continue
        key = _MEASUREMENT_KEYS.get(str(names[0].get("CodeMeaning", "")).strip().lower())
        if key is None or key in measurements:
            continue
        units = annotation.get("MeasurementUnitsCodeSequence") or []
        unit = str(units[0].get("CodeValue", "")) if units else None
        factors = _UNIT_FACTORS[key.rsplit("_", 1)[1]]
        factor = factors.get(unit) if unit is not None else 1.0
        try:
            value = float(annotation.NumericValue) * factor if factor is not None else None
        except (TypeError, ValueError):
            value = None
        if value is not None and np.isfinite(value):
            measurements[key] = value
    return measurements


def _acquisition_time(dataset) -> str | None:
    stamp = str(dataset.get("AcquisitionDateTime") or "").strip()
    if not stamp:
        stamp = str(dataset.get("ContentDate") or "").strip() + str(dataset.get("ContentTime") or "").strip()
    match = re.match(r"(\d{4})(\d{2})(\d{2})(?:(\d{2})(\d{2})?(\d{2})?)?", stamp)
    if not match:
        return None
    year, month, day, hour, minute, second = match.groups()
    acquired = f"{year}-{month}-{day}"
    if hour:
        acquired += f"T{hour}:{minute or '00'}:{second or '00'}"
    return acquired


def _device(dataset) -> str | None:
    parts = [_text(dataset.get(keyword)) for keyword in ("Manufacturer", "ManufacturerModelName", "SoftwareVersions")]
    return " / ".join(part for part in parts if part) or None


def _text(value) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) and hasattr(value, "__iter__"):
        value = ", ".join(str(item) for item in value)
    text = str(value).strip()
    return text or None


def _missing_attribute(error: AttributeError) -> str:
    match = re.search(r"attribute '(\w+)'", str(error))
    return match.group(1) if match else str(error)


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split()) or type(error).__name__
