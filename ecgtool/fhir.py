"""A reading as an HL7 FHIR R4 Bundle, built as plain JSON-able dicts (no FHIR library needed).

One reading (the ``--json`` dict of ``ecgtool predict``, docs/predict.md) becomes a Bundle of
type ``collection`` holding

* one DiagnosticReport: LOINC 11524-6 "EKG study", category v2-0074 ``EC``, status
  ``preliminary`` (a machine reading no physician has confirmed), conclusion = the reading's
  report line, conclusionCode and ``result`` = every Observation below;
* one Observation per measurement the reading carries (LOINC-coded where LOINC has the
  measurement, UCUM units); a measurement that could not be made (``null``) is an Observation
  with ``dataAbsentReason`` and ecgtool's reason, never a number;
* one Observation per finding called present (with ``all_calibrated``: per finding of the
  reading that has a calibrated probability or a measured call), coded with the registry's
  SNOMED CT codes and its own id, ``valueBoolean`` = the call and the calibrated probability of
  presence as a component in percent. A finding without a calibrated probability never gets one
  (those decided by their measurement criterion say so in ``method`` and ``device``).

The same reading, model and options give the same Bundle, byte for byte: every id is a UUID 5
derived from the reading's identity (:func:`reading_to_fhir`), and the only clock read is the
assembly time, which ``now`` fixes. ``write_record_fhir`` and ``write_directory_fhir`` are what
``ecgtool predict --fhir`` writes with. Decisions, codes and an example: docs/fhir.md.
"""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path

from ecgtool import __version__
from ecgtool.errors import EcgToolError
from ecgtool.files import write_json_atomic, written_whole
from ecgtool.registry import EXCLUDED_BY, LANGUAGES, Registry, load_registry

# ecgtool's own code systems. FHIR needs a stable URI for each, not a resolvable page: change them
# here only together with docs/fhir.md, since receiving systems map on them.
ECGTOOL_URI = "https://github.com/ecgtool"
FINDINGS_SYSTEM = f"{ECGTOOL_URI}/findings"  # registry finding ids (labels/findings.yaml)
MEASUREMENTS_SYSTEM = f"{ECGTOOL_URI}/measurements"  # the measurement keys of a reading
READING_SYSTEM = f"{ECGTOOL_URI}/reading"  # concepts of a reading itself (the probability component)
RECORD_ID_SYSTEM = f"{ECGTOOL_URI}/record-id"  # the record's id, as the reading names it

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
URI_IDENTIFIER = "urn:ietf:rfc:3986"
DIAGNOSTIC_SERVICE = "http://terminology.hl7.org/CodeSystem/v2-0074"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
DATA_ABSENT_REASON = "http://terminology.hl7.org/CodeSystem/data-absent-reason"

STATUS = "preliminary"  # a machine reading: no physician has confirmed it
PROBABILITY_CODE = "probability-of-presence"
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, ECGTOOL_URI + "/fhir")
_EARLIEST_SCHEMA = 2  # version 1 called the softmax share "probability": never export it as one


@dataclass(frozen=True)
class MeasurementCode:
    """How one measurement key of a reading is coded: LOINC codes (none where LOINC has no code
    for it), an English name and a UCUM unit."""

    key: str
    name: str
    unit: str
    loinc: tuple[tuple[str, str], ...] = ()  # (code, display)


