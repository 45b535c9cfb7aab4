"""The embedding file: every record's ECG embedding under one bundle, keyed by record id and by
the stored samples it was computed from.

One HDF5 file per bundle, by default ``<store>/embeddings/<bundle fingerprint>.h5``::

    attributes     format, format_version, bundle_fingerprint, embed_dim, registry_hash, created_by
    record_id      (n,) str        unique within the file
    patient_id     (n,) str        '' where the writer did not know it
    vector         (n, d) float16  unit vectors: ``Bundle.embed`` of the canonical record
    shard_sha256   (n,) S64        SHA-256 of the store shard the record's samples were read from
                                   (as the store's manifest records it); '' when not from a store

A record id alone does not say which ECG was embedded: a store re-ingested from other files can
hold other samples under the same ids. ``embed_store`` re-embeds a record whose shard checksum
differs from the one recorded with its vector, and ``ecgtool.search`` refuses such vectors. Files
of format 1 (no ``shard_sha256``) read as of unknown samples: ``embed_store`` re-embeds them.

A file holds the vectors of one bundle only: appending with another bundle (another fingerprint)
is refused. Appending copies the file to ``<file>.tmp``, appends there and renames it over the
file (at ``commit`` and at ``close``), so the file on disk is always whole; one process at a time
writes it (``ecgtool.output_lock``). The writer checks the disk's free space first and writes the
copy in a child process (HDF5 may crash the process that writes when the disk fills mid-write):
a write that fails ends in a one-line ``EmbeddingsError``, with the temporary copy removed.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import shutil
import signal
import time
from collections.abc import Callable, KeysView, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch

from ecgtool import __version__
from ecgtool.bundle import Bundle, check_store_matches, weight_checksums
from ecgtool.errors import EcgToolError
from ecgtool.fast_encoder import FastEncoder
from ecgtool.files import move_into_place, os_reason, temporary_path
from ecgtool.output_lock import exclusive_output
from ecgtool.store import Store, read_shard

EMBEDDINGS_FORMAT = "ecgtool-embeddings"
EMBEDDINGS_FORMAT_VERSION = 2
READABLE_FORMAT_VERSIONS = (1, 2)  # 1: no shard_sha256
EMBEDDINGS_DIR = "embeddings"
NOT_FROM_A_STORE = b""
# What a row takes beside its vector (ids, patient id, shard checksum, HDF5's heap), and what one
# write may allocate at once (a whole chunk of vectors, string chunks, metadata), for the check of
# free space before writing.
_ROW_BYTES_BESIDE_VECTOR = 256
_WRITE_SLACK_BYTES = 1 << 20
_CHUNK_ROWS = 1024  # rows per HDF5 chunk of vectors


class EmbeddingsError(EcgToolError):
    """An embedding file that cannot be read, or cannot take these vectors; names the file."""


def bundle_fingerprint(bundle: Bundle) -> str:
    """First 16 hex digits of a SHA-256 over the bundle's ECG weights and label vectors.

    Taken from the checksums ``bundle.json`` records (computed from the files for bundles
    exported before those were recorded): equal weights give equal fingerprints wherever the
    bundle lies.
    """
    digest = hashlib.sha256()
    for name, sha in weight_checksums(bundle.directory, bundle.description).items():
        digest.update(f"{name}:{sha}\n".encode("ascii"))
    return digest.hexdigest()[:16]


def default_embeddings_path(store_dir: str | Path, bundle: Bundle) -> Path:
    return Path(store_dir) / EMBEDDINGS_DIR / f"{bundle_fingerprint(bundle)}.h5"


@dataclass
class Embeddings:
    """The content of an embedding file."""

    path: Path
    fingerprint: str
    record_ids: list[str]
    patient_ids: list[str]
    vectors: np.ndarray  # (n, d) float16
    shard_sha256: np.ndarray  # (n,) S64: the store shard each vector was computed from (b'' unknown)

    def __len__(self) -> int:
        return len(self.record_ids)


def _read_strings(dataset) -> list[str]:
    return [s.decode("utf-8") for s in dataset[()]]


def _read_shard_sha256(handle) -> np.ndarray:
    if "shard_sha256" in handle:
        return handle["shard_sha256"][()]
    return np.full(handle["record_id"].shape[0], NOT_FROM_A_STORE, dtype="S64")  # format 1


def _check_attributes(path: Path, attrs, fingerprint: str | None, embed_dim: int | None) -> str:
    if attrs.get("format") != EMBEDDINGS_FORMAT:
        raise EmbeddingsError(f"{path}: not an ecgtool embedding file")
    if attrs.get("format_version") not in READABLE_FORMAT_VERSIONS:
        raise EmbeddingsError(f"{path}: embedding file format {attrs.get('format_version')} is not supported")
    found = str(attrs["bundle_fingerprint"])
    if fingerprint is not None and found != fingerprint:
        raise EmbeddingsError(f"{path}: holds the embeddings of another bundle (fingerprint {found}, this bundle's is "
                              f"{fingerprint}); use that bundle, or another embedding file")
    if embed_dim is not None and int(attrs["embed_dim"]) != embed_dim:
        raise EmbeddingsError(f"{path}: holds {attrs['embed_dim']}-dimensional vectors, the bundle makes {embed_dim}")
    return found


def read_embeddings(path: str | Path, bundle: Bundle | None = None) -> Embeddings:
    """Read a whole embedding file; with ``bundle``, refuse a file made by another bundle."""
    path = Path(path)
    if not path.is_file():
        raise EmbeddingsError(f"{path}: no such embedding file; run `ecgtool embed` first")
    try:
        with h5py.File(path, "r") as handle:
            fingerprint = _check_attributes(path, handle.attrs, bundle and bundle_fingerprint(bundle),
                                            bundle and bundle.description["model"]["embed_dim"])
            return Embeddings(path, fingerprint, _read_strings(handle["record_id"]), _read_strings(handle["patient_id"]),
                              handle["vector"][()], _read_shard_sha256(handle))
    except (OSError, KeyError) as error:
        raise EmbeddingsError(f"{path}: damaged embedding file ({str(error).splitlines()[0][:120]}); delete it and embed again") from None


class EmbeddingWriter:
    """Append vectors to an embedding file, skipping record ids it already holds, or replacing
    their vectors when they were computed from other stored samples.

    Use as a context manager; ``append`` per batch. What was appended is written at least every
    ``commit_every_s`` seconds and on leaving the block (``commit``): the file is copied to
    ``<file>.tmp``, the new rows are written there and the copy is renamed over the file. The
    copy is written by a child process where the platform forks: HDF5 may crash the process that
    writes when the disk fills, and a crashed child is a one-line error here. An interruption
    loses only the vectors since the last commit; a re-run embeds them again.

    Examples
    --------
    >>> with EmbeddingWriter("store/embeddings/x.h5", bundle) as writer:   # doctest: +SKIP
    ...     writer.append(["r1", "r2"], vectors, ["p1", "p2"])
    """

    def __init__(self, path: str | Path, bundle: Bundle, commit_every_s: float = 60.0):
        self.path = Path(path)
        self.tmp = temporary_path(self.path)
        self.fingerprint = bundle_fingerprint(bundle)
        self.embed_dim = int(bundle.description["model"]["embed_dim"])
        self.attributes = {"format": EMBEDDINGS_FORMAT, "format_version": EMBEDDINGS_FORMAT_VERSION,
                           "bundle_fingerprint": self.fingerprint, "embed_dim": self.embed_dim,
                           "registry_hash": bundle.description["registry"]["hash"], "created_by": f"ecgtool {__version__}"}
        self.commit_every_s = commit_every_s
        self.appended = 0
        self.replaced = 0
        self._stack = ExitStack()
        self._rows: dict[str, int] = {}  # record id -> row, in the file or pending
        self._shard_sha256: list[bytes] = []  # per row
        self._committed_rows = 0
        self._pending = _PendingRows()
        self._last_commit = time.monotonic()

    def __enter__(self) -> "EmbeddingWriter":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._stack.enter_context(exclusive_output(self.path, is_directory=False))
        try:
            if self.path.exists():
                record_ids, self._shard_sha256 = _read_keys(self.path, self.fingerprint, self.embed_dim)
                self._rows = {record_id: row for row, record_id in enumerate(record_ids)}
                self._committed_rows = len(record_ids)
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, kind, value, traceback) -> None:
        try:
            if kind is None:
                self.commit()
        finally:
            self._stack.close()

    @property
    def known(self) -> KeysView[str]:
        """Record ids in the file, committed or not."""
        return self._rows.keys()

    def is_current(self, record_id: str, shard_sha256: str) -> bool:
        """Whether the file holds ``record_id``'s vector computed from the shard of that checksum."""
        row = self._rows.get(record_id)
        return row is not None and self._shard_sha256[row] == shard_sha256.encode("ascii")

    def append(self, record_ids: Sequence[str], vectors, patient_ids: Sequence[str] | None = None,
               shard_sha256: str | None = None) -> int:
        """Append the records not in the file yet; return how many were appended.

        With ``shard_sha256`` (the checksum of the store shard the vectors were computed from),
        a record the file holds from another shard's samples has its vector replaced (counted in
        ``replaced``); without it, a record id the file holds is skipped."""
        vectors = vectors.detach().cpu().float().numpy() if isinstance(vectors, torch.Tensor) else np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape != (len(record_ids), self.embed_dim):
            raise EmbeddingsError(f"{self.path}: {len(record_ids)} record ids with vectors of shape {vectors.shape}, "
                                  f"expected ({len(record_ids)}, {self.embed_dim})")
        if not np.isfinite(vectors).all():
            raise EmbeddingsError(f"{self.path}: refusing NaN or infinite vectors")
        patient_ids = list(patient_ids) if patient_ids is not None else [""] * len(record_ids)
        if len(patient_ids) != len(record_ids):
            raise EmbeddingsError(f"{self.path}: {len(record_ids)} record ids with {len(patient_ids)} patient ids")
        key = NOT_FROM_A_STORE if shard_sha256 is None else shard_sha256.encode("ascii")
        vectors = vectors.astype(np.float16)
        new = 0
        for index, record_id in enumerate(record_ids):
            row = self._rows.get(record_id)
            if row is None:
                self._rows[record_id] = len(self._shard_sha256)
                self._shard_sha256.append(key)
                self._pending.add(record_id, patient_ids[index], vectors[index], key)
                new += 1
            elif shard_sha256 is not None and self._shard_sha256[row] != key:
                self._shard_sha256[row] = key
                if row < self._committed_rows:
                    self._pending.replace(row, patient_ids[index], vectors[index], key)
                else:
                    self._pending.set(row - self._committed_rows, patient_ids[index], vectors[index], key)
                self.replaced += 1
        self.appended += new
        if time.monotonic() - self._last_commit >= self.commit_every_s:
            self.commit()
        return new

    def commit(self) -> None:
        """Write what was appended since the last commit: to ``<file>.tmp`` (a copy of the file,
        fsynced), renamed over the file. A failed write is a one-line ``EmbeddingsError``, with the
        temporary copy removed and the file as it was."""
        if not self._pending:
            return
        copied = self.path.stat().st_size if self.path.exists() else 0
        needed = copied + self._pending.bytes_needed(self.embed_dim)
        free = shutil.disk_usage(self.path.parent).free
        if free < needed:
            raise EmbeddingsError(f"{self.path}: not enough free space to write the embeddings "
                                  f"({needed / 1e6:,.1f} MB needed, {free / 1e6:,.1f} MB free); nothing half-written is left: "
                                  "free space and re-run the same command to resume")
        try:
            reason = _in_child_process(_write_embedding_file, self.path, self.tmp, self.attributes, self._pending)
        except BaseException:  # Ctrl-C while the copy is written
            self.tmp.unlink(missing_ok=True)
            raise
        if reason is not None:
            self.tmp.unlink(missing_ok=True)
            raise EmbeddingsError(f"{self.path}: cannot write ({reason}); nothing half-written is left: "
                                  "free space and re-run the same command to resume")
        move_into_place(self.tmp, self.path)  # fsynced by the writer
        self._committed_rows += len(self._pending.record_ids)
        self._pending = _PendingRows()
        self._last_commit = time.monotonic()


