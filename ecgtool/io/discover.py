"""Find the records under the paths a user gives: every format, by content, in a fixed order;
and read list files of record paths."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ecgtool.errors import EcgToolError
from ecgtool.io import SNIFF_BYTES, WFDB, RecordFormat, format_of, not_a_regular_file

# Files that travel with exports but are never records: documentation, sidecars, images.
NOT_RECORD_SUFFIXES = frozenset(
    ".md .txt .rst .csv .tsv .json .jsonl .yaml .yml .pdf .png .jpg .jpeg .gif .svg .html .htm .log "
    ".ini .cfg .py .sh .zip .gz .tar .xlsx .xls .doc .docx .license".split()
)

# PhysioNet database index files and the usual licence / readme files without a suffix.
NOT_RECORD_NAMES = frozenset("records annotators license licence readme sha256sums md5sums dbs copying notice".split())

# A batch input with one of these suffixes is a list of record paths, one a line.
LIST_SUFFIXES = (".txt", ".lst", ".list")

NOT_UTF8 = "name is not UTF-8: it cannot be written to a store or an output file (rename it to read it)"


@dataclass(frozen=True)
class Found:
    """A file that is a record (``reason`` empty, ``record_format`` known when sniffed) or that
    looked like one but is not.

    A file or folder whose name is not UTF-8 is reported with ``path`` and ``display`` written
    with its undecodable bytes as ``\\xNN`` escapes: what can be written to a skip list, not a
    path that opens it."""

    path: Path
    display: str
    reason: str = ""
    record_format: RecordFormat | None = None

    @property
    def record_id(self) -> str:
        return self.path.stem


class MissingInput(FileNotFoundError):
    pass


class ListFileError(EcgToolError):
    """A list file of record paths that cannot be read as one."""


def find_records(inputs: Sequence[str | Path]) -> tuple[list[Found], list[Found]]:
    """Every record under ``inputs`` (directories searched recursively, or single files).

    Returns the records, sorted by display path (the path relative to the input's parent), and
    the files that are not records but are reported rather than silently ignored: MATLAB files
    without a WFDB header, files of no recognised format, anything that is not a regular file
    (a FIFO would stop the batch forever), and files or folders whose name is not UTF-8 (it
    could not be written to the store or the output). WFDB signal and annotation files (any
    file whose stem has a ``.hea`` beside it) and the documentation / sidecar suffixes in
    ``NOT_RECORD_SUFFIXES`` / ``NOT_RECORD_NAMES`` are ignored. A regular file given by name is
    always taken as a record; its reader decides.

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
        if not _is_utf8(str(root)):
            rejected.append(_not_utf8(str(root), str(root)))
        elif root.is_dir():
            _search(root, records, rejected)
        elif special := not_a_regular_file(root):
            rejected.append(Found(root, root.name, special))
        else:
            if root.suffix.lower() in (".dat", ".mat") and root.with_suffix(".hea").exists():
                root = root.with_suffix(".hea")
            records.append(Found(root, root.name))
    records.sort(key=lambda found: found.display)
    return records, rejected


def _search(root: Path, records: list[Found], rejected: list[Found]) -> None:
    """The records under the folder ``root``, and what looked like records but is not."""
    base = str(root.parent)
    # os.walk with plain strings: pathlib costs more than the rest of indexing on large trees.
    def unreadable(error: OSError) -> None:
        # os.walk drops a folder it cannot list unless told: it goes on the skip list instead.
        folder = error.filename or str(root)
        rejected.append(Found(Path(folder), os.path.relpath(folder, base), f"unreadable folder: {error.strerror or error}"))

    for directory, folders, files in os.walk(root, onerror=unreadable):
        # relpath once per folder, not per file: it normalises two absolute paths every call
        folder_display = os.path.relpath(directory, base)
        folders[:] = sorted(folder for folder in folders if not folder.startswith("."))
        for folder in [folder for folder in folders if not _is_utf8(folder)]:
            rejected.append(_not_utf8(os.path.join(directory, folder), os.path.join(folder_display, folder)))
            folders.remove(folder)
        header_stems = {os.path.splitext(name)[0] for name in files if name.lower().endswith(".hea")}
        # One stat per file: reading a FIFO waits for a writer forever. A header whose signal
        # file (same stem) is no regular file is left out for it.
        special = {name: reason for name in files if (reason := not_a_regular_file(os.path.join(directory, name)))}
        special_signal_file = {os.path.splitext(name)[0]: name for name in special if not name.lower().endswith(".hea")}
        for name in sorted(files):
            stem, suffix = os.path.splitext(name)
            suffix = suffix.lower()
            path = os.path.join(directory, name)
            display = name if folder_display == os.curdir else os.path.join(folder_display, name)
            if not _is_utf8(name):
                rejected.append(_not_utf8(path, display))
            elif name in special:
                if suffix == ".hea" or not (stem in header_stems or name.startswith(".") or suffix in NOT_RECORD_SUFFIXES):
                    rejected.append(Found(Path(path), display, special[name]))
            elif suffix == ".hea":
                if stem in special_signal_file:
                    companion = special_signal_file[stem]
                    rejected.append(Found(Path(path), display, f"signal file {companion}: {special[companion]}"))
                else:
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


def _sniffed(path: str) -> tuple[RecordFormat | None, str | None]:
    """The file's format, or ``(None, reason)`` when it cannot even be read."""
    try:
        with open(path, "rb") as stream:
            head = stream.read(SNIFF_BYTES)
    except OSError as error:
        return None, f"cannot read: {error.strerror or error}"
    return format_of(Path(path), head), None


def _is_utf8(name: str) -> bool:
    """False for a name holding bytes that are not UTF-8 (Python keeps them as surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _not_utf8(path: str, display: str) -> Found:
    def shown(text: str) -> str:
        return os.fsencode(text).decode("utf-8", "backslashreplace")

    return Found(Path(shown(path)), shown(display), NOT_UTF8)


def is_record_list(path: Path) -> bool:
    """Whether a batch input is a list file of record paths (by its suffix)."""
    return path.suffix.lower() in LIST_SUFFIXES and path.is_file()


def read_record_list(path: str | Path) -> list[Path]:
    """The records a list file names, one path a line, relative to the list's folder or absolute.

    Blank lines and lines starting with ``#`` are skipped. Each path is resolved, and a WFDB
    record named by its ``.dat`` / ``.mat`` or without extension is named by its ``.hea``, so
    that a record listed several ways (relative and absolute, with and without ``.hea``) is
    listed once, where it first appears. A path that names nothing is kept: its reader says so.

    Raises
    ------
    ListFileError
        The file is not UTF-8 text, or holds NUL bytes.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise ListFileError(f"{path}: not a UTF-8 text list of record paths (byte {error.start} is not text)") from None
    if any("\x00" in line for line in lines):
        raise ListFileError(f"{path}: not a text list of record paths (holds NUL bytes)")
    records: dict[Path, None] = {}
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#"):
            records.setdefault(_wfdb_header_of((path.parent / line).resolve()), None)
    return list(records)


def _wfdb_header_of(path: Path) -> Path:
    """``path``, or the WFDB header it stands for (``x.dat``, ``x.mat`` or ``x`` beside ``x.hea``)."""
    if path.suffix.lower() in (".dat", ".mat"):
        header = path.with_suffix(".hea")
    elif path.suffix.lower() != ".hea" and not path.is_file():
        header = path.with_name(path.name + ".hea")
    else:
        return path
    return header if header.is_file() else path
