"""``ecgtool predict``: the top-k findings of one record, or of every record under a directory.

Records go through the same ``canonicalize`` as at ingest, with the options the bundle's input
contract records. For each finding:

* ``score``: the reading score, the mean over the bundle's languages of the cosine similarity of
  the ECG to the finding's label prompt (the ranking; ``ecgtool.bundle.reading_scores``). It does
  not depend on the output language, nor do the probabilities and calls made from it: the
  language changes the words only;
* ``probability``: the bundle's calibrated probability that the finding is present (None for a
  finding the calibration had too few val positives for, or a bundle without calibration);
* ``present``: called present at the finding's operating point (None where it has none);
* ``softmax_share``: the softmax of the 98 scores at the trained temperature: how the model
  shares one unit among the findings (it sums to 1: not a probability of presence).

Of findings the registry says are never called together (``ecgtool.exclusions``), only the most
probable is called; the others are shown with ``excluded_by``. The table holds the top k by
score and every finding above its operating point, in score order; the report line is the
registry's template filled with the findings called present, in the table's order.
Output schema: docs/predict.md (``PREDICT_SCHEMA_VERSION``).
"""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ecgtool.bundle import Bundle, canonical_options, reading_scores
from ecgtool.combined_calibration import calibrated_columns
from ecgtool.embeddings import EmbeddingWriter
from ecgtool.errors import EcgToolError
from ecgtool.fast_encoder import FastEncoder
from ecgtool.io.canonical import load_canonical, read_canonical_or_reason
from ecgtool.io.discover import find_records, is_record_list, read_record_list
from ecgtool.measure import Measurements, criteria, measure
from ecgtool.measured_findings import measured_calls
from ecgtool.output_lock import exclusive_output
from ecgtool.registry import NOTHING_PRESENT, Registry, load_registry, parse_language
from ecgtool.signal import LEADS, CanonicalOptions

PREDICT_SCHEMA_VERSION = 4  # 4: calls of the findings a measurement supports read it too (decided_by
# "model+measurement"); a record read without measuring says so. 3: one reading whatever the language,
# excluded_by, the table holds every call.
MODEL_AND_MEASUREMENT = "model+measurement"


class PredictError(EcgToolError):
    """Prediction cannot run (no bundle, a bad output file)."""


@dataclass(frozen=True)
class Finding:
    id: str
    name: str
    score: float
    probability: float | None
    present: bool | None
    softmax_share: float
    excluded_by: str | None = None  # above its operating point, but a stronger exclusive finding is called
    # None: the model's score alone; "model+measurement": the score and the measurement together
    # (ecgtool.combined_calibration); "measurement": no operating point, its defining criterion made the call.
    decided_by: str | None = None


@dataclass(frozen=True)
class Prediction:
    record_id: str
    path: str
    findings: tuple[Finding, ...]  # the top k by score, and every finding above its operating point, by score
    present: tuple[Finding, ...] = ()  # every finding called present, in the table's order
    report: str | None = None  # None: the bundle carries no calibration (superset scores: none either)
    calibrated: bool = False
    probabilities: tuple[float | None, ...] | None = None  # every finding's, bundle order (on request)
    measurements: Measurements | None = None  # what the record measures (ecgtool.measure), None if not measured


def predict_record(path: str | Path, bundle: Bundle, top: int = 5, lang: str = "ja",
                   superset: str | None = None, registry: Registry | None = None,
                   device: torch.device = torch.device("cpu"), measured: bool = True) -> Prediction:
    """Top-``top`` findings (or superset classes) of one record (``measured`` False: without
    measurements, every call the model's alone).

    Raises
    ------
    RecordError
        When the record cannot be read or brought to the bundle's input contract.
    """
    record_id, signal = load_canonical(path, canonical_options(bundle))
    return predict_signal(record_id, str(path), signal, bundle, top, lang, superset, registry, device, measured)


def predict_signal(record_id: str, path: str, signal: np.ndarray, bundle: Bundle, top: int = 5, lang: str = "ja",
                   superset: str | None = None, registry: Registry | None = None,
                   device: torch.device = torch.device("cpu"), measured: bool = True) -> Prediction:
    """Top-``top`` findings of a record already in canonical form ((12, 5000) mV)."""
    registry = registry or load_registry()
    embeddings = bundle.embed(torch.from_numpy(signal[None]).to(device))
    return _predictions([record_id], [path], embeddings, bundle, top, lang, superset, registry,
                        measurements=[measure(signal) if measured else None])[0]


