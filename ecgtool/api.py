"""The Python face of ecgtool, for notebooks and scripts: load a model, read ECGs, export readings::

    import ecgtool

    model = ecgtool.load_model()                                 # the default model shipped with ecgtool
    reading = model.read("examples/ptb-xl/00299_hr.hea")         # or an array, with sampling_rate and leads
    reading.report_line("en"), reading.findings, reading.measurements, reading.to_fhir()

A file is read exactly as ``ecgtool predict FILE`` reads it (``ecgtool.io.canonical``, with the
options of the bundle's input contract), and an array goes through the same ``canonicalize``
once it is a ``Record``: the same samples give the same findings whichever way they come in. The
reading is one, whatever the language: ``lang`` chooses the words of ``to_dict`` and the report
line, never the scores, probabilities or calls. Walk-through: docs/api.md.

``ecgtool/__init__.py`` re-exports this module's public names lazily; this module imports torch
only when a model is loaded, so ``ecgtool.labels()`` and ``ecgtool.read_record()`` stay cheap.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ecgtool.errors import EcgToolError
from ecgtool.fhir import ModelInfo, measurements_of, reading_to_fhir
from ecgtool.io import read_record as _read_raw_record
from ecgtool.io.canonical import load_canonical
from ecgtool.record import Record
from ecgtool.registry import Finding as RegistryFinding
from ecgtool.registry import Registry, load_registry, parse_language
from ecgtool.signal import LEADS, SAMPLING_RATE, CanonicalOptions, _canonical_rows, canonicalize

if TYPE_CHECKING:
    import torch

    from ecgtool.bundle import Bundle
    from ecgtool.predict import Prediction

__all__ = ["Model", "Reading", "ReadingFinding", "SourceError", "labels", "load_model", "read_record"]


class SourceError(EcgToolError):
    """Something given to ``Model.read`` that is neither a record file nor an ECG array it can
    take: the message names it and says what is wrong."""


@dataclass(frozen=True)
class ReadingFinding:
    """One finding of a reading, as a row of ``ecgtool predict``'s table.

    Attributes
    ----------
    id : str
        Registry id (``labels/findings.yaml``).
    ja, en : str
        The finding's name in Japanese and in English.
    score : float
        The reading score: mean over the bundle's languages of the cosine similarity of the ECG
        to the finding's statement (the ranking).
    probability : float or None
        Calibrated probability of presence; None where the bundle has no calibration for it.
    call : bool or None
        Called present (True) or absent (False) at the finding's operating point; None: no
        operating point (not called).
    excluded_by : str or None
        Above its operating point, but not called: the id of the exclusive finding that is more
        probable and called instead.
    decided_by : str or None
        None: the model's score alone made the call; ``"model+measurement"``: the score and
        the measurements together, as the bundle's calibration combines them for the findings a
        measurement supports (``ecgtool.combined_calibration``); ``"measurement"``: the model
        has no operating point for the finding, and its defining criterion on the measurements
        made the call (``ecgtool.measured_findings``; no probability then).
    """

    id: str
    ja: str
    en: str
    score: float
    probability: float | None
    call: bool | None
    excluded_by: str | None = None
    decided_by: str | None = None

    def name(self, lang: str) -> str:
        """The finding's name in ``lang`` ("ja" or "en")."""
        return {"ja": self.ja, "en": self.en}[parse_language(lang)]


