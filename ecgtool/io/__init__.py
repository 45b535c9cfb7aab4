"""Record readers: every format returns the same ``Record``."""

from __future__ import annotations

from pathlib import Path

from ecgtool.errors import RecordError
from ecgtool.record import Record


def read_record(path: str | Path) -> Record:
    """Read one record in any supported format, chosen by the file given.

    A WFDB / Challenge record may be named by its ``.hea``, its ``.dat`` / ``.mat`` or its name
    without extension.
    """
    from ecgtool.io.wfdb import read_wfdb

    path = Path(path)
    header = path if path.suffix.lower() == ".hea" else path.with_suffix(".hea")
    if path.suffix.lower() not in (".hea", ".dat", ".mat", ""):
        raise RecordError(path, f"unsupported record format {path.suffix!r} (WFDB .hea/.dat or Challenge .hea/.mat)")
    if not header.exists():
        if not path.exists():
            raise RecordError(path, "no such file")
        raise RecordError(path, "no WFDB header (.hea) beside this file")
    return read_wfdb(header)
