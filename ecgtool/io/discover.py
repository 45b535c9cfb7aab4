"""Find the records under the paths a user gives: every format, by content, in a fixed order."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ecgtool.io import SNIFF_BYTES, WFDB, RecordFormat, format_of

# Files that travel with exports but are never records: documentation, sidecars, images.
NOT_RECORD_SUFFIXES = frozenset(
    ".md .txt .rst .csv .tsv .json .jsonl .yaml .yml .pdf .png .jpg .jpeg .gif .svg .html .htm .log "
    ".ini .cfg .py .sh .zip .gz .tar .xlsx .xls .doc .docx .license".split()
)

# PhysioNet database index files and the usual licence / readme files without a suffix.
NOT_RECORD_NAMES = frozenset("records annotators license licence readme sha256sums md5sums dbs copying notice".split())


@dataclass(frozen=True)
class Found:
    """A file that is a record (``reason`` empty, ``record_format`` known when sniffed) or that
    looked like one but is not."""

    path: Path
    display: str
    reason: str = ""
    record_format: RecordFormat | None = None

    @property
    def record_id(self) -> str:
        return self.path.stem


class MissingInput(FileNotFoundError):
    pass


def find_records(inputs: Sequence[str | Path]) -> tuple[list[Found], list[Found]]:
    """Every record under ``inputs`` (directories searched recursively, or single files).

    Returns the records, sorted by display path (the path relative to the input's parent), and
    the files that are not records but are reported rather than silently ignored: MATLAB files
    without a WFDB header, and files of no recognised format. WFDB signal and annotation files
    (any file whose stem has a ``.hea`` beside it) and the documentation / sidecar suffixes in
    ``NOT_RECORD_SUFFIXES`` / ``NOT_RECORD_NAMES`` are ignored. A file given by name is always taken as a record; its
    reader decides.

    Raises
    ------
    MissingInput
        An input path does not exist.
    """
    records: list[Found] = []
    rejected: list[Found] = []
    for root in inputs:
        root = Path(root)
        if not root.exists():
            raise MissingInput(f"{root}: no such file or directory")
        if root.is_file():
            if root.suffix.lower() in (".dat", ".mat") and root.with_suffix(".hea").exists():
                root = root.with_suffix(".hea")
            records.append(Found(root, root.name))
            continue
        base = str(root.parent)
        # os.walk with plain strings: pathlib costs more than the rest of indexing on large trees.
        def unreadable(error: OSError, base=base) -> None:
            # os.walk drops a folder it cannot list unless told: it goes on the skip list instead.
            folder = error.filename or str(root)
            rejected.append(Found(Path(folder), os.path.relpath(folder, base), f"unreadable folder: {error.strerror or error}"))

        for directory, folders, files in os.walk(root, onerror=unreadable):
            folders[:] = sorted(folder for folder in folders if not folder.startswith("."))
            header_stems = {os.path.splitext(name)[0] for name in files if name.lower().endswith(".hea")}
            # relpath once per folder, not per file: it normalises two absolute paths every call
            folder_display = os.path.relpath(directory, base)
            for name in sorted(files):
                stem, suffix = os.path.splitext(name)
                suffix = suffix.lower()
                path = os.path.join(directory, name)
                display = name if folder_display == os.curdir else os.path.join(folder_display, name)
                if suffix == ".hea":
                    records.append(Found(Path(path), display, record_format=WFDB))
                elif stem in header_stems or name.startswith(".") or suffix in NOT_RECORD_SUFFIXES or stem.lower() in NOT_RECORD_NAMES:
                    continue
                elif suffix == ".mat":
                    rejected.append(Found(Path(path), display, "MATLAB file without a WFDB header beside it (not a Challenge record)"))
                else:
                    record_format, unreadable_reason = _sniffed(path)
                    if record_format is not None:
                        records.append(Found(Path(path), display, record_format=record_format))
                    else:
                        rejected.append(Found(Path(path), display, unreadable_reason or "not a recognised ECG record format"))
    records.sort(key=lambda found: found.display)
    return records, rejected


def _sniffed(path: str) -> tuple[RecordFormat | None, str | None]:
    """The file's format, or ``(None, reason)`` when it cannot even be read."""
    try:
        with open(path, "rb") as stream:
            head = stream.read(SNIFF_BYTES)
    except OSError as error:
        return None, f"cannot read: {error.strerror or error}"
    return format_of(Path(path), head), None
