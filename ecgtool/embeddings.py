"""The embedding file: every record's ECG embedding under one bundle, keyed by record id.

One HDF5 file per bundle, by default ``<store>/embeddings/<bundle fingerprint>.h5``::

    attributes   format, format_version, bundle_fingerprint, embed_dim, registry_hash, created_by
    record_id    (n,) str        unique within the file
    patient_id   (n,) str        '' where the writer did not know it
    vector       (n, d) float16  unit vectors: ``Bundle.embed`` of the canonical record

A file holds the vectors of one bundle only: appending with another bundle (another fingerprint)
is refused. Appending copies the file to ``<file>.tmp``, appends there and renames it over the
file (at ``commit`` and at ``close``), so the file on disk is always whole; one process at a time
writes it (``ecgtool.output_lock``).
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from ecgtool import __version__
from ecgtool.bundle import Bundle, check_store_matches, weight_checksums
from ecgtool.errors import EcgToolError
from ecgtool.fast_encoder import FastEncoder
from ecgtool.files import move_into_place, temporary_path
from ecgtool.output_lock import exclusive_output
from ecgtool.store import Store, read_shard

EMBEDDINGS_FORMAT = "ecgtool-embeddings"
EMBEDDINGS_FORMAT_VERSION = 1
EMBEDDINGS_DIR = "embeddings"


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

    def __len__(self) -> int:
        return len(self.record_ids)


def _read_strings(dataset) -> list[str]:
    return [s.decode("utf-8") for s in dataset[()]]


def _check_attributes(path: Path, attrs, fingerprint: str | None, embed_dim: int | None) -> str:
    if attrs.get("format") != EMBEDDINGS_FORMAT:
        raise EmbeddingsError(f"{path}: not an ecgtool embedding file")
    if attrs.get("format_version") != EMBEDDINGS_FORMAT_VERSION:
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
                              handle["vector"][()])
    except (OSError, KeyError) as error:
        raise EmbeddingsError(f"{path}: damaged embedding file ({str(error).splitlines()[0][:120]}); delete it and embed again") from None


class EmbeddingWriter:
    """Append vectors to an embedding file, skipping record ids it already holds.

    Use as a context manager; ``append`` per batch; the file is renamed into place at least every
    ``commit_every_s`` seconds and on leaving the block (an interruption loses only the vectors
    since the last commit; a re-run embeds them again).

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
        self.registry_hash = bundle.description["registry"]["hash"]
        self.commit_every_s = commit_every_s
        self.appended = 0
        self._stack = ExitStack()
        self._file: h5py.File | None = None
        self._known: set[str] = set()
        self._last_commit = time.monotonic()

    def __enter__(self) -> "EmbeddingWriter":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._stack.enter_context(exclusive_output(self.path, is_directory=False))
        try:
            if self.path.exists():
                self._known = set(read_embeddings_ids(self.path, self.fingerprint, self.embed_dim))
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, kind, value, traceback) -> None:
        try:
            if kind is None and self._file is not None:
                self.commit(reopen=False)
            elif kind is not None:
                self._drop_tmp()
        finally:
            self._stack.close()

    @property
    def known(self) -> set[str]:
        """Record ids in the file, committed or not."""
        return self._known

    def _open_tmp(self) -> None:
        if self.path.exists():
            shutil.copyfile(self.path, self.tmp)
            self._file = h5py.File(self.tmp, "a")
            return
        self._file = h5py.File(self.tmp, "w")
        attrs = {"format": EMBEDDINGS_FORMAT, "format_version": EMBEDDINGS_FORMAT_VERSION,
                 "bundle_fingerprint": self.fingerprint, "embed_dim": self.embed_dim,
                 "registry_hash": self.registry_hash, "created_by": f"ecgtool {__version__}"}
        self._file.attrs.update(attrs)
        string = h5py.string_dtype("utf-8")
        for name in ("record_id", "patient_id"):
            self._file.create_dataset(name, shape=(0,), maxshape=(None,), dtype=string, chunks=(4096,))
        self._file.create_dataset("vector", shape=(0, self.embed_dim), maxshape=(None, self.embed_dim),
                                  dtype=np.float16, chunks=(1024, self.embed_dim))

    def _drop_tmp(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except Exception:
                pass  # the temporary copy is removed below either way
            self._file = None
        self.tmp.unlink(missing_ok=True)

    def append(self, record_ids: Sequence[str], vectors, patient_ids: Sequence[str] | None = None) -> int:
        """Append the records not in the file yet; return how many were appended."""
        vectors = vectors.detach().cpu().float().numpy() if isinstance(vectors, torch.Tensor) else np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape != (len(record_ids), self.embed_dim):
            raise EmbeddingsError(f"{self.path}: {len(record_ids)} record ids with vectors of shape {vectors.shape}, "
                                  f"expected ({len(record_ids)}, {self.embed_dim})")
        if not np.isfinite(vectors).all():
            raise EmbeddingsError(f"{self.path}: refusing NaN or infinite vectors")
        patient_ids = list(patient_ids) if patient_ids is not None else [""] * len(record_ids)
        if len(patient_ids) != len(record_ids):
            raise EmbeddingsError(f"{self.path}: {len(record_ids)} record ids with {len(patient_ids)} patient ids")
        keep = []
        for row, record_id in enumerate(record_ids):
            if record_id not in self._known:
                self._known.add(record_id)
                keep.append(row)
        if keep:
            if self._file is None:  # the copy is made on the first new record: a no-op run writes nothing
                self._open_tmp()
            start = self._file["record_id"].shape[0]
            end = start + len(keep)
            for name in ("record_id", "patient_id", "vector"):
                self._file[name].resize(end, axis=0)
            self._file["record_id"][start:end] = np.array([record_ids[i] for i in keep], dtype=object)
            self._file["patient_id"][start:end] = np.array([patient_ids[i] for i in keep], dtype=object)
            self._file["vector"][start:end] = vectors[keep].astype(np.float16)
            self.appended += len(keep)
        if self._file is not None and time.monotonic() - self._last_commit >= self.commit_every_s:
            self.commit()
        return len(keep)

    def commit(self, reopen: bool = True) -> None:
        """Rename the appended file into place (fsynced first)."""
        if self._file is None:
            return
        self._file.close()
        self._file = None
        move_into_place(self.tmp, self.path, fsync=True)
        self._last_commit = time.monotonic()
        if reopen:
            self._open_tmp()


def read_embeddings_ids(path: Path, fingerprint: str | None = None, embed_dim: int | None = None) -> list[str]:
    """Record ids of an embedding file, checked against a bundle's fingerprint and dimension."""
    try:
        with h5py.File(path, "r") as handle:
            _check_attributes(path, handle.attrs, fingerprint, embed_dim)
            return _read_strings(handle["record_id"])
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

    @property
    def records_per_second(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0


def embed_store(store: Store, bundle: Bundle, path: str | Path | None = None, batch_size: int = 256,
                device: torch.device = torch.device("cpu"),
                progress: Callable[[int, int], None] | None = None) -> EmbedResult:
    """Embed every record of ``store`` that ``path`` (default: ``default_embeddings_path``) lacks."""
    started = time.perf_counter()
    check_store_matches(bundle, store)
    path = Path(path) if path is not None else default_embeddings_path(store.directory, bundle)
    total = sum(shard["records"] for shard in store.manifest["shards"])
    encoder = FastEncoder(bundle, device, batch_size)  # compiled bf16 on CUDA; Bundle.embed on the CPU
    with EmbeddingWriter(path, bundle) as writer:
        already = len(writer.known)
        seen = 0
        for shard_path in store.shard_paths():
            ids = read_shard(shard_path, with_signal=False).record_id
            missing = [row for row, record_id in enumerate(ids) if record_id not in writer.known]
            seen += len(ids) - len(missing)
            if missing:
                shard = read_shard(shard_path)
                for start in range(0, len(missing), batch_size):
                    rows = missing[start : start + batch_size]
                    vectors = next(encoder.encode_batches([shard.signal[rows]]))
                    writer.append([shard.record_id[i] for i in rows], vectors, [shard.patient_id[i] for i in rows])
                    seen += len(rows)
                    if progress:
                        progress(seen, total)
            elif progress:
                progress(seen, total)
        embedded = writer.appended
    return EmbedResult(path, embedded, already, time.perf_counter() - started)
