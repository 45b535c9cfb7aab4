"""Files written whole, and their checksums.

Every file ecgtool writes for another process to read (manifests, bundles, caches, calibrations,
shards, embedding files, checkpoints, outputs) is written to ``<name>.tmp`` beside it and renamed
over it when complete: a reader sees the old file or the new one, never half of one. JSON
written here holds no NaN (``json_safe``): an undefined figure is ``null``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def temporary_path(path: Path) -> Path:
    """Where ``path`` is written before it is renamed into place: ``<name>.tmp`` beside it."""
    return path.with_name(path.name + ".tmp")


def move_into_place(tmp: Path, path: Path, fsync: bool = False) -> None:
    """Rename the finished ``tmp`` over ``path`` (with ``fsync``: its bytes reach the disk first)."""
    if fsync:
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
    os.replace(tmp, path)


@contextmanager
def written_whole(path: Path, fsync: bool = False) -> Iterator[Path]:
    """Yield the temporary path to write ``path``'s content to; it is renamed over ``path`` when
    the block ends without an error."""
    tmp = temporary_path(Path(path))
    yield tmp
    move_into_place(tmp, Path(path), fsync)


def write_bytes_atomic(path: Path, data: bytes, fsync: bool = False) -> None:
    """Write ``data`` through a temporary file and a rename."""
    with written_whole(path, fsync) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: Path, text: str) -> None:
    """Write UTF-8 ``text`` through a temporary file and a rename: never a half-written file."""
    with written_whole(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: Path, payload: dict) -> None:
    """Write ``payload`` as UTF-8 JSON through a temporary file and a rename."""
    write_text_atomic(path, json.dumps(payload, ensure_ascii=False, indent=2) + "\n")


def json_safe(value):
    """``value`` with every NaN or infinite float replaced by ``None`` (JSON has no NaN), in
    dicts, lists and tuples at any depth (tuples become lists)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 8 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(8 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def os_reason(error: Exception) -> str:
    """The cause of a failed write in a few words (h5py puts the C library's whole report in the message)."""
    code = getattr(error, "errno", None)
    if code is not None and code in errno.errorcode:
        return os.strerror(code)
    found = re.search(r"errno = (\d+)", str(error))
    if found:
        return os.strerror(int(found.group(1)))
    return " ".join(str(error).split())[:160]