@dataclass(frozen=True)
class Reading:
    """The reading of one ECG by a model: what ``ecgtool predict`` prints, as objects.

    Attributes
    ----------
    record_id : str
        The record's id (file stem), or the id given with an array.
    path : str or None
        The file as given; None for an array or a ``Record``.
    lang : str
        The language ``to_dict`` and ``report_line`` use by default.
    calibrated : bool
        False: the bundle has no calibration (scores only: no probability, call or report line).
    findings : tuple of ReadingFinding
        The top ``top`` findings by score and every finding called present, in score order (the
        table's order).
    measurements : Mapping
        ``ecgtool.measure`` keys (``heart_rate_bpm``, ``pr_ms`` … with ``reasons``) when the
        reading carries measurements; empty otherwise.
    """

    record_id: str
    path: str | None
    lang: str
    calibrated: bool
    findings: tuple[ReadingFinding, ...]
    measurements: Mapping[str, Any]
    _prediction: Prediction = field(repr=False, compare=False)
    _model: ModelInfo = field(repr=False, compare=False)

    @property
    def present(self) -> tuple[ReadingFinding, ...]:
        """The findings called present, in the table's order (the report line's)."""
        return tuple(finding for finding in self.findings if finding.call)

    def report_line(self, lang: str | None = None) -> str | None:
        """The report line in ``lang`` (default: the reading's): the registry's template filled
        with the findings called present; None for an uncalibrated bundle. The calls are the
        same in every language."""
        return self._prediction_in(lang).report

    def to_dict(self, lang: str | None = None) -> dict:
        """The ``ecgtool predict --json`` dict of this reading (docs/predict.md), names in
        ``lang`` (default: the reading's)."""
        from ecgtool.predict import prediction_as_dict

        return prediction_as_dict(self._prediction_in(lang))

    def to_fhir(self, **options) -> dict:
        """The reading as a FHIR R4 Bundle (JSON-able dict), with its measurements.

        ``options`` are those of ``ecgtool.fhir.reading_to_fhir``: ``lang`` (default: the
        reading's), ``all_calibrated``, ``patient_reference``, ``acquired``, ``now``
        (docs/fhir.md). ``all_calibrated`` exports the findings the reading lists: read with
        ``top=98`` to export every calibrated finding.
        """
        lang = options.pop("lang", None) or self.lang
        options.setdefault("measurements", dict(self.measurements))
        return reading_to_fhir(self.to_dict(lang), model=self._model, lang=lang, **options)

    def _prediction_in(self, lang: str | None) -> Prediction:
        if lang is None or lang == self.lang:
            return self._prediction
        return _renamed(self._prediction, parse_language(lang), load_registry())


def load_model(path: str | Path | None = None, *, device: str = "auto") -> Model:
    """Load a model bundle: the default one shipped with ecgtool, or the bundle folder ``path``.

    Parameters
    ----------
    path : str or Path, optional
        A bundle folder (``ecgtool export``, ``<run>/bundle``); default: the shipped model.
    device : str
        ``auto`` (CUDA when the machine has it, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``.

    Raises
    ------
    BundleError
        Not a bundle, or one made for another registry or canonical form, or damaged.
    DeviceError
        A device this machine does not have.
    """
    from ecgtool.bundle import resolve_bundle  # here: the bundle imports torch
    from ecgtool.devices import resolve_device

    torch_device = resolve_device(device)
    registry = load_registry()
    return Model(resolve_bundle(path, registry).to(torch_device), torch_device, registry)