def _names(bundle: Bundle, registry: Registry, lang: str, superset: str | None) -> tuple[list[str], list[str]]:
    if superset is None:
        return bundle.findings, [registry.finding(f).ja if lang == "ja" else registry.finding(f).en for f in bundle.findings]
    if superset not in bundle.description["supersets"]:
        raise PredictError(f"--superset {superset}: not one of {', '.join(bundle.description['supersets'])}")
    classes = {c.id: c for c in registry.supersets[superset]}
    ids = bundle.description["supersets"][superset]
    return ids, [classes[i].ja if lang == "ja" else classes[i].en for i in ids]


def report_line(present_ids: list[str], lang: str, registry: Registry) -> str:
    """The registry's report template filled with the findings called present, in the order
    given (the table's) and with its joiner; the "nothing present" statement when there is none."""
    if not present_ids:
        return NOTHING_PRESENT[lang]
    return registry.templates[parse_language(lang)].fill(registry.finding(i).name(lang) for i in dict.fromkeys(present_ids))


def _predictions(record_ids, paths, embeddings, bundle, top, lang, superset, registry,
                 all_probabilities: bool = False, measurements: list | None = None) -> list[Prediction]:
    parse_language(lang)
    ids, names = _names(bundle, registry, lang, superset)
    similarity, share = reading_scores(bundle, embeddings, superset)
    measurements = measurements or [None] * len(record_ids)
    # Probabilities, calls and whether the measurement took part (ecgtool.combined_calibration);
    # exclusions are applied below.
    calibrated = (calibrated_columns(bundle.calibration.findings, bundle.calibration.combined, similarity, measurements)
                  if superset is None and bundle.calibration is not None else None)
    predictions = []
    for row, (record_id, path) in enumerate(zip(record_ids, paths)):
        order = np.argsort(-similarity[row], kind="stable")
        measured = measurements[row]
        if calibrated is None:
            predictions.append(Prediction(record_id, path, tuple(
                Finding(ids[i], names[i], float(similarity[row, i]), None, None, float(share[row, i])) for i in order[:top]),
                measurements=measured))
            continue
        probability, above, combined = calibrated[0][row], calibrated[1][row].copy(), calibrated[2][row]
        # Where neither the model nor its combination with the measurement has an operating point,
        # a finding its measurement defines is decided by it.
        decided = {}
        for finding_id, verdict in measured_calls(measured).items():
            i = registry.index(finding_id)
            if above[i] < 0:
                above[i] = int(verdict.met)
                decided[i] = verdict
        candidates = [int(i) for i in np.flatnonzero(above == 1)]
        # A measured fact is certain: it outranks any model call it excludes.
        strength = [1.0 if i in decided else float(probability[i]) for i in candidates]
        kept, excluded = registry.exclusions.resolve(candidates, strength)

        def finding(i: int) -> Finding:
            call = None if above[i] < 0 else (bool(above[i]) and i not in excluded)
            # A measured call carries no model probability: the model's is not what decided it.
            p = None if np.isnan(probability[i]) or i in decided else float(probability[i])
            by = "measurement" if i in decided else (MODEL_AND_MEASUREMENT if combined[i] else None)
            return Finding(ids[i], names[i], float(similarity[row, i]), p,
                           call, float(share[row, i]), ids[excluded[i]] if i in excluded else None, by)

        shown = set(order[:top].tolist()) | set(candidates)
        table = [int(i) for i in order if int(i) in shown]
        called = [i for i in table if i in kept]
        every = tuple(None if np.isnan(p) else float(p) for p in probability) if all_probabilities else None
        predictions.append(Prediction(record_id, path, tuple(finding(i) for i in table), tuple(finding(i) for i in called),
                                      report_line([ids[i] for i in called], lang, registry), True, every, measured))
    return predictions


# --- directories ------------------------------------------------------------------------------

_worker_options: CanonicalOptions | None = None
_worker_measures = True


def _init_worker(options: CanonicalOptions, reader_process: bool = True, measures: bool = True) -> None:
    global _worker_options, _worker_measures
    if reader_process:
        torch.set_num_threads(1)  # readers only parse and resample; the cores belong to the model
    _worker_options, _worker_measures = options, measures