@dataclass
class _PendingRows:
    """Rows appended since the last commit, and replacements of committed rows' vectors."""

    record_ids: list[str] = field(default_factory=list)
    patient_ids: list[str] = field(default_factory=list)
    vectors: list[np.ndarray] = field(default_factory=list)
    shard_sha256: list[bytes] = field(default_factory=list)
    replacements: dict[int, tuple[str, np.ndarray, bytes]] = field(default_factory=dict)  # committed row -> new values

    def __bool__(self) -> bool:
        return bool(self.record_ids or self.replacements)

    def add(self, record_id: str, patient_id: str, vector: np.ndarray, key: bytes) -> None:
        self.record_ids.append(record_id)
        self.patient_ids.append(patient_id)
        self.vectors.append(vector)
        self.shard_sha256.append(key)

    def set(self, index: int, patient_id: str, vector: np.ndarray, key: bytes) -> None:
        self.patient_ids[index], self.vectors[index], self.shard_sha256[index] = patient_id, vector, key

    def replace(self, row: int, patient_id: str, vector: np.ndarray, key: bytes) -> None:
        self.replacements[row] = (patient_id, vector, key)

    def bytes_needed(self, embed_dim: int) -> int:
        """What writing these rows may take on disk, with a whole chunk of vectors and 1 MiB to spare."""
        rows = len(self.record_ids) + len(self.replacements)
        return rows * (2 * embed_dim + _ROW_BYTES_BESIDE_VECTOR) + _CHUNK_ROWS * 2 * embed_dim + _WRITE_SLACK_BYTES


