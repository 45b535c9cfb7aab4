"""Read HL7 v3 annotated ECG (FDA aECG) XML: ``<AnnotatedECG xmlns="urn:hl7-org:v3">``.

The recording is the first ``component/series`` whose code is ``RHYTHM`` (else the first
series); its ``sequenceSet`` holds one time sequence and one ``SLIST_PQ`` sequence per lead:

* time: ``GLIST_TS`` (absolute) or ``GLIST_PQ`` (relative) with ``increment value unit`` (s or
  ms) → sampling rate = 1 / increment;
* lead: ``code`` ``MDC_ECG_LEAD_<name>``, ``origin`` and ``scale`` with their units (µV, mV …),
  ``digits`` space-separated integers; physical value = origin + scale × digit.

When a series holds several sequence sets (leads recorded in groups), the one with the most
leads is read. The representative beat (``derivation/derivedSeries``) is not read as signal.

Measurements are annotations (``MDC_ECG_TIME_PD_PR``, ``…_QRS``, ``…_QT``, ``…_QTc``,
``MDC_ECG_HEART_RATE``, ``MDC_ECG_ANGLE_*_FRONT``) at the top level of an annotation set —
of the representative beat first, else of the rhythm series — not the per-beat ones nested in
``MDC_ECG_BEAT`` annotations. Statements are the coded rhythm (``MDC_ECG_RHY``) and free-text
interpretation annotations of sets not authored by a person.
"""

from __future__ import annotations

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
    root_element,
    record_from_leads,
    text_of,
)
from ecgtool.record import Record

FORMAT = "hl7-aecg"
_LEAD_PREFIX = "MDC_ECG_LEAD_"
_LEAD_NAMES = {"AVR": "aVR", "AVL": "aVL", "AVF": "aVF"}
_TIME_CODES = ("TIME_ABSOLUTE", "TIME_RELATIVE")
_DURATIONS = {
    "MDC_ECG_TIME_PD_PR": "pr_ms",
    "MDC_ECG_TIME_PD_QRS": "qrs_ms",
    "MDC_ECG_TIME_PD_QT": "qt_ms",
    "MDC_ECG_TIME_PD_QTc": "qtc_ms",
    "MDC_ECG_TIME_PD_RR": "rr_ms",
}
_ANGLES = {
    "MDC_ECG_ANGLE_P_FRONT": "p_axis_deg",
    "MDC_ECG_ANGLE_QRS_FRONT": "qrs_axis_deg",
    "MDC_ECG_ANGLE_T_FRONT": "t_axis_deg",
}
_RATE_CODES = ("MDC_ECG_HEART_RATE", "MDC_ECG_VENT_RATE")
_STATEMENT_CODES = ("MDC_ECG_RHY", "MDC_ECG_INTERPRETATION", "MDC_ECG_INTERPRETATION_STATEMENT")


def sniff(head: bytes) -> bool:
    return root_element(head) == "AnnotatedECG"


def read(path: Path, verify_checksums: bool = True) -> Record:
    """Read the rhythm series and the device's annotations of an aECG file.

    ``verify_checksums`` is accepted for the common interface; the format has no checksums.

    Raises
    ------
    RecordError
        Malformed XML, no rhythm series or no time sequence, an unknown unit, a non-integer
        digit, leads of unequal length.
    """
    path = Path(path)
    root = parse_xml(path)
    if root.tag != "AnnotatedECG":
        raise RecordError(path, f"not an HL7 aECG file (root element <{root.tag}>)")
    series = _rhythm_series(root, path)
    sequences = _largest_sequence_set(series, path)
    sampling_rate = None
    leads: dict[str, np.ndarray] = {}
    for sequence in sequences:
        code, value = _code(sequence), sequence.find("value")
        if code in _TIME_CODES:
            sampling_rate = _sampling_rate(value, path)
        elif code.startswith(_LEAD_PREFIX) and value is not None:
            name = _lead_name(code)
            if name in leads:
                raise RecordError(path, f"lead {name} stored twice")
            leads[name] = _lead_millivolts(value, name, path)
    if sampling_rate is None:
        raise RecordError(path, "no time sequence (TIME_ABSOLUTE / TIME_RELATIVE) in the rhythm sequence set")
    if not leads:
        raise RecordError(path, "no lead sequences in the rhythm sequence set")
    require_equal_lengths(leads, path)
    return record_from_leads(
        path,
        leads,
        sampling_rate,
        patient_id=_patient_id(root),
        format=FORMAT,
        acquired=_acquired(root, series),
        device=_device(series),
        statements=_statements(series),
        measurements=_measurements(series),
    )


def _code(element: Element | None) -> str:
    found = element.find("code") if element is not None else None
    return (found.get("code") or "") if found is not None else ""


def _rhythm_series(root: Element, path: Path) -> Element:
    series = root.findall("component/series")
    if not series:
        raise RecordError(path, "no ECG series (component/series) in this aECG file")
    return next((s for s in series if _code(s) == "RHYTHM"), series[0])


def _largest_sequence_set(series: Element, path: Path) -> list[Element]:
    sets = [s.findall("component/sequence") for s in series.findall("component/sequenceSet")]
    if not sets:
        raise RecordError(path, "the rhythm series has no sequenceSet")
    return max(sets, key=lambda sequences: sum(_code(s).startswith(_LEAD_PREFIX) for s in sequences))


