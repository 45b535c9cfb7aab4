"""The sharded HDF5 store of canonical records and its JSON manifest.

Layout of a store directory::

    manifest.json        shard list, counts per split, registry, input contract, skip list
    ingest-config.json   the settings the store was made with (a re-run must match them)
    train-00000.h5 …     one file per shard; every shard holds records of one split only
    verified.json        shards whose checksum was verified, by file identity (``Store.verify``)

Each shard holds, for its ``n`` records:

=============  ===================  ==========================================================
dataset        shape, dtype         content
=============  ===================  ==========================================================
signal         (n, 12, 5000) f2/f4  canonical samples in mV, one record per HDF5 chunk
n_valid        (n,) int32           samples that are real signal (the rest is zero padding)
findings       (n, 98) uint8        multi-hot over the registry's findings, registry order
record_id      (n,) str             unique within the store
patient_id     (n,) str             records without one are their own patient ("record:<id>")
source         (n,) str             the file the record was read from
report         (n,) str             the report text as the source gave it ('' when none)
prompt_ja/_en  (n,) str             the report prompt built from the findings ('' when none)
=============  ===================  ==========================================================

A shard is written to ``<name>.tmp`` and renamed when complete, so a shard that exists is whole.
``Store`` reads a store; ``store_batches`` reads shards' samples batch by batch straight into
the caller's memory (``ecgtool.fast_encoder``'s pinned buffers). Every reader of a store checks
the shards it reads against the manifest first, through ``Store.verify`` (``Store.shards`` does
so itself).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from ecgtool.errors import EcgToolError
from ecgtool.files import file_sha256, move_into_place, temporary_path

MANIFEST = "manifest.json"
CONFIG = "ingest-config.json"
VERIFIED = "verified.json"
_SETTLED_NS = 2_000_000_000
STORE_FORMAT_VERSION = 1
STRING_FIELDS = ("record_id", "patient_id", "source", "report", "prompt_ja", "prompt_en", "acquisition")
# float16 keeps 11 significant bits: the rounding error is at most 2^-11 of the magnitude.
STORED_DTYPE_RELATIVE_ERROR = {"float16": 2.0**-11, "float32": 2.0**-24}


class StoreError(EcgToolError):
    """A store directory is missing, incomplete or inconsistent."""


@dataclass
class ShardContent:
    """The records of one shard, as written and as read back."""

    signal: np.ndarray
    n_valid: np.ndarray
    findings: np.ndarray
    record_id: list[str]
    patient_id: list[str]
    source: list[str]
    report: list[str]
    prompt_ja: list[str]
    prompt_en: list[str]
    # JSON per record: the file's format, acquisition time, device, the machine's own statements
    # and measurements, and the leads the reader derived ("" in shards written before it existed).
    acquisition: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.record_id)


def to_stored_dtype(signal: np.ndarray, dtype: str) -> np.ndarray:
    """Cast to the stored dtype (float16: round to nearest even).

    NumPy's float16 cast takes ~0.2 ms for a 12 × 5000 record, torch's ~20× less, but importing
    torch costs 2–3 s, more than NumPy's cast of 10,000 records; the two agree on every float32
    bit pattern but NaN payloads (checked exhaustively), so stores are the same either way."""
    return np.asarray(signal, dtype=np.float32).astype(dtype, copy=False)


class ShardWriter:
    """Write one shard in appended blocks; ``close`` makes it visible (fsync + rename), ``abort`` drops it.

    Appending in blocks keeps memory flat whatever the shard size.
    """

    def __init__(self, path: Path, n_findings: int, dtype: str = "float16", signal_shape: tuple[int, int] = (12, 5000)):
        self.path = path
        self.tmp = temporary_path(path)
        self.length = 0
        self._file = h5py.File(self.tmp, "w")
        self._file.create_dataset("signal", shape=(0, *signal_shape), maxshape=(None, *signal_shape), dtype=dtype, chunks=(1, *signal_shape))
        self._file.create_dataset("n_valid", shape=(0,), maxshape=(None,), dtype=np.int32, chunks=(4096,))
        self._file.create_dataset("findings", shape=(0, n_findings), maxshape=(None, n_findings), dtype=np.uint8, chunks=(1024, n_findings))
        string = h5py.string_dtype("utf-8")
        for name in STRING_FIELDS:
            self._file.create_dataset(name, shape=(0,), maxshape=(None,), dtype=string, chunks=(1024,))

    def append(self, content: ShardContent) -> None:
        n = len(content)
        if not n:
            return
        end = self.length + n
        for name in ("signal", "n_valid", "findings", *STRING_FIELDS):
            dataset = self._file[name]
            dataset.resize(end, axis=0)
            value = getattr(content, name)
            dataset[self.length : end] = np.array(value, dtype=object) if name in STRING_FIELDS else value
        self.length = end

    def close(self, attributes: dict) -> None:
        for key, value in attributes.items():
            self._file.attrs[key] = json.dumps(value, ensure_ascii=False)
        self._file.close()
        move_into_place(self.tmp, self.path, fsync=True)

    def abort(self) -> None:
        """Drop the temporary file, also when closing it fails (a full disk fails the flush too)."""
        try:
            self._file.close()
        except Exception:
            pass  # the file is removed below either way
        finally:
            self.tmp.unlink(missing_ok=True)


def write_shard(path: Path, content: ShardContent, attributes: dict, dtype: str = "float16") -> None:
    """Write a whole shard at once, atomically; ``attributes`` are stored as JSON HDF5 attributes."""
    writer = ShardWriter(path, content.findings.shape[1], dtype, content.signal.shape[1:])
    try:
        writer.append(content)
    except BaseException:
        writer.abort()
        raise
    writer.close(attributes)


def record_ids_digest(record_ids: list[str]) -> str:
    """SHA-256 of a shard's record ids in order: which records a shard holds, in one string."""
    return hashlib.sha256("\n".join(record_ids).encode("utf-8")).hexdigest()