MEASUREMENTS = (
    MeasurementCode("heart_rate_bpm", "Heart rate", "/min", (("8867-4", "Heart rate"),)),
    MeasurementCode("rr_ms", "RR interval", "ms"),
    MeasurementCode("pr_ms", "PR interval", "ms", (("8625-6", "P-R interval"),)),
    MeasurementCode("qrs_ms", "QRS duration", "ms", (("8633-0", "QRS duration"),)),
    MeasurementCode("qt_ms", "QT interval", "ms", (("8634-8", "Q-T interval"),)),
    # The reading's QTc is Bazett's: the method-free code every system knows, and Bazett's own.
    MeasurementCode("qtc_ms", "QTc interval (Bazett)", "ms",
                    (("8636-3", "Q-T interval corrected"), ("76635-2", "Q-T interval corrected based on Bazett formula"))),
    MeasurementCode("qtcf_ms", "QTc interval (Fridericia)", "ms",
                    (("76634-5", "Q-T interval corrected based on Fridericia formula"),)),
    MeasurementCode("p_axis_deg", "P wave axis", "deg", (("8626-4", "P wave axis"),)),
    MeasurementCode("qrs_axis_deg", "QRS axis", "deg", (("8632-2", "QRS axis"),)),
    MeasurementCode("t_axis_deg", "T wave axis", "deg", (("8638-1", "T wave axis"),)),
    MeasurementCode("sokolow_lyon_mv", "Sokolow-Lyon voltage (SV1 + RV5/RV6)", "mV"),
    MeasurementCode("cornell_mv", "Cornell voltage (RaVL + SV3)", "mV"),
    MeasurementCode("st_j60_mv", "ST level at J+60 ms", "mV"),  # per lead: one component each
)

# SNOMED codes the registry maps onto a finding as a strict sub-type of it (docs/registry.md,
# mapping rule 2): an ECG coded "atrial tachycardia" reads as Supraventricular Tachycardia, but a
# reading of Supraventricular Tachycardia does not say "atrial tachycardia", so these are never
# emitted for the finding.
NARROWER_SNOMED_CODES = frozenset({
    "67198005", "713422000", "251166008", "233896004", "233897008", "426648003",  # kinds of SVT
    "251164006", "251170000",  # junctional and blocked atrial premature complexes
    "426749004", "314208002",  # chronic, rapid atrial fibrillation
    "49260003", "61277005", "81898007",  # idioventricular, accelerated idioventricular, escape rhythm
    "251268003", "251266004",  # atrial, ventricular pacing
    "251173003",  # atrial bigeminy
})


class FhirError(EcgToolError):
    """A reading that cannot be exported as FHIR; the message says why."""


@dataclass(frozen=True)
class ModelInfo:
    """The model bundle a reading came from, as the FHIR resources name it.

    Attributes
    ----------
    name : str
        What to call the bundle (its folder name, e.g. ``"default"``).
    weights : Mapping[str, str]
        SHA-256 of each weight file that decides the scores (``bundle.weight_checksums``).
    calibration_sha256 : str or None
        SHA-256 of the bundle's calibration file; None for an uncalibrated bundle.
    """

    name: str
    weights: Mapping[str, str]
    calibration_sha256: str | None = None

    @classmethod
    def from_bundle_description(cls, name: str, description: Mapping) -> ModelInfo:
        """The identity ``bundle.json`` records (bundles exported before it recorded checksums:
        build ``ModelInfo`` from ``ecgtool.bundle.weight_checksums`` instead)."""
        files = description.get("files", {})
        weights = {file: entry["sha256"] for file, entry in files.items() if file in ("model.safetensors", "text.safetensors")}
        if not weights:
            raise FhirError(f"bundle {name}: bundle.json records no weight checksums (pass ModelInfo(weights=...))")
        calibration = description.get("calibration")
        return cls(name, weights, calibration["sha256"] if calibration else None)

    @classmethod
    def from_bundle(cls, bundle) -> ModelInfo:
        """The identity of a loaded ``ecgtool.bundle.Bundle``, named by its folder; its weight
        checksums as ``bundle.json`` records them (computed from the files for older bundles), and
        its calibration only when the bundle was loaded with it."""
        from ecgtool.bundle import weight_checksums  # here: the bundle module imports torch

        calibration = bundle.description.get("calibration") if bundle.calibration is not None else None
        return cls(bundle.directory.name, weight_checksums(bundle.directory, bundle.description),
                   calibration["sha256"] if calibration else None)

    @property
    def fingerprint(self) -> str:
        """First 16 hex digits of a SHA-256 over the weight checksums: the bundle fingerprint that
        names its embedding files (``ecgtool.embeddings.bundle_fingerprint``)."""
        lines = "".join(f"{file}:{digest}\n" for file, digest in sorted(self.weights.items()))
        return hashlib.sha256(lines.encode("ascii")).hexdigest()[:16]

    @property
    def display(self) -> str:
        return f"ecgtool model bundle {self.name} (fingerprint {self.fingerprint})"