def _load_or_reason(path: str):
    """(record id, canonical signal, None, measurements) or (name, None, reason, None); measured
    where it is read (in the reader processes when there are some)."""
    read, reason = read_canonical_or_reason(path, _worker_options)
    if read is None:
        return Path(path).stem, None, reason, None
    record, canonical = read
    signal = canonical.signal.astype(np.float32)
    return record.record_id, signal, None, measure(signal) if _worker_measures else None


@dataclass
class DirectoryResult:
    output: Path
    scored: int
    skipped: int
    already_done: int
    seconds: float
    embeddings_not_added: int = 0  # scored records whose id the embedding file already held

    @property
    def records_per_second(self) -> float:
        return self.scored / self.seconds if self.seconds > 0 else float("nan")


def records_to_score(inputs: Sequence[Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Every record under ``inputs`` (directories, record files, or text files listing paths), each
    once however it is named (resolved; a WFDB record by its .hea); and the files found in
    directories that are not records, with the reason."""
    paths: list[Path] = []
    directories = []
    for item in map(Path, inputs):
        if is_record_list(item):
            paths.extend(read_record_list(item))
        else:
            directories.append(item)
    found, rejected = find_records(directories) if directories else ([], [])
    paths += [record.path.resolve() for record in found]
    return list(dict.fromkeys(paths)), [(f.path, f.reason) for f in rejected]


@dataclass(frozen=True)
class ReadingOptions:
    """What each record's line holds: the top ``top`` findings (or superset classes) in ``lang``,
    with ``all_probabilities`` one probability column per finding, and with ``measure`` the
    record's measurements (which the calls of the findings they support then read too)."""

    top: int = 5
    lang: str = "ja"
    superset: str | None = None
    all_probabilities: bool = False
    measure: bool = True  # False: no measurements; every call is the model's alone (model-only calibration)


def predict_directory(
    inputs: Sequence[str | Path],
    output: str | Path,
    bundle: Bundle,
    reading: ReadingOptions = ReadingOptions(),
    batch_size: int | None = None,
    workers: int = 0,
    device: torch.device = torch.device("cpu"),
    registry: Registry | None = None,
    progress: Callable[[int, int], None] | None = None,
    embeddings: str | Path | None = None,
) -> DirectoryResult:
    """Score every record under ``inputs`` into ``output`` (``.csv`` or ``.jsonl``), resuming.

    Records (by resolved path) already in ``output`` are not redone; unreadable ones go to
    ``<output>.skipped.csv`` with their reason, and the rest goes on. One process at a time writes
    ``output`` (a second is refused, see ``ecgtool.output_lock``). The ``path`` column holds each
    record's resolved path. ``batch_size`` None: 1024 records per forward pass on CUDA (through
    the compiled bfloat16 ``FastEncoder``), 64 on the CPU. An existing output written with other options (another ``--top``,
    ``--all-probabilities``, language or schema) is refused rather than mixed. With
    ``embeddings``, every scored record's ECG embedding is also appended to that embedding file
    (``ecgtool.embeddings``; keyed by record id: a record whose id the file already holds is
    counted in ``embeddings_not_added``, not added twice).
    """
    started = time.perf_counter()
    registry = registry or load_registry()
    output = Path(output)
    if output.suffix.lower() not in (".csv", ".jsonl"):
        raise PredictError(f"{output}: the output must be a .csv or .jsonl file")
    if reading.all_probabilities and (reading.superset is not None or bundle.calibration is None):
        raise PredictError(f"--all-probabilities: {bundle.directory} carries no calibration (run `ecgtool calibrate`)"
                           if bundle.calibration is None else "--all-probabilities: not with --superset (findings only)")
    paths, rejected = records_to_score([Path(p) for p in inputs])
    with exclusive_output(output, is_directory=False), _embedding_writer(embeddings, bundle) as vectors:
        return _predict_paths(paths, rejected, output, bundle, reading, batch_size, workers, device, registry,
                              progress, started, vectors)


def _embedding_writer(path: str | Path | None, bundle: Bundle):
    if path is None:
        return nullcontext(None)
    return EmbeddingWriter(path, bundle)


def _predict_paths(paths, rejected, output: Path, bundle: Bundle, reading: ReadingOptions, batch_size, workers,
                   device, registry, progress, started, vectors=None) -> DirectoryResult:
    # Resume keys on the record's resolved file: a re-run that spells the input differently
    # (relative, then absolute; through a symlink) does not score anything twice.
    paths = [Path(p).resolve() for p in paths]
    batch_size = batch_size or (1024 if device.type == "cuda" else 64)
    encoder = FastEncoder(bundle, device, batch_size)  # on the CPU: Bundle.embed, to the bit
    writer = _ResultWriter(output, bundle, reading)
    written = {str(Path(p).resolve()): record_id for p, record_id in _records_in_output(output).items()}
    done = set(written)
    # Records scored by an earlier run whose vector did not reach the embedding file (written
    # after the scores, committed every minute): embedded again, their scores not written twice.
    embed_only = {p for p, record_id in written.items() if vectors is not None and record_id not in vectors.known}
    pending = [p for p in paths if str(p) not in done or str(p) in embed_only]
    skip_path = output.with_name(output.name + ".skipped.csv")
    skipped = 0
    scored = 0
    cores = os.cpu_count() or 1
    # On CPU the model needs the cores more than reading does (~4 ms a record against ~15 ms of
    # inference): read in-process unless asked; with readers, leave them their cores.
    workers = workers or (cores if device.type == "cuda" else 1)
    threads = torch.get_num_threads()
    if device.type == "cpu" and workers > 1:
        torch.set_num_threads(max(1, cores - workers))
    options = canonical_options(bundle)
    if workers > 1 and pending:
        context = multiprocessing.get_context("fork" if hasattr(os, "fork") else "spawn")
        pool = context.Pool(workers, initializer=_init_worker, initargs=(options, True, reading.measure))
        loaded: Iterator = pool.imap(_load_or_reason, [str(p) for p in pending], chunksize=8)
    else:
        pool = None
        _init_worker(options, reader_process=False, measures=reading.measure)
        loaded = map(_load_or_reason, [str(p) for p in pending])
    try:
        # Skipped records are tried again on every run, so each run writes the whole skip list.
        with open(skip_path, "w", newline="", encoding="utf-8") as skips:
            skip_writer = csv.writer(skips)
            skip_writer.writerow(["record", "path", "reason"])
            for path, reason in rejected:
                skip_writer.writerow([path.stem, str(path), reason])
            skipped += len(rejected)
            batch: list[tuple[str, str, np.ndarray, Measurements]] = []
            for path, (record_id, signal, reason, measured) in zip(pending, loaded):
                if reason is not None:
                    skip_writer.writerow([record_id, str(path), reason])
                    skipped += 1
                else:
                    batch.append((record_id, str(path), signal, measured))
                if len(batch) == batch_size:
                    scored += _score_batch(batch, encoder, reading, registry, writer, vectors, embed_only)
                    batch = []
                if progress:
                    progress(scored + skipped, len(pending))
            if batch:
                scored += _score_batch(batch, encoder, reading, registry, writer, vectors, embed_only)
            if progress:
                progress(scored + skipped, len(pending))
    finally:
        torch.set_num_threads(threads)
        writer.close()
        if pool is not None:
            pool.terminate()
            pool.join()
    not_added = scored + len(embed_only) - vectors.appended if vectors is not None else 0
    return DirectoryResult(output, scored, skipped, len(done - embed_only), time.perf_counter() - started, not_added)


def _score_batch(batch, encoder, reading: ReadingOptions, registry, writer, vectors=None,
                 embed_only: set[str] = frozenset()) -> int:
    """Score a batch into the output (and its vectors into the embedding file); return how many
    lines were written."""
    bundle = encoder.bundle
    embeddings = next(encoder.encode_batches([np.stack([s for _, _, s, _ in batch])])).float()
    predictions = _predictions([r for r, _, _, _ in batch], [p for _, p, _, _ in batch], embeddings, bundle, reading.top,
                               reading.lang, reading.superset, registry, reading.all_probabilities,
                               [m for _, _, _, m in batch])
    new = [prediction for prediction in predictions if prediction.path not in embed_only]
    writer.write(new)
    if vectors is not None:
        vectors.append([r for r, _, _, _ in batch], embeddings)
    return len(new)


def _records_in_output(output: Path) -> dict[str, str]:
    """Path → record id of the records already written (ids can repeat across folders); a last
    line cut short by an interruption is dropped."""
    if not output.exists():
        return {}
    data = output.read_bytes()
    if data and not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
        with open(output, "r+b") as handle:
            handle.truncate(len(data))
    text = data.decode("utf-8")
    if output.suffix.lower() == ".jsonl":
        lines = [json.loads(line) for line in text.splitlines() if line.strip()]
        return {line["path"]: line["record_id"] for line in lines}
    return {row["path"]: row["record_id"] for row in csv.DictReader(io.StringIO(text))}


def csv_columns(bundle: Bundle, reading: ReadingOptions) -> list[str]:
    """The directory CSV's header (schema ``PREDICT_SCHEMA_VERSION``, docs/predict.md)."""
    columns = ["record_id", "path", "calibrated", "report", "present", "excluded", "decided_by"]
    if reading.measure:
        columns += [*MEASUREMENT_COLUMNS, *(f"st_j60_mv:{lead}" for lead in LEADS), "measurement_reasons"]
    for rank in range(1, reading.top + 1):
        columns += [f"top{rank}_{field}" for field in ("id", "name", "score", "probability", "present", "softmax_share")]
    if reading.all_probabilities:
        columns += [f"probability:{finding}" for finding in bundle.findings]
    return columns


class _ResultWriter:
    """Appends one line per record and flushes, so an interruption loses at most one line."""

    def __init__(self, output: Path, bundle: Bundle, reading: ReadingOptions):
        self.jsonl = output.suffix.lower() == ".jsonl"
        self.path = output
        self.bundle = bundle
        self.reading = reading
        self.columns = csv_columns(bundle, reading)
        self.header = {"schema_version": PREDICT_SCHEMA_VERSION, "lang": reading.lang, "superset": reading.superset,
                       "top": reading.top, "all_probabilities": reading.all_probabilities, "measured": reading.measure}
        new = not output.exists() or output.stat().st_size == 0
        if not new:
            self._check_existing()
        self.handle = open(output, "a", newline="", encoding="utf-8")
        self.csv = None if self.jsonl else csv.writer(self.handle)
        if new and self.csv is not None:
            self.csv.writerow(self.columns)
            self.handle.flush()

    def _check_existing(self) -> None:
        """A re-run appends to an output only when its lines would be like the ones there."""
        with open(self.path, encoding="utf-8", newline="") as handle:
            first = handle.readline()
        if self.jsonl:
            try:
                line = json.loads(first)
                written = {key: line.get(key) for key in self.header}
            except (json.JSONDecodeError, AttributeError):
                written = None
            same = written == self.header
        else:
            same = next(csv.reader([first]), []) == self.columns
        if not same:
            raise PredictError(f"{self.path}: written by another ecgtool version or with other options (--top, --lang, "
                               "--superset, --all-probabilities, --no-measurements); write to a new file to use these")

    def write(self, predictions: list[Prediction]) -> None:
        """Append a batch's lines whole: a failed write (disk full) is cut back to the last
        complete line, so the output stays valid and a re-run resumes after it."""
        buffer = io.StringIO(newline="")
        writer = None if self.jsonl else csv.writer(buffer)
        for prediction in predictions:
            if self.jsonl:
                line = {**self.header, **prediction_as_dict(prediction, self.bundle)}
                buffer.write(json.dumps(line, ensure_ascii=False, allow_nan=False) + "\n")
            else:
                writer.writerow(csv_row(prediction, self.reading.all_probabilities, self.reading.top, self.reading.measure))
        self.handle.flush()
        complete = self.handle.tell()
        try:
            self.handle.write(buffer.getvalue())
            self.handle.flush()
            os.fsync(self.handle.fileno())
        except OSError as error:
            self.handle = _cut_back(self.handle, complete)
            raise PredictError(f"{self.path}: cannot write ({error.strerror or error}); the lines written so far "
                               "are complete; free space and re-run the same command to resume") from None

    def close(self) -> None:
        self.handle.close()


def csv_row(prediction: Prediction, all_probabilities: bool, top: int, measured: bool = True) -> list[str]:
    """One CSV line: the calls (``present``; ``excluded`` as ``id>winner`` pairs; ``decided_by``
    as ``id:how`` pairs for the table's findings whose call read the measurement), the
    measurements (when ``measured``), then the top ``top`` findings by score (the table's first
    rows: it holds the top ones and every call)."""
    row = [prediction.record_id, prediction.path, "1" if prediction.calibrated else "0", prediction.report or "",
           ";".join(f.id for f in prediction.present),
           ";".join(f"{f.id}>{f.excluded_by}" for f in prediction.findings if f.excluded_by),
           ";".join(f"{f.id}:{f.decided_by}" for f in prediction.findings if f.decided_by)]
    if measured:
        row += measurement_cells(prediction.measurements)
    for finding in prediction.findings[:top]:
        row += [finding.id, finding.name, f"{finding.score:.6f}", _optional(finding.probability),
                "" if finding.present is None else str(int(finding.present)), f"{finding.softmax_share:.6f}"]
    if all_probabilities:
        row += [_optional(p) for p in prediction.probabilities]
    return row


# The measurement keys of the JSON and CSV outputs (issue 22), scalars first; st_j60_mv is per lead.
MEASUREMENT_COLUMNS = ("heart_rate_bpm", "rr_ms", "pr_ms", "qrs_ms", "qt_ms", "qtc_ms", "qtcf_ms", "p_axis_deg",
                       "qrs_axis_deg", "t_axis_deg", "rr_irregularity", "sokolow_lyon_mv", "cornell_mv",
                       "low_voltage_limb", "low_voltage_chest")


def measurements_as_dict(measurements: Measurements) -> dict:
    """The ``measurements`` object of the JSON output: every key a number (or bool, or per-lead
    mV for ``st_j60_mv``) or null, and ``reasons`` for the nulls."""
    values = measurements.to_dict()
    return {key: values.get(key) for key in (*MEASUREMENT_COLUMNS, "st_j60_mv")} | {"reasons": values["reasons"]}


def measurement_cells(measurements: Measurements | None) -> list[str]:
    """The CSV cells of ``MEASUREMENT_COLUMNS``, the 12 ST levels and the reasons (empty: null)."""
    if measurements is None:
        return [""] * (len(MEASUREMENT_COLUMNS) + len(LEADS) + 1)
    values = measurements.to_dict()

    def cell(value) -> str:
        if value is None:
            return ""
        if isinstance(value, bool):
            return str(int(value))
        return f"{value:g}" if isinstance(value, float) else str(value)

    st = values.get("st_j60_mv") if isinstance(values.get("st_j60_mv"), dict) else {}
    reasons = "; ".join(f"{key}: {why}" for key, why in values["reasons"].items())
    return [cell(values.get(key)) for key in MEASUREMENT_COLUMNS] + [cell(st.get(lead)) for lead in LEADS] + [reasons]


def _optional(value: float | None) -> str:
    return "" if value is None else f"{value:.6f}"


def _cut_back(handle, size: int):
    """Close ``handle`` (whose last write failed) and truncate its file to ``size`` bytes."""
    path = handle.name
    try:
        handle.close()
    except OSError:
        pass  # the flush of the failed bytes fails again: they are dropped with the handle
    os.truncate(path, size)
    return open(path, "a", newline="", encoding="utf-8")


def prediction_as_dict(prediction: Prediction, bundle: Bundle | None = None) -> dict:
    """One record's reading as JSON (``--json``, one line of the JSONL output): docs/predict.md."""
    def finding(f: Finding, rank: int | None = None) -> dict:
        entry = {"rank": rank} if rank is not None else {}
        entry.update({"id": f.id, "name": f.name, "score": round(f.score, 6),
                      "probability": None if f.probability is None else round(f.probability, 6),
                      "present": f.present, "excluded_by": f.excluded_by, "decided_by": f.decided_by,
                      "softmax_share": round(f.softmax_share, 6)})
        return entry

    result = {
        "schema_version": PREDICT_SCHEMA_VERSION,
        "record_id": prediction.record_id,
        "path": prediction.path,
        "calibrated": prediction.calibrated,
        "report": prediction.report,
        "present": [finding(f) for f in prediction.present],
        "findings": [finding(f, rank) for rank, f in enumerate(prediction.findings, start=1)],
        "measurements": None if prediction.measurements is None else measurements_as_dict(prediction.measurements),
        "criteria": None if prediction.measurements is None else {
            name: check.to_dict() for name, check in criteria(prediction.measurements).items()},
    }
    if prediction.probabilities is not None and bundle is not None:
        result["probabilities"] = {fid: None if p is None else round(p, 6) for fid, p in zip(bundle.findings, prediction.probabilities)}
    return result