class Model:
    """A loaded model bundle that reads ECGs. Made by :func:`load_model`.

    Attributes
    ----------
    bundle : ecgtool.bundle.Bundle
        The bundle (weights, label vectors, input contract, calibration).
    device : torch.device
        Where the encoder runs.
    registry : ecgtool.registry.Registry
        The label registry the bundle was made for.
    canonical_options : ecgtool.signal.CanonicalOptions
        How a record is brought to the canonical form, from the bundle's input contract.
    info : ecgtool.fhir.ModelInfo
        The bundle's name and fingerprint, as its FHIR exports name it.
    """

    def __init__(self, bundle: Bundle, device: torch.device, registry: Registry):
        from ecgtool.bundle import canonical_options

        self.bundle = bundle
        self.device = device
        self.registry = registry
        self.canonical_options = canonical_options(bundle)
        self.info = ModelInfo.from_bundle(bundle)

    def __repr__(self) -> str:
        return f"<ecgtool Model {self.info.name} (fingerprint {self.info.fingerprint}) on {self.device}>"

    @property
    def calibrated(self) -> bool:
        """Whether the bundle carries a calibration (probabilities, calls, report line)."""
        return self.bundle.calibration is not None

    def read(self, source, *, sampling_rate: float | None = None, leads: Sequence[str] | None = None,
             lang: str = "ja", top: int = 5, record_id: str | None = None, measure: bool = True) -> Reading:
        """Read one ECG.

        Parameters
        ----------
        source : str, Path, numpy.ndarray or Record
            A record file of any supported format (WFDB ``.hea``, MFER, vendor XML, DICOM,
            SCP-ECG; docs/formats.md), an array of samples in mV, leads × samples, or a
            ``Record`` (:func:`read_record`).
        sampling_rate : float
            Samples per second of an array (required for arrays; files state their own).
        leads : sequence of str
            The name of each row of an array (``"I"``, ``"II"``, ``"aVR"``, ``"V1"`` …; the
            aliases ``canonicalize`` accepts, in any order; required for arrays).
        lang : {"ja", "en"}
            Language of the names and the report line (the findings are the same in both).
        top : int
            How many findings by score the reading lists (every finding called present is
            listed too).
        record_id : str, optional
            The id of an array's record (default ``"array"``); a file's id is its name.
        measure : bool
            Measure the ECG (rate, intervals, axes, voltages) and read the findings they support
            with it (default); False: the model's scores alone, no measurements.

        Returns
        -------
        Reading

        Raises
        ------
        RecordError
            The file cannot be read, or the ECG cannot be brought to the canonical form (missing
            leads, too short, flat or saturated leads …).
        SourceError
            Not a path or an array; an array of the wrong shape, with unknown lead names, or
            without its sampling rate.
        """
        from ecgtool.predict import predict_signal

        lang, top = parse_language(lang), _checked_top(top)
        identity, path, signal = self._canonical(source, sampling_rate, leads, record_id or "array")
        prediction = predict_signal(identity, path, signal, self.bundle, top, lang, registry=self.registry,
                                    device=self.device, measured=measure)
        return _reading(prediction, lang, self.registry, self.info)

    def read_many(self, sources: Iterable, *, batch_size: int = 64, lang: str = "ja", top: int = 5,
                  sampling_rate: float | None = None, leads: Sequence[str] | None = None,
                  measure: bool = True) -> list[Reading]:
        """Read many ECGs, ``batch_size`` at a time through the encoder.

        ``sources`` mixes record files and arrays (arrays share ``sampling_rate`` and ``leads``;
        the ``i``-th source, if an array, gets the record id ``array-<i>``). The first source that
        cannot be read stops the batch with its error; to read a whole folder, skipping and
        listing unreadable records, use ``ecgtool predict DIR --out FILE.jsonl``. ``measure`` as
        in :meth:`read`.

        Returns
        -------
        list of Reading
            One per source, in order.
        """
        lang, top = parse_language(lang), _checked_top(top)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise SourceError(f"batch_size {batch_size!r}: expected a whole number of at least 1")
        readings: list[Reading] = []
        batch: list[tuple[str, str | None, np.ndarray]] = []
        for index, source in enumerate(sources):
            batch.append(self._canonical(source, sampling_rate, leads, f"array-{index}", files_too=False))
            if len(batch) == batch_size:
                readings += self._read_batch(batch, lang, top, measure)
                batch = []
        if batch:
            readings += self._read_batch(batch, lang, top, measure)
        return readings

    def _read_batch(self, batch: list[tuple[str, str | None, np.ndarray]], lang: str, top: int,
                    measured_too: bool = True) -> list[Reading]:
        import torch

        from ecgtool.measure import measure
        # The batch scorer of ecgtool.predict's directories (each record's calls and exclusions
        # from one forward pass), which predict_signal applies to a batch of one.
        from ecgtool.predict import _predictions

        signals = torch.from_numpy(np.stack([signal for _, _, signal in batch])).to(self.device)
        embeddings = self.bundle.embed(signals)
        measured = [measure(signal) if measured_too else None for _, _, signal in batch]  # as predict_signal does
        predictions = _predictions([identity for identity, _, _ in batch], [path for _, path, _ in batch], embeddings,
                                   self.bundle, top, lang, None, self.registry, measurements=measured)
        return [_reading(prediction, lang, self.registry, self.info) for prediction in predictions]

    def _canonical(self, source, sampling_rate, leads, record_id: str,
                   files_too: bool = True) -> tuple[str, str | None, np.ndarray]:
        """(record id, path as given or None, canonical (12, 5000) mV) of a file or an array;
        ``files_too``: a rate or leads given with a file is a mistake (not so for a mixed batch)."""
        if files_too and isinstance(source, (str, os.PathLike, Record)) and (sampling_rate is not None or leads is not None):
            raise SourceError(f"{getattr(source, 'path', source)}: sampling_rate and leads are for arrays; "
                              "a record states its own")
        if isinstance(source, (str, os.PathLike)):
            identity, signal = load_canonical(source, self.canonical_options)  # as `ecgtool predict FILE`
            return identity, str(source), signal
        record = source if isinstance(source, Record) else array_record(source, sampling_rate, leads, record_id)
        return record.record_id, None, canonicalize(record, self.canonical_options).signal