def snomed_codes(registry: Registry) -> dict[str, tuple[str, ...]]:
    """Finding id → the SNOMED CT codes that state it, in registry order: the registry's
    ``snomed`` map read backwards, without the codes it maps as narrower sub-types."""
    codes: dict[str, list[str]] = {}
    for code, finding_ids in registry.vocabularies["snomed"].mapped.items():
        if code not in NARROWER_SNOMED_CODES:
            for finding_id in finding_ids:
                codes.setdefault(finding_id, []).append(code)
    return {finding_id: tuple(found) for finding_id, found in codes.items()}


def reading_to_fhir(reading: Mapping, *, model: ModelInfo, registry: Registry | None = None,
                    lang: str | None = None, measurements: Mapping | None = None, all_calibrated: bool = False,
                    patient_reference: str | None = None, acquired: str | None = None,
                    now: datetime | None = None) -> dict:
    """One reading as a FHIR R4 Bundle (type ``collection``), as a JSON-able dict.

    Parameters
    ----------
    reading : Mapping
        The ``--json`` dict of ``ecgtool predict`` (schema version 2 or later; docs/predict.md).
    model : ModelInfo
        The bundle that made the reading: named in every Observation's ``device``, and part of
        every id.
    registry : Registry, optional
        The label registry (default: the packaged one): SNOMED codes and finding names.
    lang : {"ja", "en"}, optional
        The reading's language. Default: the reading's ``lang`` field, else the language its
        finding names are in. Given, it must agree with both.
    measurements : Mapping, optional
        Measurement key → number or None, with ``reasons`` (key → why it is None); default: the
        reading's own ``measurements``. Keys not in :data:`MEASUREMENTS` are not exported.
    all_calibrated : bool
        One Observation per finding of the reading with a calibrated probability (present,
        absent or not called), instead of only those called present. The reading lists the
        top-k findings and every present one: read with ``--top 98`` for all of them.
    patient_reference : str, optional
        A FHIR reference (``"Patient/123"``) for ``subject``.
    acquired : str, optional
        Acquisition time, ISO 8601 (``Record.acquired``) → ``effectiveDateTime``. A time without a
        UTC offset is cut to its date: FHIR requires the offset, and none is guessed.
    now : datetime, optional
        Assembly time (timezone-aware) for ``Bundle.timestamp`` and ``DiagnosticReport.issued``;
        default: the current time.

    Returns
    -------
    dict
        The Bundle. Its ids are UUID 5 of (record id, acquisition time, patient reference,
        model weights, calibration, language): the same reading exports to the same ids.

    Raises
    ------
    FhirError
        A reading of schema version 1, of superset classes, in another language than ``lang``,
        or with a measurement that is not a finite number.
    """
    registry = registry or load_registry()
    _check_schema(reading)
    lang = _reading_language(reading, registry, lang)
    effective = _effective(acquired)
    issued = _instant(now)
    identity = "\n".join([str(reading["record_id"]), effective or "", patient_reference or "", model.fingerprint,
                          model.calibration_sha256 or "", lang])
    bundle_id = uuid.uuid5(_NAMESPACE, identity)
    context = _Context(bundle_id, lang, model, patient_reference, effective)

    if measurements is None:
        measurements = reading.get("measurements") or {}
    observations = _measurement_observations(measurements, context)
    codes = snomed_codes(registry)
    findings = _exported_findings(reading, all_calibrated)
    finding_observations = [_finding_observation(f, registry, codes, context) for f in findings]
    report = _diagnostic_report(reading, [entry for entry, _ in observations + finding_observations],
                                [_finding_code(f["id"], registry, codes, lang) for f in reading["present"]],
                                issued, context)
    entries = [report] + observations + finding_observations
    return {
        "resourceType": "Bundle",
        "id": str(bundle_id),
        "identifier": {"system": URI_IDENTIFIER, "value": bundle_id.urn},
        "type": "collection",
        "timestamp": issued,
        "entry": [{"fullUrl": full_url, "resource": resource} for full_url, resource in entries],
    }