def _write_embedding_file(path: Path, tmp: Path, attributes: dict, pending: _PendingRows) -> None:
    """``path`` with ``pending`` written in, as ``tmp`` (fsynced); a new file when ``path`` is absent."""
    embed_dim = attributes["embed_dim"]
    if path.exists():
        shutil.copyfile(path, tmp)
        handle = h5py.File(tmp, "a")
    else:
        handle = h5py.File(tmp, "w")
        handle.attrs.update(attributes)
        string = h5py.string_dtype("utf-8")
        for name in ("record_id", "patient_id"):
            handle.create_dataset(name, shape=(0,), maxshape=(None,), dtype=string, chunks=(4096,))
        handle.create_dataset("vector", shape=(0, embed_dim), maxshape=(None, embed_dim), dtype=np.float16,
                              chunks=(_CHUNK_ROWS, embed_dim))
    with handle:
        if "shard_sha256" not in handle:  # a new file, or format 1: vectors of unknown samples
            handle.create_dataset("shard_sha256", data=np.full(handle["record_id"].shape[0], NOT_FROM_A_STORE, "S64"),
                                  maxshape=(None,), chunks=(4096,))
            handle.attrs["format_version"] = EMBEDDINGS_FORMAT_VERSION
        for row in sorted(pending.replacements):
            patient_id, vector, key = pending.replacements[row]
            handle["patient_id"][row], handle["vector"][row], handle["shard_sha256"][row] = patient_id, vector, key
        start = handle["record_id"].shape[0]
        end = start + len(pending.record_ids)
        if end > start:
            for name in ("record_id", "patient_id", "vector", "shard_sha256"):
                handle[name].resize(end, axis=0)
            handle["record_id"][start:end] = np.array(pending.record_ids, dtype=object)
            handle["patient_id"][start:end] = np.array(pending.patient_ids, dtype=object)
            handle["vector"][start:end] = np.stack(pending.vectors)
            handle["shard_sha256"][start:end] = np.array(pending.shard_sha256, dtype="S64")
    with open(tmp, "rb+") as written:
        os.fsync(written.fileno())