def _open_shard(path: Path) -> h5py.File:
    """Open a shard for reading, or a one-line ``StoreError`` naming it (cut, damaged, not HDF5)."""
    try:
        return h5py.File(path, "r")
    except FileNotFoundError:
        raise StoreError(f"{path}: shard missing; re-run the ingest that made this store") from None
    except OSError as error:
        raise StoreError(f"{path}: damaged shard, not readable HDF5 ({str(error).splitlines()[0][:120]}); "
                         "delete it and re-run the ingest that made this store") from None


def read_shard_attributes(path: Path) -> dict:
    with _open_shard(path) as shard:
        return {key: json.loads(value) for key, value in shard.attrs.items()}


def read_shard(path: Path, with_signal: bool = True) -> ShardContent:
    """Read a whole shard into memory (signals as stored: float16 unless ingested as float32)."""
    try:
        return _read_open_shard(path, with_signal)
    except (KeyError, OSError) as error:
        raise StoreError(f"{path}: damaged shard ({str(error).splitlines()[0][:120]}); "
                         "delete it and re-run the ingest that made this store") from None


@dataclass
class ShardSummary:
    """What a manifest needs of a shard: its records, their patients and findings, its attributes."""

    record_id: list[str]
    patient_id: list[str]
    findings: np.ndarray
    attributes: dict

    def __len__(self) -> int:
        return len(self.record_id)


def read_shard_summary(path: Path) -> ShardSummary:
    """Read a shard's record ids, patient ids, findings and attributes in one open (not its
    signals, reports or prompts)."""
    try:
        with _open_shard(path) as shard:
            return ShardSummary(
                record_id=[s.decode("utf-8") for s in shard["record_id"][()]],
                patient_id=[s.decode("utf-8") for s in shard["patient_id"][()]],
                findings=shard["findings"][()],
                attributes={key: json.loads(value) for key, value in shard.attrs.items()},
            )
    except (KeyError, OSError) as error:
        raise StoreError(f"{path}: damaged shard ({str(error).splitlines()[0][:120]}); "
                         "delete it and re-run the ingest that made this store") from None


def _read_open_shard(path: Path, with_signal: bool) -> ShardContent:
    with _open_shard(path) as shard:
        n = shard["record_id"].shape[0]
        strings = {
            name: [s.decode("utf-8") for s in shard[name][()]] if name in shard else [""] * n
            for name in STRING_FIELDS
        }
        signal = shard["signal"][()] if with_signal else np.empty((n, 0, 0), dtype=shard["signal"].dtype)
        return ShardContent(
            signal=signal,
            n_valid=shard["n_valid"][()],
            findings=shard["findings"][()],
            **strings,
        )