def write_fhir_json(path: str | Path, bundle: Mapping) -> None:
    """Write one Bundle as indented UTF-8 JSON, whole or not at all (temporary file, rename)."""
    write_json_atomic(Path(path), dict(bundle))


def write_fhir_ndjson(path: str | Path, bundles: Iterable[Mapping]) -> int:
    """Write Bundles as NDJSON (one per line, as FHIR bulk data does), whole or not at all;
    return how many. The Bundles are streamed: a directory's readings need not fit in memory."""
    count = 0
    with written_whole(Path(path), fsync=True) as tmp:
        try:
            with open(tmp, "w", encoding="utf-8", newline="\n") as out:
                for bundle in bundles:
                    out.write(json.dumps(bundle, ensure_ascii=False, separators=(",", ":"), allow_nan=False) + "\n")
                    count += 1
        except BaseException:  # a reading that cannot be exported: no half-written file left beside the output
            tmp.unlink(missing_ok=True)
            raise
    return count


def measurements_of(prediction) -> dict:
    """The measurements of an ``ecgtool.predict.Prediction`` as a reading carries them
    (``Measurements.to_dict()``); empty when it has none."""
    measured = getattr(prediction, "measurements", None)
    return measured.to_dict() if measured is not None else {}


def write_record_fhir(path: str | Path, prediction, bundle, *, lang: str, all_calibrated: bool = False) -> dict:
    """Write the reading of one record (``ecgtool predict FILE --fhir OUT.json``) as one Bundle.

    Parameters
    ----------
    path : str or Path
        The ``.json`` file to write, whole or not at all.
    prediction : ecgtool.predict.Prediction
        The record's reading, in ``lang``.
    bundle : ecgtool.bundle.Bundle
        The model bundle that made it.
    lang : {"ja", "en"}
        The reading's language.
    all_calibrated : bool
        Also export every listed finding with a calibrated probability (:func:`reading_to_fhir`).

    Returns
    -------
    dict
        The Bundle written.
    """
    from ecgtool.predict import prediction_as_dict  # here: predict imports torch

    path = _fhir_output(path, ".json", "one record's FHIR Bundle")
    fhir = reading_to_fhir(prediction_as_dict(prediction, bundle), model=ModelInfo.from_bundle(bundle), lang=lang,
                           measurements=measurements_of(prediction), all_calibrated=all_calibrated)
    write_fhir_json(path, fhir)
    return fhir