def _in_child_process(function, *args) -> str | None:
    """Run ``function(*args)`` in a forked child; None when it succeeded, else why it failed in a
    few words (a crash of the child included). In-process where the platform cannot fork."""
    if not hasattr(os, "fork"):
        try:
            function(*args)
        except (OSError, RuntimeError) as error:
            return os_reason(error)
        return None
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_child_main, args=(send, function, args))
    child.start()
    send.close()
    try:
        try:
            reason = receive.recv()
        except EOFError:  # the child died before saying anything
            reason = None
        child.join()
    except BaseException:  # Ctrl-C while the child writes: stop it (the caller removes its copy)
        child.terminate()
        child.join()
        raise
    finally:
        receive.close()
    if reason is None and child.exitcode != 0:
        reason = (f"the writing process was killed by signal {-child.exitcode}" if child.exitcode < 0
                  else f"the writing process ended with status {child.exitcode}")
    return reason or None


def _child_main(send, function, args) -> None:
    # The parent says what failed in one line; what HDF5 prints while tearing down a failed file
    # is noise. Ctrl-C is the parent's to handle.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    try:
        function(*args)
    except (OSError, RuntimeError) as error:
        send.send(os_reason(error))
    except BaseException as error:
        send.send(f"{type(error).__name__}: {error}")
    else:
        send.send("")