def array_record(samples, sampling_rate: float | None, leads: Sequence[str] | None, record_id: str = "array") -> Record:
    """An ECG array (leads × samples, mV) as the ``Record`` a reader would return for it.

    Raises
    ------
    SourceError
        Not a numeric 2-D array, rows that do not match ``leads``, an unknown or repeated lead
        name, or a missing or unusable sampling rate.
    """
    if not isinstance(samples, (np.ndarray, list, tuple)) and not hasattr(samples, "__array__"):
        raise SourceError(f"{record_id}: expected a record file path or a NumPy array (leads × samples), "
                          f"got {type(samples).__name__}")
    try:
        signal = np.array(samples, dtype=np.float32)
    except (TypeError, ValueError):
        raise SourceError(f"{record_id}: the array does not hold numbers (dtype {np.asarray(samples).dtype})") from None
    if sampling_rate is None:
        raise SourceError(f"{record_id}: sampling_rate is required with an array (samples per second, e.g. 500)")
    if isinstance(sampling_rate, bool) or not isinstance(sampling_rate, (int, float)) or not math.isfinite(sampling_rate) \
            or sampling_rate <= 0:
        raise SourceError(f"{record_id}: sampling_rate {sampling_rate!r}: expected a positive number of samples per second")
    if leads is None:
        raise SourceError(f"{record_id}: leads is required with an array: the name of each row, e.g. {list(LEADS)}")
    if isinstance(leads, str) or not all(isinstance(lead, str) for lead in leads):
        raise SourceError(f"{record_id}: leads must be a list of lead names, one per row, got {leads!r}")
    leads = tuple(leads)
    if signal.ndim != 2:
        raise SourceError(f"{record_id}: expected a 2-D array (leads × samples), got shape {signal.shape}")
    if signal.shape[0] != len(leads):
        hint = (" (samples × leads? pass array.T; wfdb's p_signal is samples × leads)"
                if signal.shape[1] == len(leads) else "")
        raise SourceError(f"{record_id}: the array has {signal.shape[0]} rows and {len(leads)} lead names; "
                          f"expected leads × samples{hint}")
    # canonicalize matches names and aliases itself; an array has no other channels to ignore,
    # so a name it would not match is a mistake, said here rather than as "missing leads".
    matched = [next(iter(_canonical_rows([lead])), None) for lead in leads]
    unknown = [lead for lead, name in zip(leads, matched) if name is None]
    if unknown:
        raise SourceError(f"{record_id}: unknown lead name(s) {', '.join(map(repr, unknown))} "
                          f"(expected the 12 leads {', '.join(LEADS)}, or their usual aliases)")
    repeated = sorted({name for name in matched if matched.count(name) > 1}, key=LEADS.index)
    if repeated:
        raise SourceError(f"{record_id}: lead(s) {', '.join(repeated)} named more than once")
    if float(sampling_rate) != SAMPLING_RATE:
        _check_resamplable(float(sampling_rate), record_id)
    return Record(record_id=record_id, path=record_id, signal=signal, sampling_rate=float(sampling_rate), lead_names=leads,
                  format="array")


