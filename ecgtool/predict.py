"""``ecgtool predict``: the top-k findings of one record, or of every record under a directory.

Records go through the same ``canonicalize`` as at ingest, with the options the bundle's input
contract records; scores are cosine similarities to the 98 label prompts of the bundle, and
probabilities their softmax at the trained temperature.
"""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ecgtool.bundle import Bundle, bundle_scores, load_bundle
from ecgtool.errors import EcgToolError, RecordError
from ecgtool.io import read_record
from ecgtool.output_lock import exclusive_output
from ecgtool.registry import Registry, load_registry
from ecgtool.signal import CanonicalOptions, QualityThresholds, canonicalize

DEFAULT_BUNDLE = Path(__file__).resolve().parent / "models" / "default"


class PredictError(EcgToolError):
    """Prediction cannot run (no bundle, a bad output file)."""


@dataclass(frozen=True)
class Finding:
    id: str
    name: str
    score: float
    probability: float


@dataclass(frozen=True)
class Prediction:
    record_id: str
    path: str
    findings: tuple[Finding, ...]


def canonical_options(bundle: Bundle) -> CanonicalOptions:
    """The canonical transform options the bundle's training data was made with."""
    contract = bundle.contract
    quality = QualityThresholds(**contract["quality"]) if "quality" in contract else QualityThresholds()
    return CanonicalOptions(
        min_seconds=contract.get("min_seconds", 5.0),
        derive_limb_leads=contract.get("derive_limb_leads", False),
        quality=quality,
    )


def resolve_bundle(path: str | Path | None, registry: Registry | None = None) -> Bundle:
    path = Path(path) if path is not None else DEFAULT_BUNDLE
    if path == DEFAULT_BUNDLE and not (path / "bundle.json").exists():
        raise PredictError(f"{path}: this installation ships no default model; pass --model BUNDLE")
    return load_bundle(path, registry)


def load_canonical(path: str | Path, options: CanonicalOptions) -> tuple[str, np.ndarray]:
    record = read_record(path)
    return record.record_id, canonicalize(record, options).signal


def predict_record(path: str | Path, bundle: Bundle, top: int = 5, lang: str = "ja",
                   superset: str | None = None, registry: Registry | None = None,
                   device: torch.device = torch.device("cpu")) -> Prediction:
    """Top-``top`` findings (or superset classes) of one record.

    Raises
    ------
    RecordError
        When the record cannot be read or brought to the bundle's input contract.
    """
    record_id, signal = load_canonical(path, canonical_options(bundle))
    return predict_signal(record_id, str(path), signal, bundle, top, lang, superset, registry, device)


def predict_signal(record_id: str, path: str, signal: np.ndarray, bundle: Bundle, top: int = 5, lang: str = "ja",
                   superset: str | None = None, registry: Registry | None = None,
                   device: torch.device = torch.device("cpu")) -> Prediction:
    """Top-``top`` findings of a record already in canonical form ((12, 5000) mV)."""
    registry = registry or load_registry()
    embeddings = bundle.embed(torch.from_numpy(signal[None]).to(device))
    return _predictions([record_id], [path], embeddings, bundle, top, lang, superset, registry)[0]


def _names(bundle: Bundle, registry: Registry, lang: str, superset: str | None) -> tuple[list[str], list[str]]:
    if superset is None:
        return bundle.findings, [registry.finding(f).ja if lang == "ja" else registry.finding(f).en for f in bundle.findings]
    if superset not in bundle.description["supersets"]:
        raise PredictError(f"--superset {superset}: not one of {', '.join(bundle.description['supersets'])}")
    classes = {c.id: c for c in registry.supersets[superset]}
    ids = bundle.description["supersets"][superset]
    return ids, [classes[i].ja if lang == "ja" else classes[i].en for i in ids]


def _predictions(record_ids, paths, embeddings, bundle, top, lang, superset, registry) -> list[Prediction]:
    if lang not in ("ja", "en"):
        raise PredictError(f"--lang {lang}: expected ja or en")
    ids, names = _names(bundle, registry, lang, superset)
    similarity, probability = bundle_scores(bundle, embeddings, lang, superset)
    predictions = []
    for row, (record_id, path) in enumerate(zip(record_ids, paths)):
        order = np.argsort(-similarity[row], kind="stable")[:top]
        findings = tuple(Finding(ids[i], names[i], float(similarity[row, i]), float(probability[row, i])) for i in order)
        predictions.append(Prediction(record_id, path, findings))
    return predictions