def _sampling_rate(value: Element | None, path: Path) -> float:
    increment = value.find("increment") if value is not None else None
    step = number(increment.get("value")) if increment is not None else None
    factor = milliseconds_per_unit(increment.get("unit", "s")) if increment is not None else None
    if step is None or step <= 0 or factor is None:
        unit = increment.get("unit") if increment is not None else None
        raise RecordError(path, f"invalid time increment (value {step}, unit {unit!r})")
    return 1000.0 / (step * factor)


def _lead_name(code: str) -> str:
    name = code[len(_LEAD_PREFIX):]
    return _LEAD_NAMES.get(name.upper(), name)


def _physical(element: Element | None, what: str, name: str, path: Path) -> float:
    """An origin or scale in mV; an absent origin is 0."""
    if element is None:
        if what == "origin":
            return 0.0
        raise RecordError(path, f"lead {name}: no scale")
    value, unit = number(element.get("value")), element.get("unit")
    to_mv = millivolts_per_unit(unit)
    if value is None or to_mv is None:
        raise RecordError(path, f"lead {name}: {what} {element.get('value')!r} in unknown unit {unit!r}")
    return value * to_mv


def _lead_millivolts(value: Element, name: str, path: Path) -> np.ndarray:
    origin = _physical(value.find("origin"), "origin", name, path)
    scale = _physical(value.find("scale"), "scale", name, path)
    digits = value.find("digits")
    if digits is None or not (digits.text or "").strip():
        raise RecordError(path, f"lead {name} has no digits")
    try:
        counts = np.array(digits.text.split(), dtype=np.int64)
    except ValueError:
        bad = next(field for field in digits.text.split() if not field.lstrip("-").isdigit())
        raise RecordError(path, f"lead {name}: digit {bad[:20]!r} is not an integer") from None
    return origin + scale * counts.astype(np.float64)


def _patient_id(root: Element) -> str | None:
    subject = root.find("componentOf/timepointEvent/componentOf/subjectAssignment/subject/trialSubject/id")
    if subject is None:
        return None
    return subject.get("extension") or subject.get("root")


def _hl7_timestamp(value: str | None) -> str | None:
    """HL7 TS ``YYYYMMDDHHMMSS[.fff]`` as ISO 8601."""
    if not value or len(value) < 8 or not value[:8].isdigit():
        return None
    digits = value.split("+")[0].split("-")[0]
    date = f"{digits[0:4]}-{digits[4:6]}-{digits[6:8]}"
    if len(digits) < 12:
        return date
    seconds = digits[12:14] or "00"
    return f"{date}T{digits[8:10]}:{digits[10:12]}:{seconds}{digits[14:]}"


def _acquired(root: Element, series: Element) -> str | None:
    for element in (series.find("effectiveTime/low"), root.find("effectiveTime/center"), root.find("effectiveTime/low")):
        if element is not None and element.get("value"):
            return _hl7_timestamp(element.get("value"))
    return None


def _device(series: Element) -> str | None:
    author = series.find("author/seriesAuthor")
    if author is None:
        return None
    parts = [
        text_of(author, "manufacturerOrganization/name"),
        text_of(author, "manufacturedSeriesDevice/manufacturerModelName"),
        text_of(author, "manufacturedSeriesDevice/softwareName"),
    ]
    return " ".join(part for part in parts if part) or None


def _machine_annotation_sets(series: Element) -> list[Element]:
    """Annotation sets of the representative beat, then of the rhythm, not authored by a person."""
    sets = series.findall("derivation/derivedSeries/subjectOf/annotationSet") + series.findall("subjectOf/annotationSet")
    return [s for s in sets if s.find("author/assignedEntity/assignedAuthorType/assignedPerson") is None]


def _measurements(series: Element) -> dict[str, float]:
    measurements: dict[str, float] = {}
    for annotation_set in _machine_annotation_sets(series):
        for annotation in annotation_set.findall("component/annotation"):
            code, value = _code(annotation), annotation.find("value")
            if value is None or number(value.get("value")) is None:
                continue
            amount, unit = number(value.get("value")), value.get("unit", "")
            if code in _DURATIONS and milliseconds_per_unit(unit) is not None:
                measurements.setdefault(_DURATIONS[code], amount * milliseconds_per_unit(unit))
            elif code in _ANGLES and unit.lower() in ("deg", "degrees", ""):
                measurements.setdefault(_ANGLES[code], amount)
            elif code in _RATE_CODES and unit.lower() in ("bpm", "/min", "1/min", "{beats}/min"):
                measurements.setdefault("heart_rate_bpm", amount)
    return measurements


def _statements(series: Element) -> tuple[str, ...]:
    statements = []
    for annotation_set in _machine_annotation_sets(series):
        for annotation in annotation_set.findall("component/annotation"):
            value = annotation.find("value")
            if _code(annotation) not in _STATEMENT_CODES or value is None:
                continue
            text = (value.text or "").strip() or value.get("displayName") or value.get("code")
            if text and text not in statements:
                statements.append(text)
    return tuple(statements)