def write_directory_fhir(path: str | Path, jsonl_path: str | Path, bundle, *, lang: str,
                         all_calibrated: bool = False) -> int:
    """Write every reading of a directory's ``.jsonl`` output (``ecgtool predict DIR --out
    X.jsonl --fhir OUT.ndjson``) as NDJSON, one Bundle per line in the file's order; return how
    many. The whole file is rewritten, so after a resumed run it covers every record scored so far.

    Raises
    ------
    FhirError
        ``jsonl_path`` is not a readable ``.jsonl`` reading file, or a line cannot be exported
        (the message names the file and the line).
    """
    path = _fhir_output(path, ".ndjson", "a directory's FHIR Bundles, one per line")
    jsonl_path = Path(jsonl_path)
    if jsonl_path.suffix.lower() != ".jsonl":
        raise FhirError(f"{jsonl_path}: the FHIR export of a directory reads its .jsonl readings (--out FILE.jsonl)")
    model = ModelInfo.from_bundle(bundle)

    def bundles():
        with open(jsonl_path, encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    yield reading_to_fhir(json.loads(line), model=model, lang=lang, all_calibrated=all_calibrated)
                except json.JSONDecodeError as error:
                    raise FhirError(f"{jsonl_path}: line {number}: not JSON ({error.msg})") from None
                except FhirError as error:
                    raise FhirError(f"{jsonl_path}: line {number}: {error}") from None
                except KeyError as error:
                    raise FhirError(f"{jsonl_path}: line {number}: not a reading of ecgtool predict "
                                    f"(no {error.args[0]!r} field)") from None
                except (AttributeError, TypeError):
                    raise FhirError(f"{jsonl_path}: line {number}: not a reading of ecgtool predict "
                                    "(not an object of its fields)") from None

    try:
        return write_fhir_ndjson(path, bundles())
    except OSError as error:
        raise FhirError(f"{error.filename or jsonl_path}: cannot read or write ({error.strerror or error})") from None


def _fhir_output(path: str | Path, suffix: str, what: str) -> Path:
    path = Path(path)
    if path.suffix.lower() != suffix:
        raise FhirError(f"{path}: expected a {suffix} file ({what})")
    return path


# --- the resources ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Context:
    bundle_id: uuid.UUID
    lang: str
    model: ModelInfo
    patient_reference: str | None
    effective: str | None

    def urn(self, key: str) -> str:
        return uuid.uuid5(self.bundle_id, key).urn

    def common(self, full_url: str) -> dict:
        """The fields every resource of the reading shares."""
        resource = {"id": full_url.removeprefix("urn:uuid:")}
        if self.patient_reference is not None:
            resource["subject"] = {"reference": self.patient_reference}
        if self.effective is not None:
            resource["effectiveDateTime"] = self.effective
        return resource


def _diagnostic_report(reading: Mapping, results: list[str], conclusion_codes: list[dict], issued: str,
                       context: _Context) -> tuple[str, dict]:
    full_url = context.urn("report")
    resource = {"resourceType": "DiagnosticReport", **context.common(full_url), "language": context.lang,
                "identifier": [{"system": RECORD_ID_SYSTEM, "value": str(reading["record_id"])}],
                "status": STATUS,
                "category": [{"coding": [{"system": DIAGNOSTIC_SERVICE, "code": "EC", "display": "Electrocardiac"}]}],
                "code": {"coding": [{"system": LOINC, "code": "11524-6", "display": "EKG study"}], "text": "EKG study"},
                "issued": issued}
    resource = _ordered(resource)
    if results:
        resource["result"] = [{"reference": url} for url in results]
    if reading.get("report") is not None:
        resource["conclusion"] = reading["report"]
    if conclusion_codes:
        resource["conclusionCode"] = conclusion_codes
    return full_url, resource


_ELEMENT_ORDER = ("resourceType", "id", "language", "identifier", "status", "category", "code", "subject",
                  "effectiveDateTime", "issued")


def _ordered(resource: dict) -> dict:
    """The resource's keys in FHIR's element order, for a reader of the JSON (the rest after)."""
    first = {key: resource[key] for key in _ELEMENT_ORDER if key in resource}
    return {**first, **{key: value for key, value in resource.items() if key not in first}}


def _observation(key: str, code: dict, context: _Context, language: bool) -> tuple[str, dict]:
    full_url = context.urn(key)
    resource = {"resourceType": "Observation", **context.common(full_url), "status": STATUS,
                "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": "procedure", "display": "Procedure"}]}],
                "code": code}
    if language:
        resource["language"] = context.lang
    return full_url, _ordered(resource)