class ShardRows:
    """Rows ``start:stop`` of one shard's ``signal``, read when asked, into a given array.

    A store writes each record as one uncompressed chunk: their byte offsets in the file are read
    once per shard, and a batch is read with ``os.preadv`` straight into its destination (a
    pinned buffer), runs of adjacent chunks in one call, without HDF5 and without holding the GIL.
    Any other layout is read through h5py.
    """

    def __init__(self, path: str | Path, start: int, stop: int, row_shape: tuple[int, ...], dtype: np.dtype,
                 offsets: np.ndarray | None):
        self.path, self.start, self.stop = str(path), start, stop
        self.shape = (stop - start, *row_shape)
        self.dtype = np.dtype(dtype)
        self.offsets = offsets

    def __len__(self) -> int:
        return self.shape[0]

    def read_into(self, out: np.ndarray) -> None:
        if out.shape != self.shape or out.dtype != self.dtype or not out.flags.c_contiguous:
            raise ValueError(f"{self.path}: rows {self.start}:{self.stop} need a C-contiguous {self.dtype} array of {self.shape}")
        if self.offsets is None:
            with h5py.File(self.path, "r") as shard:
                shard["signal"].read_direct(out, np.s_[self.start:self.stop])
            return
        row_bytes = out[0].nbytes if len(out) else 0
        flat = out.reshape(len(out), -1).view(np.uint8)
        offsets = self.offsets[self.start:self.stop]
        breaks = np.flatnonzero(np.diff(offsets) != row_bytes) + 1
        descriptor = os.open(self.path, os.O_RDONLY)
        try:
            for run in np.split(np.arange(len(offsets)), breaks):
                if not len(run):
                    continue
                view = memoryview(flat[run[0]:run[-1] + 1]).cast("B")
                position, done = int(offsets[run[0]]), 0
                while done < len(view):
                    read = os.preadv(descriptor, [view[done:]], position + done)
                    if read <= 0:
                        raise OSError(f"{self.path}: ended inside record {self.start + run[0]}'s samples")
                    done += read
        finally:
            os.close(descriptor)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = np.empty(self.shape, self.dtype)
        self.read_into(out)
        return out if dtype is None else out.astype(dtype)


def _chunk_offsets(signal) -> np.ndarray | None:
    """Each row's byte offset in the file when ``signal`` is stored as one unfiltered chunk per
    row (as ``ecgtool ingest`` writes it), else None."""
    if signal.chunks != (1, *signal.shape[1:]) or signal.id.get_create_plist().get_nfilters() or not hasattr(signal.id, "chunk_iter"):
        return None
    offsets = np.full(signal.shape[0], -1, dtype=np.int64)
    row_bytes = int(np.prod(signal.shape[1:])) * signal.dtype.itemsize

    def take(info):
        if info.size == row_bytes:
            offsets[info.chunk_offset[0]] = info.byte_offset

    signal.id.chunk_iter(take)
    return None if (offsets < 0).any() else offsets


def store_batches(paths: Iterable[str | Path], batch_size: int) -> Iterator[ShardRows]:
    """Each shard's samples, ``batch_size`` records at a time, as stored (float16): read when
    consumed (``np.asarray(rows)``, or ``rows.read_into(array)``)."""
    for path in paths:
        with h5py.File(path, "r") as shard:
            signal = shard["signal"]
            shape, dtype, offsets = signal.shape, signal.dtype, _chunk_offsets(signal)
        for start in range(0, shape[0], batch_size):
            yield ShardRows(path, start, min(start + batch_size, shape[0]), shape[1:], dtype, offsets)