# --- directories ------------------------------------------------------------------------------

_worker_options: CanonicalOptions | None = None


def _init_worker(options: CanonicalOptions, reader_process: bool = True) -> None:
    global _worker_options
    if reader_process:
        torch.set_num_threads(1)  # readers only parse and resample; the cores belong to the model
    _worker_options = options


def _load_or_reason(path: str):
    try:
        record_id, signal = load_canonical(path, _worker_options)
        return record_id, signal.astype(np.float32), None
    except RecordError as error:
        return Path(path).stem, None, error.reason
    except Exception as error:  # one bad file must not stop the batch
        return Path(path).stem, None, f"unexpected error while reading: {type(error).__name__}: {error}"


@dataclass
class DirectoryResult:
    output: Path
    scored: int
    skipped: int
    already_done: int
    seconds: float

    @property
    def records_per_second(self) -> float:
        return self.scored / self.seconds if self.seconds > 0 else float("nan")


def find_records(inputs: Sequence[Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Every record under ``inputs`` (directories, record files, or a text file listing paths).

    Also returns the files found in directories that are not records, with the reason.
    """
    from ecgtool.io.discover import find_records as find_record_files

    paths: list[Path] = []
    directories = []
    for item in inputs:
        item = Path(item)
        if item.is_file() and item.suffix.lower() in (".txt", ".lst", ".list"):
            base = item.parent
            try:
                lines = item.read_text(encoding="utf-8").splitlines()
            except UnicodeDecodeError as error:
                raise PredictError(f"{item}: not a UTF-8 text list of record paths (byte {error.start} is not text)") from None
            if any("\x00" in line for line in lines):
                raise PredictError(f"{item}: not a text list of record paths (holds NUL bytes)")
            paths.extend((base / line.strip()) for line in lines if line.strip())
        else:
            directories.append(item)
    found, rejected = find_record_files(directories) if directories else ([], [])
    return paths + [record.path for record in found], [(f.path, f.reason) for f in rejected]


def predict_directory(
    inputs: Sequence[str | Path],
    output: str | Path,
    bundle: Bundle,
    top: int = 5,
    lang: str = "ja",
    superset: str | None = None,
    batch_size: int = 64,
    workers: int = 0,
    device: torch.device = torch.device("cpu"),
    registry: Registry | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> DirectoryResult:
    """Score every record under ``inputs`` into ``output`` (``.csv`` or ``.jsonl``), resuming.

    Records (by resolved path) already in ``output`` are not redone; unreadable ones go to
    ``<output>.skipped.csv`` with their reason, and the rest goes on. One process at a time writes
    ``output`` (a second is refused, see ``ecgtool.output_lock``). The ``path`` column holds each
    record's resolved path.
    """
    started = time.perf_counter()
    registry = registry or load_registry()
    output = Path(output)
    if output.suffix.lower() not in (".csv", ".jsonl"):
        raise PredictError(f"{output}: the output must be a .csv or .jsonl file")
    paths, rejected = find_records([Path(p) for p in inputs])
    with exclusive_output(output, is_directory=False):
        return _predict_paths(paths, rejected, output, bundle, top, lang, superset, batch_size, workers, device,
                              registry, progress, started)


def _predict_paths(paths, rejected, output: Path, bundle: Bundle, top, lang, superset, batch_size, workers,
                   device, registry, progress, started) -> DirectoryResult:
    # Resume keys on the record's resolved file: a re-run that spells the input differently
    # (relative, then absolute; through a symlink) does not score anything twice.
    paths = [Path(p).resolve() for p in paths]
    done = {str(Path(p).resolve()) for p in _records_in_output(output)}
    pending = [p for p in paths if str(p) not in done]
    writer = _ResultWriter(output, top)
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
        pool = context.Pool(workers, initializer=_init_worker, initargs=(options,))
        loaded: Iterator = pool.imap(_load_or_reason, [str(p) for p in pending], chunksize=8)
    else:
        pool = None
        _init_worker(options, reader_process=False)
        loaded = map(_load_or_reason, [str(p) for p in pending])
    try:
        # Skipped records are tried again on every run, so each run writes the whole skip list.
        with open(skip_path, "w", newline="", encoding="utf-8") as skips:
            skip_writer = csv.writer(skips)
            skip_writer.writerow(["record", "path", "reason"])
            for path, reason in rejected:
                skip_writer.writerow([path.stem, str(path), reason])
            skipped += len(rejected)
            batch: list[tuple[str, str, np.ndarray]] = []
            for path, (record_id, signal, reason) in zip(pending, loaded):
                if reason is not None:
                    skip_writer.writerow([record_id, str(path), reason])
                    skipped += 1
                else:
                    batch.append((record_id, str(path), signal))
                if len(batch) == batch_size:
                    scored += _score_batch(batch, bundle, top, lang, superset, registry, device, writer)
                    batch = []
                if progress:
                    progress(scored + skipped, len(pending))
            if batch:
                scored += _score_batch(batch, bundle, top, lang, superset, registry, device, writer)
            if progress:
                progress(scored + skipped, len(pending))
    finally:
        torch.set_num_threads(threads)
        writer.close()
        if pool is not None:
            pool.terminate()
            pool.join()
    return DirectoryResult(output, scored, skipped, len(done), time.perf_counter() - started)


def _score_batch(batch, bundle, top, lang, superset, registry, device, writer) -> int:
    signals = torch.from_numpy(np.stack([s for _, _, s in batch])).to(device)
    embeddings = bundle.embed(signals)
    predictions = _predictions([r for r, _, _ in batch], [p for _, p, _ in batch], embeddings, bundle, top, lang, superset, registry)
    writer.write(predictions)
    return len(predictions)


def _records_in_output(output: Path) -> set[str]:
    """Paths of the records already written (ids can repeat across folders); a last line cut
    short by an interruption is dropped."""
    if not output.exists():
        return set()
    data = output.read_bytes()
    if data and not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
        with open(output, "r+b") as handle:
            handle.truncate(len(data))
    text = data.decode("utf-8")
    if output.suffix.lower() == ".jsonl":
        return {json.loads(line)["path"] for line in text.splitlines() if line.strip()}
    return {row["path"] for row in csv.DictReader(io.StringIO(text))}


class _ResultWriter:
    """Appends one line per record and flushes, so an interruption loses at most one line."""

    def __init__(self, output: Path, top: int):
        self.jsonl = output.suffix.lower() == ".jsonl"
        self.path = output
        new = not output.exists() or output.stat().st_size == 0
        self.handle = open(output, "a", newline="", encoding="utf-8")
        self.csv = None if self.jsonl else csv.writer(self.handle)
        if new and self.csv is not None:
            columns = ["record_id", "path"]
            for rank in range(1, top + 1):
                columns += [f"top{rank}_id", f"top{rank}_name", f"top{rank}_score", f"top{rank}_probability"]
            self.csv.writerow(columns)

    def write(self, predictions: list[Prediction]) -> None:
        """Append a batch's lines whole: a failed write (disk full) is cut back to the last
        complete line, so the output stays valid and a re-run resumes after it."""
        buffer = io.StringIO(newline="")
        writer = None if self.jsonl else csv.writer(buffer)
        for prediction in predictions:
            if self.jsonl:
                buffer.write(json.dumps(prediction_as_dict(prediction), ensure_ascii=False, allow_nan=False) + "\n")
            else:
                row = [prediction.record_id, prediction.path]
                for finding in prediction.findings:
                    row += [finding.id, finding.name, f"{finding.score:.6f}", f"{finding.probability:.6f}"]
                writer.writerow(row)
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


def _cut_back(handle, size: int):
    """Close ``handle`` (whose last write failed) and truncate its file to ``size`` bytes."""
    path = handle.name
    try:
        handle.close()
    except OSError:
        pass  # the flush of the failed bytes fails again: they are dropped with the handle
    os.truncate(path, size)
    return open(path, "a", newline="", encoding="utf-8")


def prediction_as_dict(prediction: Prediction) -> dict:
    return {
        "record_id": prediction.record_id,
        "path": prediction.path,
        "findings": [
            {"id": f.id, "name": f.name, "score": round(f.score, 6), "probability": round(f.probability, 6)}
            for f in prediction.findings
        ],
    }