def _measurement_observations(measurements: Mapping, context: _Context) -> list[tuple[str, dict]]:
    reasons = measurements.get("reasons") or {}
    observations = []
    for measure in MEASUREMENTS:
        if measure.key not in measurements:
            continue
        value = measurements[measure.key]
        full_url, resource = _observation(f"measurement/{measure.key}", _measurement_code(measure), context, language=False)
        if isinstance(value, Mapping):  # per lead
            resource["component"] = [
                {"code": {"coding": [{"system": MEASUREMENTS_SYSTEM, "code": f"{measure.key}:{lead}",
                                      "display": f"{measure.name}, lead {lead}"}], "text": f"{measure.name}, lead {lead}"},
                 **_value_or_absence(measure, lead_value, _reason(reasons.get(measure.key), lead), f"{measure.key} {lead}")}
                for lead, lead_value in value.items()]
        else:
            resource.update(_value_or_absence(measure, value, _reason(reasons, measure.key), measure.key))
        resource["method"] = {"text": "ecgtool measurement program (signal processing of the 12 leads, not the model)"}
        resource["device"] = {"display": f"ecgtool {__version__}"}
        observations.append((full_url, resource))
    return observations


def _measurement_code(measure: MeasurementCode) -> dict:
    coding = [{"system": LOINC, "code": code, "display": display} for code, display in measure.loinc]
    coding.append({"system": MEASUREMENTS_SYSTEM, "code": measure.key, "display": measure.name})
    return {"coding": coding, "text": measure.name}


def _reason(reasons, key: str) -> str | None:
    reason = reasons.get(key) if isinstance(reasons, Mapping) else reasons
    return reason if isinstance(reason, str) else None


def _value_or_absence(measure: MeasurementCode, value, reason: str | None, what: str) -> dict:
    if value is None:
        absent = {"coding": [{"system": DATA_ABSENT_REASON, "code": "unknown", "display": "Unknown"}]}
        if reason:
            absent["text"] = reason
        return {"dataAbsentReason": absent}
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise FhirError(f"measurement {what}: {value!r} is not a finite number (an unmeasurable value is null with a reason)")
    return {"valueQuantity": {"value": value, "unit": measure.unit, "system": UCUM, "code": measure.unit}}


def _exported_findings(reading: Mapping, all_calibrated: bool) -> list[Mapping]:
    """The findings to export, each once: those called present, in the reading's order, then
    (``all_calibrated``) every other listed finding with a probability or a measured call, in
    rank order."""
    chosen = {f["id"]: f for f in reading["present"]}
    if all_calibrated:
        for finding in reading["findings"]:
            if finding["id"] not in chosen and (finding.get("probability") is not None or _measured(finding)):
                chosen[finding["id"]] = finding
    return list(chosen.values())


def _measured(finding: Mapping) -> bool:
    """Called by its defining criterion on the measurements, where the model has no operating point."""
    return finding.get("decided_by") == "measurement" and finding.get("present") is not None


def _finding_code(finding_id: str, registry: Registry, codes: Mapping[str, tuple[str, ...]], lang: str) -> dict:
    name = registry.finding(finding_id).name(lang)
    coding = [{"system": SNOMED, "code": code} for code in codes.get(finding_id, ())]
    coding.append({"system": FINDINGS_SYSTEM, "version": registry.version, "code": finding_id, "display": name})
    return {"coding": coding, "text": name}


