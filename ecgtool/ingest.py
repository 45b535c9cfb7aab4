"""``ecgtool ingest``: raw records → canonical form → sharded HDF5 store with patient-level splits.

The pipeline has two stages:

1. *Index* (main process, headers only): find every record, read its header, look up its
   annotations, decide its findings, patient and split, and put unreadable headers and duplicate
   record ids on the skip list. Everything here is deterministic, so a re-run indexes identically.
2. *Convert* (worker processes): read the samples, bring them to the canonical form, and write
   the shards. The candidates of each split are cut into shards of ``shard_size`` in a fixed
   order, so shard ``k`` always holds the same records; a shard that exists is complete (written
   to a temporary file and renamed), and a re-run after an interruption only writes the missing
   shards.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import signal
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ecgtool import __version__
from ecgtool.annotations import Annotation, load_annotations
from ecgtool.errors import EcgToolError, RecordError
from ecgtool.files import file_sha256, os_reason, write_json_atomic
from ecgtool.io import WFDB, RecordFormat, format_of, read_record
from ecgtool.io.canonical import read_canonical_or_reason
from ecgtool.io.discover import Found, MissingInput, find_records
from ecgtool.io.wfdb_header import label_codes_from_comments, read_header, read_header_comments
from ecgtool.output_lock import exclusive_output
from ecgtool.registry import Registry, load_registry
from ecgtool.signal import LEADS, N_SAMPLES, CanonicalOptions, input_contract
from ecgtool.splits import SPLITS, SplitFractions, assign_splits
from ecgtool.store import (
    CONFIG,
    MANIFEST,
    STORE_FORMAT_VERSION,
    STORED_DTYPE_RELATIVE_ERROR,
    ShardContent,
    record_ids_digest,
    ShardWriter,
    read_shard_attributes,
    read_shard_summary,
    to_stored_dtype,
)


class IngestError(EcgToolError):
    """Ingest cannot start (bad arguments, an output directory made with other settings)."""


@dataclass(frozen=True)
class IngestOptions:
    """Settings of one ingest; all but ``workers`` are recorded and must match on a re-run."""

    workers: int = 0
    shard_size: int = 512
    dtype: str = "float16"
    canonical: CanonicalOptions = CanonicalOptions()
    fractions: SplitFractions = SplitFractions()
    seed: str = "ecgtool"
    verify_checksums: bool = True

    def recorded(self) -> dict:
        settings = asdict(self)
        settings.pop("workers")
        return settings


@dataclass(frozen=True)
class Skip:
    """A record left out, and why (one line)."""

    record_id: str
    path: str
    reason: str


@dataclass
class Candidate:
    """A record whose header was read: it goes into a shard unless its samples fail."""

    record_id: str
    path: Path
    record_format: RecordFormat | None
    source: str
    patient_id: str
    split: str
    findings: tuple[str, ...]
    report: str
    prompt_ja: str
    prompt_en: str


@dataclass
class IndexResult:
    candidates: list[Candidate]
    skipped: list[Skip]
    warnings: list[str]
    unknown_codes: Counter = field(default_factory=Counter)
    unknown_terms: Counter = field(default_factory=Counter)


@dataclass
class IngestResult:
    out_dir: Path
    manifest: dict
    shards_written: int
    seconds: float
    records_converted: int  # read by this run (stored or skipped)
    records_stored: int = 0  # of those, written to the store

    @property
    def records_per_second(self) -> float:
        return self.records_converted / self.seconds if self.seconds > 0 else float("nan")


ProgressCallback = Callable[[int, int], None]


def index_records(
    inputs: Sequence[Path],
    annotations: dict[str, Annotation],
    registry: Registry,
    fractions: SplitFractions = SplitFractions(),
    seed: str = "ecgtool",
) -> IndexResult:
    """Stage 1: header comments, annotations, findings, patients and splits of every record.

    For WFDB only the headers' comment lines are read here; the full header is parsed by the
    worker that converts the record, so a malformed header ends in the skip list from there.
    Single-file formats (MFER, vendor XML, DICOM, SCP-ECG) are read for their patient id alone,
    by the format discovery recognised them as.
    """
    try:
        found, rejected = find_records(inputs)
    except MissingInput as error:
        raise IngestError(str(error)) from None
    result = IndexResult(candidates=[], skipped=[Skip(f.record_id, f.display, f.reason) for f in rejected], warnings=[])
    first_source: dict[str, str] = {}
    unique: list[Found] = []
    for record in found:
        if record.record_id in first_source:
            result.skipped.append(Skip(
                record.record_id, record.display,
                f"duplicate record id {record.record_id} (already taken from {first_source[record.record_id]})",
            ))
        else:
            first_source[record.record_id] = record.display
            unique.append(record)
    pending: list[tuple[Candidate, str | None]] = []
    ecg_of: dict[str, str] = {}
    patients_missing = 0
    placeholders: Counter = Counter()
    for found_record in unique:
        path, display = found_record.path, found_record.display
        record_format = found_record.record_format or format_of(path)
        record_id = path.stem
        try:
            codes, file_patient_id = _codes_and_patient(path, record_format)
        except RecordError as error:
            result.skipped.append(Skip(record_id, display, error.reason))
            continue
        annotation = annotations.get(record_id, Annotation())
        findings = _findings_of(codes, annotation, registry, result)
        if file_patient_id is not None and is_placeholder_patient_id(file_patient_id):
            placeholders[file_patient_id] += 1
            file_patient_id = None
        table_patient_id = annotation.patient_id
        if table_patient_id is not None and is_placeholder_patient_id(table_patient_id):
            placeholders[table_patient_id] += 1
            table_patient_id = None
        patient_id = table_patient_id or file_patient_id
        if patient_id is None:
            patients_missing += 1
            patient_id = f"record:{record_id}"
        candidate = Candidate(
            record_id=record_id,
            path=path,
            record_format=record_format,
            source=display,
            patient_id=patient_id,
            split="",
            findings=findings,
            report=annotation.report or "",
            prompt_ja=registry.prompt(findings, "ja") or "" if findings else "",
            prompt_en=registry.prompt(findings, "en") or "" if findings else "",
        )
        pending.append((candidate, annotation.split))
        if annotation.ecg:
            ecg_of[record_id] = annotation.ecg
    pending = _one_copy_per_ecg(pending, ecg_of, result)
    if placeholders:
        shown = ", ".join(f"{value!r} ×{count}" for value, count in placeholders.most_common(3))
        result.warnings.append(
            f"{sum(placeholders.values())} records carry a placeholder patient id in the file or table ({shown}): "
            "ignored, so they are not grouped as one patient"
        )
    if patients_missing:
        result.warnings.append(
            f"{patients_missing} records have no patient id: each counts as its own patient"
        )
    splits, split_warnings = assign_splits(
        {c.record_id: c.patient_id for c, _ in pending},
        {c.record_id: s for c, s in pending if s},
        fractions,
        seed,
    )
    result.warnings.extend(split_warnings)
    for candidate, _ in pending:
        candidate.split = splits[candidate.record_id]
        result.candidates.append(candidate)
    return result


def _one_copy_per_ecg(pending: list[tuple[Candidate, str | None]], ecg_of: dict[str, str],
                      result: IndexResult) -> list[tuple[Candidate, str | None]]:
    """Keep one record per ECG: of the copies the tables name as one ECG (PTB-XL's 500 Hz and
    100 Hz files of an ``ecg_id``; a sidecar's ``ecg`` column), the one at the highest sampling
    rate (the first found on a tie); the others go on the skip list naming the copy kept."""
    copies: dict[str, list[Candidate]] = {}
    for candidate, _ in pending:
        if candidate.record_id in ecg_of:
            copies.setdefault(ecg_of[candidate.record_id], []).append(candidate)
    dropped: set[str] = set()
    for ecg, group in copies.items():
        if len(group) < 2:
            continue
        rates = {c.record_id: _sampling_rate_or_zero(c) for c in group}
        kept = max(group, key=lambda c: rates[c.record_id])  # max keeps the first of equal rates
        for candidate in group:
            if candidate is not kept:
                dropped.add(candidate.record_id)
                result.skipped.append(Skip(
                    candidate.record_id, candidate.source,
                    f"another copy of ECG {ecg}: kept {kept.record_id} ({rates[kept.record_id]:g} Hz) "
                    f"over this one ({rates[candidate.record_id]:g} Hz)",
                ))
    return [(c, s) for c, s in pending if c.record_id not in dropped]


def _sampling_rate_or_zero(candidate: Candidate) -> float:
    """The record's sampling rate (WFDB: from its header alone); 0 when it cannot be read, so
    that a readable copy is preferred (an unreadable one would be skipped by its worker)."""
    try:
        if candidate.record_format is WFDB:
            return read_header(candidate.path).sampling_rate
        return read_record(candidate.path, record_format=candidate.record_format).sampling_rate
    except (RecordError, OSError, ValueError):
        return 0.0


def _codes_and_patient(path: Path, record_format: RecordFormat | None) -> tuple[dict, str | None]:
    """Label codes and patient id the file itself carries (WFDB: header comments only).

    The single-file formats carry no label codes; their patient id is read by the format's
    cheapest path, and the samples are left to the converting worker.
    """
    if record_format is WFDB:
        return label_codes_from_comments(read_header_comments(path)), None
    if record_format is None:
        raise RecordError(path, "not a recognised ECG record format")
    return {}, record_format.read_patient_id(path)


_PLACEHOLDER_PATIENT_IDS = frozenset(
    "unknown anonymous anon none null n/a na nil - -- ? test demo patient noid no_id".split()
)


def is_placeholder_patient_id(patient_id: str) -> bool:
    """True for ids a cart writes when none was entered: blank, one repeated digit or letter
    (``00000000``, ``9999``, ``XXXX``), or a word such as ``UNKNOWN`` / ``ANONYMOUS``."""
    value = patient_id.strip().lower()
    return not value or len(set(value)) == 1 or value in _PLACEHOLDER_PATIENT_IDS


def _findings_of(header_codes: dict, annotation: Annotation, registry: Registry, result: IndexResult) -> tuple[str, ...]:
    found: set[str] = set()
    codes: dict[str, list[str]] = {v: list(c) for v, c in header_codes.items()}
    for vocabulary, values in annotation.codes.items():
        codes.setdefault(vocabulary, []).extend(values)
    for vocabulary, values in codes.items():
        for code in values:
            # The 2024 Challenge's '# Labels:' mix SCP statements with superclasses: the
            # statements map as SCP codes, the superclasses (no single finding) stay unknown.
            mapped = registry.codes_to_findings("scp" if vocabulary == "ptbxl_labels" else vocabulary, code)
            if mapped is None:
                result.unknown_codes[f"{vocabulary}:{code}"] += 1
            else:
                found.update(mapped)
    for term in annotation.finding_terms:
        finding = registry.lookup_term(term)
        if finding is None:
            result.unknown_terms[term] += 1
        else:
            found.add(finding.id)
    if annotation.findings_from_report and annotation.report:
        found.update(registry.extract_findings(annotation.report))
    return tuple(sorted(found, key=registry.index))


def ingest(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    metadata: Sequence[str | Path] = (),
    options: IngestOptions = IngestOptions(),
    registry: Registry | None = None,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> IngestResult:
    """Ingest every record under ``inputs`` into the store ``out_dir``; resumes an interrupted run.

    Parameters
    ----------
    inputs : paths
        Directories (searched recursively) or single record files, any supported format.
    out_dir : path
        The store directory; created if needed.
    metadata : paths
        PTB-XL database or sidecar CSV files (see ``ecgtool.annotations``).
    overwrite : bool
        Replace a store made with other settings, and shards written from other records,
        instead of refusing.
    progress : callable, optional
        Called as ``progress(records_done, records_total)`` while converting.

    Returns
    -------
    IngestResult
        With the manifest that was written (counts per split, skip list with reasons).
    """
    started = time.perf_counter()
    registry = registry or load_registry()
    if options.dtype not in STORED_DTYPE_RELATIVE_ERROR:
        raise IngestError(f"dtype must be one of {', '.join(STORED_DTYPE_RELATIVE_ERROR)}, got {options.dtype!r}")
    if options.shard_size < 1:
        raise IngestError(f"shard size must be at least 1, got {options.shard_size}")
    out_dir = Path(out_dir)
    input_paths = [Path(p) for p in inputs]
    config = {
        "inputs": [str(p.resolve()) for p in input_paths],
        "metadata": [str(Path(p).resolve()) for p in metadata],
        "options": options.recorded(),
        "registry_hash": registry.hash,
        "store_format_version": STORE_FORMAT_VERSION,
    }
    annotations = load_annotations([Path(p) for p in metadata])
    index = index_records(input_paths, annotations, registry, options.fractions, options.seed)
    if not index.candidates and not index.skipped:
        raise IngestError(f"{', '.join(str(p) for p in input_paths)}: no records found (no file of a supported ECG format)")
    with exclusive_output(out_dir, is_directory=True):
        _prepare_out_dir(out_dir, config, overwrite)
        plan = _plan_shards(index.candidates, options.shard_size, _digest(config))
        pending = [(name, members, digest) for name, members, digest in plan
                   if not _shard_is_done(out_dir / name, digest, overwrite)]
        total = sum(len(members) for _, members, _ in pending)
        pool, counter = _start_pool(options) if pending else (None, None)
        converted, stored, shard_sha256 = 0, 0, {}
        try:
            if pending:
                converted, stored, shard_sha256 = _convert(pending, out_dir, registry, progress, total, pool, counter)
        except BaseException:
            if pool is not None:
                pool.terminate()  # stop the other workers before removing what they were writing
                pool.join()
                pool = None
            for leftover in out_dir.glob("*.tmp"):  # ours alone: this process holds the store's lock
                leftover.unlink(missing_ok=True)
            raise
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()
        manifest = _write_manifest(out_dir, plan, index, registry, options, config, shard_sha256)
    return IngestResult(
        out_dir=out_dir,
        manifest=manifest,
        shards_written=len(pending),
        seconds=time.perf_counter() - started,
        records_converted=converted,
        records_stored=stored,
    )


def _prepare_out_dir(out_dir: Path, config: dict, overwrite: bool) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    config_path = out_dir / CONFIG
    if config_path.exists():
        existing = json.loads(config_path.read_text(encoding="utf-8"))
        if existing != config:
            if not overwrite:
                changed = sorted(k for k in config if existing.get(k) != config[k])
                raise IngestError(
                    f"{out_dir}: holds a store made with other settings ({', '.join(changed)} differ); "
                    "use another --out or pass --overwrite"
                )
            for stale in [*out_dir.glob("*.h5"), out_dir / MANIFEST]:
                stale.unlink(missing_ok=True)
    for leftover in out_dir.glob("*.tmp"):
        leftover.unlink()  # a shard or manifest cut short by an interruption
    write_json_atomic(config_path, config)


def _digest(payload) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _plan_shards(candidates: list[Candidate], shard_size: int, config_digest: str) -> list[tuple[str, list[Candidate], str]]:
    plan = []
    for split in SPLITS:
        members = sorted((c for c in candidates if c.split == split), key=lambda c: c.source)
        for number, start in enumerate(range(0, len(members), shard_size)):
            chunk = members[start : start + shard_size]
            digest = _digest([config_digest, [(c.record_id, c.source, c.patient_id, c.findings) for c in chunk]])
            plan.append((f"{split}-{number:05d}.h5", chunk, digest))
    return plan


def _shard_is_done(path: Path, digest: str, overwrite: bool = False) -> bool:
    """Whether the shard at ``path`` was written, from these records; one written from others is
    an error, or (``overwrite``) written again."""
    if not path.exists():
        return False
    try:
        written_from = read_shard_attributes(path).get("candidates_digest")
    except OSError:
        return False  # unreadable: write it again
    if written_from != digest and overwrite:
        return False
    if written_from != digest:
        raise IngestError(
            f"{path}: was written from a different set of records (inputs changed since); "
            "use another --out or pass --overwrite"
        )
    return True


@dataclass(frozen=True)
class _ShardTask:
    """What a worker needs to write one shard on its own (no registry, no pipe traffic of samples)."""

    path: Path
    members: list[Candidate]
    findings: np.ndarray
    attributes: dict


_worker_options: IngestOptions | None = None
_worker_progress = None


def _init_worker(options: IngestOptions, progress_counter) -> None:
    global _worker_options, _worker_progress
    _worker_options, _worker_progress = options, progress_counter
    if progress_counter is not None:
        # A pool worker: Ctrl-C is the main process's to handle (it stops the pool and says how
        # to resume); a worker would only print its own traceback. Its errors reach the main
        # process as exceptions; what h5py prints when a failed file is torn down is noise.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)


def _canonical_or_reason(candidate: Candidate, options: IngestOptions):
    """Samples → canonical form in the stored dtype, or the one-line reason it failed."""
    read, reason = read_canonical_or_reason(candidate.path, options.canonical, options.verify_checksums,
                                            candidate.record_format)
    if read is None:
        return None, reason
    record, canonical = read
    acquisition = json.dumps(acquisition_metadata(record, canonical.derived_leads), ensure_ascii=False)
    return (to_stored_dtype(canonical.signal, options.dtype), canonical.n_valid, acquisition), None


def acquisition_metadata(record, derived_leads: tuple[str, ...]) -> dict:
    """What the file says about its acquisition, kept beside the samples (empty fields dropped)."""
    metadata = {
        "format": record.format,
        "acquired": record.acquired,
        "device": record.device,
        "statements": list(record.statements),
        "measurements": dict(record.measurements),
        "derived_leads": list(derived_leads),
    }
    return {key: value for key, value in metadata.items() if value}


_WRITE_BLOCK = 64


def _write_shard_task(task: _ShardTask) -> tuple[int, int, str]:
    """Worker: read, convert and write every record of one shard; the shard appears only when whole.

    Returns the records done, those stored and the shard's SHA-256, computed here while its pages are hot and
    the workers run in parallel (the main process hashing every shard after the pool took ~0.1 s
    per thousand records, on one core)."""
    options = _worker_options
    _check_free_space(task, options)
    try:
        return _write_shard(task, options)
    except (OSError, RuntimeError) as error:
        # h5py reports a full disk or a lost folder as OSError, or as RuntimeError when closing
        # the file fails ("file write failed ... errno = 28"); the .tmp is gone (writer.abort)
        if isinstance(error, RuntimeError) and "file write failed" not in str(error):
            raise
        raise IngestError(f"{task.path}: cannot write ({os_reason(error)}); "
                          "nothing half-written is left: free space and re-run the same command to resume") from None


def _check_free_space(task: _ShardTask, options: IngestOptions) -> None:
    """Refuse to start a shard the disk cannot hold: h5py may crash rather than fail cleanly
    when the disk fills mid-write. The estimate is the samples' size plus 10 % and 1 MiB."""
    itemsize = 2 if options.dtype == "float16" else 4
    in_flight = max(1, options.workers or os.cpu_count() or 1)  # every worker may be writing a shard as large
    needed = (int(len(task.members) * len(LEADS) * N_SAMPLES * itemsize * 1.1) + (1 << 20)) * in_flight
    free = shutil.disk_usage(task.path.parent).free
    if free < needed:
        raise IngestError(f"{task.path.parent}: not enough free space for {task.path.name} "
                          f"({needed / 1e6:,.1f} MB needed, {free / 1e6:,.1f} MB free); "
                          "free space and re-run the same command to resume")


def _write_shard(task: _ShardTask, options: IngestOptions) -> tuple[int, int, str]:
    writer = ShardWriter(task.path, task.findings.shape[1], options.dtype)
    skipped = []
    try:
        for start in range(0, len(task.members), _WRITE_BLOCK):
            block = task.members[start : start + _WRITE_BLOCK]
            outcomes = [_canonical_or_reason(c, options) for c in block]
            skipped.extend(asdict(Skip(c.record_id, c.source, reason)) for c, (_, reason) in zip(block, outcomes) if reason)
            kept = [i for i, (converted, _) in enumerate(outcomes) if converted is not None]
            writer.append(_block_content(block, outcomes, kept, task.findings[start : start + len(block)], options))
            if _worker_progress is not None:
                with _worker_progress.get_lock():
                    _worker_progress.value += len(block)
        writer.close({**task.attributes, "skipped": skipped})
    except BaseException:
        writer.abort()
        raise
    return len(task.members), writer.length, file_sha256(task.path)


def _block_content(block: list[Candidate], outcomes, kept: list[int], findings: np.ndarray, options: IngestOptions) -> ShardContent:
    members = [block[i] for i in kept]
    return ShardContent(
        signal=np.stack([outcomes[i][0][0] for i in kept]) if kept else np.zeros((0, len(LEADS), N_SAMPLES), options.dtype),
        n_valid=np.array([outcomes[i][0][1] for i in kept], dtype=np.int32),
        findings=findings[kept],
        record_id=[c.record_id for c in members],
        patient_id=[c.patient_id for c in members],
        source=[c.source for c in members],
        report=[c.report for c in members],
        prompt_ja=[c.prompt_ja for c in members],
        prompt_en=[c.prompt_en for c in members],
        acquisition=[outcomes[i][0][2] for i in kept],
    )


def _start_pool(options: IngestOptions):
    """A worker pool sharing a progress counter. Shards are written in worker processes even for
    ``--workers 1``: HDF5 can crash the process that writes when the disk fills, and a crashed
    worker is an error the main process reports, where a crash of the main process is not."""
    workers = options.workers or os.cpu_count() or 1
    context = multiprocessing.get_context("fork" if hasattr(os, "fork") else "spawn")
    counter = context.Value("q", 0)
    return context.Pool(workers, initializer=_init_worker, initargs=(options, counter)), counter


def _convert(pending, out_dir: Path, registry: Registry, progress, total: int, pool, counter) -> tuple[int, int, dict[str, str]]:
    """Stage 2: one task per missing shard; workers write shards in parallel, largest first.

    Returns the records converted, those stored and the SHA-256 of each shard written, by file name."""
    tasks = [
        _ShardTask(
            path=out_dir / name,
            members=members,
            findings=np.stack([registry.multi_hot(c.findings) for c in members]),
            attributes={"split": members[0].split, "candidates_digest": digest, "registry_hash": registry.hash},
        )
        for name, members, digest in sorted(pending, key=lambda shard: -len(shard[1]))
    ]
    results = [pool.apply_async(_write_shard_task, (task,)) for task in tasks]
    while not all(result.ready() for result in results):
        if progress:
            progress(counter.value, total)
        failed = next((r for r in results if r.ready() and not r.successful()), None)
        if failed is not None:
            failed.get()  # re-raises the worker's one-line error now; the caller stops the pool
        # multiprocessing.Pool replaces a worker killed by a signal but loses its task, and
        # would wait for it forever: stop instead.
        dead = [worker.exitcode for worker in pool._pool if worker.exitcode is not None and worker.exitcode < 0]
        if dead:
            raise IngestError(f"{out_dir}: a worker process was killed (signal {-dead[0]}) while writing shards; "
                              "finished shards are kept: re-run the same command to resume")
        time.sleep(0.1)
    written = [result.get() for result in results]  # re-raises a worker's exception
    done = sum(count for count, _, _ in written)
    if progress:
        progress(done, total)
    return done, sum(stored for _, stored, _ in written), {task.path.name: sha256 for task, (_, _, sha256) in zip(tasks, written)}


def _write_manifest(out_dir: Path, plan, index: IndexResult, registry: Registry, options: IngestOptions, config: dict,
                    shard_sha256: dict[str, str]) -> dict:
    """``shard_sha256``: the digests the workers computed of the shards they wrote; shards done
    by an earlier run are hashed here."""
    shards, skipped = [], [asdict(s) for s in index.skipped]
    counts = {split: {"records": 0, "patients": 0, "labelled": 0} for split in SPLITS}
    patients: dict[str, set[str]] = {split: set() for split in SPLITS}
    for name, members, _ in plan:
        path = out_dir / name
        content = read_shard_summary(path)
        split = members[0].split
        skipped.extend(content.attributes["skipped"])
        shards.append({"file": name, "split": split, "records": len(content),
                       "record_ids_sha256": record_ids_digest(content.record_id), "sha256": shard_sha256.get(name) or file_sha256(path)})
        counts[split]["records"] += len(content)
        counts[split]["labelled"] += int((content.findings.sum(axis=1) > 0).sum())
        patients[split].update(content.patient_id)
    for split in SPLITS:
        counts[split]["patients"] = len(patients[split])
    contract = {
        **input_contract(options.canonical),
        "stored_dtype": options.dtype,
        "stored_dtype_max_relative_error": STORED_DTYPE_RELATIVE_ERROR[options.dtype],
        "registry_version": registry.version,
        "registry_hash": registry.hash,
    }
    manifest = {
        "format": "ecgtool-store",
        "format_version": STORE_FORMAT_VERSION,
        "created_by": f"ecgtool {__version__}",
        "registry": {"version": registry.version, "hash": registry.hash, "findings": list(registry.ids())},
        "contract": contract,
        "config": config,
        "shards": shards,
        "counts": counts,
        "skipped": sorted(skipped, key=lambda s: s["path"]),
        "warnings": index.warnings,
        "unknown_codes": dict(index.unknown_codes.most_common()),
        "unknown_finding_terms": dict(index.unknown_terms.most_common()),
    }
    write_json_atomic(out_dir / MANIFEST, manifest)
    return manifest