def _read_keys(path: Path, fingerprint: str, embed_dim: int) -> tuple[list[str], list[bytes]]:
    """Record ids of an embedding file and the shard checksum of each, checked against a
    bundle's fingerprint and dimension."""
    try:
        with h5py.File(path, "r") as handle:
            _check_attributes(path, handle.attrs, fingerprint, embed_dim)
            return _read_strings(handle["record_id"]), list(_read_shard_sha256(handle))
    except (OSError, KeyError) as error:
        raise EmbeddingsError(f"{path}: damaged embedding file ({str(error).splitlines()[0][:120]}); delete it and embed again") from None


def append_embeddings(path: str | Path, bundle: Bundle, record_ids: Sequence[str], vectors,
                      patient_ids: Sequence[str] | None = None) -> int:
    """Append one batch to ``path`` (created when missing) and commit; return how many were new."""
    with EmbeddingWriter(path, bundle) as writer:
        return writer.append(record_ids, vectors, patient_ids)


@dataclass
class EmbedResult:
    path: Path
    embedded: int
    already: int
    seconds: float
    reembedded: int = 0  # records whose vector was of other samples (their shard changed since)

    @property
    def records_per_second(self) -> float:
        return (self.embedded + self.reembedded) / self.seconds if self.seconds > 0 else 0.0


def embed_store(store: Store, bundle: Bundle, path: str | Path | None = None, batch_size: int = 256,
                device: torch.device = torch.device("cpu"),
                progress: Callable[[int, int], None] | None = None) -> EmbedResult:
    """Embed every record of ``store`` whose vector ``path`` (default: ``default_embeddings_path``)
    lacks, or holds from other samples than the store's (its shard's checksum differs: the store
    was re-ingested since). Each shard is verified against the manifest (``Store.verify``)
    before it is read."""
    started = time.perf_counter()
    check_store_matches(bundle, store)
    path = Path(path) if path is not None else default_embeddings_path(store.directory, bundle)
    total = sum(shard["records"] for shard in store.manifest["shards"])
    encoder = FastEncoder(bundle, device, batch_size)  # compiled bf16 on CUDA; Bundle.embed on the CPU
    with EmbeddingWriter(path, bundle) as writer:
        seen = already = 0
        for shard_path, content in zip(store.shard_paths(), store.shards(with_signal=False)):
            shard_sha256 = store.shard_sha256(shard_path.name)
            rows = [row for row, record_id in enumerate(content.record_id) if not writer.is_current(record_id, shard_sha256)]
            already += len(content) - len(rows)
            seen += len(content) - len(rows)
            if rows:
                shard = read_shard(shard_path)
                for start in range(0, len(rows), batch_size):
                    batch = rows[start : start + batch_size]
                    vectors = next(encoder.encode_batches([shard.signal[batch]]))
                    writer.append([shard.record_id[i] for i in batch], vectors, [shard.patient_id[i] for i in batch],
                                  shard_sha256)
                    seen += len(batch)
                    if progress:
                        progress(seen, total)
            elif progress:
                progress(seen, total)
        embedded, reembedded = writer.appended, writer.replaced
    return EmbedResult(path, embedded, already, time.perf_counter() - started, reembedded)