class Store:
    """Read access to an ingested store directory.

    Examples
    --------
    >>> store = Store("out/ptbxl")                       # doctest: +SKIP
    >>> store.counts()["test"]["records"]                 # doctest: +SKIP
    >>> for shard in store.shards("train"): ...           # doctest: +SKIP
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        manifest_path = self.directory / MANIFEST
        if not manifest_path.is_file():
            raise StoreError(f"{self.directory}: not an ecgtool store (no {MANIFEST}; run `ecgtool ingest` first)")
        try:
            self.manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise StoreError(f"{manifest_path}: damaged manifest, not JSON ({error}); re-run the ingest that made it") from None
        if not isinstance(self.manifest, dict):
            raise StoreError(f"{manifest_path}: damaged manifest (not a JSON object)")
        if self.manifest.get("format_version") != STORE_FORMAT_VERSION:
            raise StoreError(f"{manifest_path}: store format {self.manifest.get('format_version')} is not supported")
        self._entries = {shard["file"]: shard for shard in self.manifest["shards"]}
        self._verified: set[str] = set()  # shard files verified by this instance
        self._computed_sha256: dict[str, str] = {}

    @property
    def registry_hash(self) -> str:
        return self.manifest["registry"]["hash"]

    @property
    def contract(self) -> dict:
        return self.manifest["contract"]

    def counts(self) -> dict:
        return self.manifest["counts"]

    def shard_paths(self, split: str | None = None) -> list[Path]:
        return [
            self.directory / shard["file"]
            for shard in self.manifest["shards"]
            if split is None or shard["split"] == split
        ]

    def shard_sha256(self, file: str) -> str:
        """The SHA-256 the manifest records for shard ``file`` (computed from the file for stores
        written before the manifest held checksums): what the samples read from it are keyed to
        (``ecgtool.embeddings``)."""
        entry = self._entries[file]
        return entry.get("sha256") or self._computed_sha256.setdefault(file, file_sha256(self.directory / file))

    def verify(self, split: str | None = None, files: Iterable[str] | None = None) -> None:
        """Check every shard of ``split`` (all by default), or the shard ``files`` named, against
        the manifest: present, the same bytes (SHA-256) and the same records. A damaged, replaced
        or overwritten shard (e.g. another split's copied over a test shard, or samples written
        into it) is a one-line ``StoreError`` naming it. Stores written before the manifest held
        checksums are checked for presence only.

        Every reader of a store calls this for what it reads. A shard's checksum is computed
        once per file: ``verified.json`` remembers the file's identity (device, inode, size,
        modification and change times) when it matched, so an unchanged file is not hashed again
        (any write to it, or its replacement, changes its change time)."""
        names = list(files) if files is not None else [
            shard["file"] for shard in self.manifest["shards"] if split is None or shard["split"] == split]
        remembered = self._read_verified()
        newly = {}
        for name in names:
            if name in self._verified:
                continue
            shard = self._entries.get(name)
            path = self.directory / name
            if shard is None:
                raise StoreError(f"{path}: not a shard of this store's manifest")
            try:
                identity = _file_identity(path)
            except FileNotFoundError:
                raise StoreError(f"{path}: shard missing; re-run the ingest that made this store") from None
            if "sha256" in shard and remembered.get(name) != [shard["sha256"], *identity]:
                if file_sha256(path) != shard["sha256"]:
                    raise StoreError(f"{path}: does not match the manifest's checksum (damaged or replaced); "
                                     "delete it and re-run the ingest that made this store")
                # File times are coarse (a few ms): a file changed just now could change again
                # under the same times, so it is only remembered once it has been still a while.
                if time.time_ns() - identity[-1] > _SETTLED_NS:
                    newly[name] = [shard["sha256"], *identity]
            if "record_ids_sha256" in shard:
                content = read_shard(path, with_signal=False)
                if len(content) != shard["records"] or record_ids_digest(content.record_id) != shard["record_ids_sha256"]:
                    raise StoreError(f"{path}: holds other records than the manifest says ({shard['split']} split)")
            self._verified.add(name)
        if newly:
            self._remember_verified({**remembered, **newly})

    def _read_verified(self) -> dict:
        try:
            remembered = json.loads((self.directory / VERIFIED).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return remembered if isinstance(remembered, dict) else {}

    def _remember_verified(self, remembered: dict) -> None:
        """Write ``verified.json`` (best effort: a store on a read-only disk is hashed on every
        run). Concurrent readers each write a temporary file of their own and rename it."""
        remembered = {name: value for name, value in remembered.items() if name in self._entries}
        try:
            descriptor, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{VERIFIED}.", suffix=".tmp")
        except OSError:
            return
        try:
            os.fchmod(descriptor, 0o644)  # as readable as the shards it describes
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                json.dump(remembered, handle)
            os.replace(tmp, self.directory / VERIFIED)
        except OSError:
            Path(tmp).unlink(missing_ok=True)

    def shards(self, split: str | None = None, with_signal: bool = True) -> Iterator[ShardContent]:
        """Each shard of ``split`` (all by default), verified (``verify``) before it is read."""
        for path in self.shard_paths(split):
            self.verify(files=[path.name])
            yield read_shard(path, with_signal=with_signal)


def _file_identity(path: Path) -> list[int]:
    """What changes when a file is written to or replaced: device, inode, size, modification and
    change times (the change time cannot be set back by a program)."""
    status = os.stat(path)
    return [status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns]