def read_record(path: str | Path, *, canonical: bool = True) -> Record:
    """Read one record file of any supported format (docs/formats.md).

    Parameters
    ----------
    path : str or Path
        The record (WFDB ``.hea``, MFER, vendor XML, DICOM, SCP-ECG …).
    canonical : bool
        True: the record in the canonical form every model reads (12 × 5000 mV at 500 Hz, lead
        order ``ecgtool.signal.LEADS``, ingest's default options), with the file's metadata
        (``acquired``, ``patient_id``, ``report``, ``codes``, the machine's ``measurements`` …).
        False: the record as the file holds it (its own leads, rate and length).

    Raises
    ------
    RecordError
        The file cannot be read or brought to the canonical form.
    """
    record = _read_raw_record(path)
    if not canonical:
        return record
    canonical_signal = canonicalize(record, CanonicalOptions())
    return dataclasses.replace(record, signal=canonical_signal.signal, sampling_rate=float(SAMPLING_RATE),
                               lead_names=LEADS, derived_leads=canonical_signal.derived_leads)


def labels() -> tuple[RegistryFinding, ...]:
    """The registry's 98 findings in registry order (``id``, ``ja``, ``en``, synonyms, supersets)."""
    return load_registry().findings


# --- helpers ------------------------------------------------------------------------------------


def _checked_top(top) -> int:
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise SourceError(f"top {top!r}: expected a whole number of at least 1")
    return top


def _check_resamplable(sampling_rate: float, record_id: str) -> None:
    """``canonicalize`` resamples by a ratio of small integers: refuse a rate it cannot reach
    500 Hz from, in the caller's words rather than scipy's."""
    from fractions import Fraction

    ratio = Fraction(SAMPLING_RATE / sampling_rate).limit_denominator(1000)
    if abs(float(ratio) * sampling_rate - SAMPLING_RATE) > 1e-6 * SAMPLING_RATE:
        raise SourceError(f"{record_id}: sampling_rate {sampling_rate:g} Hz cannot be resampled to {SAMPLING_RATE} Hz "
                          "exactly (give the rate the samples were taken at)")


def _reading(prediction: Prediction, lang: str, registry: Registry, model: ModelInfo) -> Reading:
    findings = tuple(
        ReadingFinding(f.id, registry.finding(f.id).ja, registry.finding(f.id).en, f.score, f.probability, f.present,
                       f.excluded_by, getattr(f, "decided_by", None))
        for f in prediction.findings)
    return Reading(prediction.record_id, prediction.path, lang, prediction.calibrated, findings,
                   measurements_of(prediction), prediction, model)


def _renamed(prediction: Prediction, lang: str, registry: Registry) -> Prediction:
    """The same reading with its names and report line in ``lang``: the scores, probabilities and
    calls do not depend on the language."""
    from ecgtool.predict import report_line

    def renamed(finding):
        return dataclasses.replace(finding, name=registry.finding(finding.id).name(lang))

    report = None if prediction.report is None else report_line([f.id for f in prediction.present], lang, registry)
    return dataclasses.replace(prediction, findings=tuple(map(renamed, prediction.findings)),
                               present=tuple(map(renamed, prediction.present)), report=report)