def _finding_observation(finding: Mapping, registry: Registry, codes: Mapping[str, tuple[str, ...]],
                         context: _Context) -> tuple[str, dict]:
    full_url, resource = _observation(f"finding/{finding['id']}", _finding_code(finding["id"], registry, codes, context.lang),
                                      context, language=True)
    call = finding.get("present")
    if call is None:
        resource["dataAbsentReason"] = {
            "coding": [{"system": DATA_ABSENT_REASON, "code": "not-performed", "display": "Not Performed"}],
            "text": "not called: the model bundle has no operating point for this finding"}
    else:
        resource["valueBoolean"] = bool(call)
        code, display = ("POS", "Positive") if call else ("NEG", "Negative")
        resource["interpretation"] = [{"coding": [{"system": INTERPRETATION, "code": code, "display": display}]}]
    if finding.get("excluded_by"):  # above its operating point, but an exclusive finding is more probable
        resource["note"] = [{"text": EXCLUDED_BY[context.lang].format(
            excluded=registry.finding(finding["id"]).name(context.lang),
            winner=registry.finding(finding["excluded_by"]).name(context.lang))}]
    if _measured(finding):
        resource["method"] = {"text": "ecgtool measurement program: the finding's published criterion on the measured "
                                      "values (the model has no operating point for this finding)"}
        resource["device"] = {"display": f"ecgtool {__version__}"}
    elif finding.get("decided_by") == "model+measurement":
        resource["method"] = {"text": "ecgtool ECG-text model and measurement program together: the similarity of the "
                                      "ECG to the finding's statement and the measured values of its criterion, "
                                      "combined and calibrated on a validation split, called at its operating point"}
        resource["device"] = {"display": context.model.display}
    else:
        resource["method"] = {"text": "ecgtool ECG-text model: similarity of the ECG to the finding's statement, "
                                      "calibrated on a validation split, called at the finding's operating point"}
        resource["device"] = {"display": context.model.display}
    if finding.get("probability") is not None:
        resource["component"] = [{
            "code": {"coding": [{"system": READING_SYSTEM, "code": PROBABILITY_CODE,
                                 "display": "Calibrated probability of presence"}],
                     "text": "Calibrated probability of presence"},
            "valueQuantity": {"value": round(100 * float(finding["probability"]), 4), "unit": "%", "system": UCUM, "code": "%"},
        }]
    return full_url, resource


# --- checks and times ---------------------------------------------------------------------------


def _check_schema(reading: Mapping) -> None:
    version = reading.get("schema_version")
    if not isinstance(version, int) or version < _EARLIEST_SCHEMA:
        raise FhirError(f"reading of {reading.get('record_id', '?')}: schema version {version!r}; FHIR export needs "
                        f"version {_EARLIEST_SCHEMA} or later (version 1 has no calibrated probabilities)")


def _reading_language(reading: Mapping, registry: Registry, lang: str | None) -> str:
    """The language the reading's names are in, checked against the registry and ``lang``."""
    if lang is not None and lang not in LANGUAGES:
        raise FhirError(f"lang {lang!r}: expected one of {', '.join(LANGUAGES)}")
    named = list(reading["present"]) + list(reading["findings"])
    strangers = sorted({f["id"] for f in named} - set(registry.ids()))
    if reading.get("superset") is not None or strangers:
        raise FhirError(f"reading of {reading['record_id']}: scores superset classes, not the registry's findings "
                        f"(superset readings have no FHIR form)")
    languages = [candidate for candidate in LANGUAGES
                 if all(f["name"] == registry.finding(f["id"]).name(candidate) for f in named)]
    stated = reading.get("lang")
    for claim in (stated, lang):
        if claim is not None and claim not in languages:
            raise FhirError(f"reading of {reading['record_id']}: its finding names are not in {claim!r}")
    if lang is not None:
        return lang
    if stated is not None:
        return stated
    if len(languages) != 1:
        raise FhirError(f"reading of {reading['record_id']}: cannot tell its language from its finding names")
    return languages[0]


def _instant(now: datetime | None) -> str:
    if now is None:
        now = datetime.now(timezone.utc)
    if now.tzinfo is None:
        raise FhirError("now: a FHIR instant needs a timezone-aware time")
    return now.isoformat(timespec="seconds")


def _effective(acquired: str | None) -> str | None:
    if acquired is None:
        return None
    try:
        parsed = datetime.fromisoformat(acquired)
    except ValueError:
        raise FhirError(f"acquired {acquired!r}: not an ISO 8601 date or time") from None
    if parsed.tzinfo is None:
        return date(parsed.year, parsed.month, parsed.day).isoformat()
    return parsed.isoformat(timespec="seconds")
