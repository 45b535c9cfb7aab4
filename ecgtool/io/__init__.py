"""Record readers: every format returns the same ``Record``, chosen by the file's content.

Each format lives in its own module of this package and exposes two functions:

``sniff(head: bytes) -> bool``
    True when the first ``SNIFF_BYTES`` bytes of a file are this format (root element, magic
    bytes, DICOM preamble …). Cheap and never raising.
``read(path: Path, verify_checksums: bool = True) -> Record``
    The whole record, or ``RecordError`` with a one-line reason.

and may expose ``read_patient_id(path: Path) -> str | None`` where that is much cheaper than a
whole read (Philips: the XML without the XLI decompression); ``ingest`` indexes with it.

``FORMATS`` lists them in sniffing order; ``read_record`` dispatches by content, so a file's
extension never decides alone (a GE MUSE export named ``.XML``, ``.xml`` or nothing reads alike).
"""

from __future__ import annotations

import importlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from ecgtool.errors import RecordError
from ecgtool.record import Record

SNIFF_BYTES = 4096


@dataclass(frozen=True)
class RecordFormat:
    """One supported file format: ``module`` holds its ``sniff`` and ``read``."""

    name: str
    title: str
    module: str

    def sniff(self, head: bytes) -> bool:
        return importlib.import_module(self.module).sniff(head)

    def read(self, path: Path, verify_checksums: bool = True) -> Record:
        return importlib.import_module(self.module).read(path, verify_checksums=verify_checksums)

    def read_patient_id(self, path: Path) -> str | None:
        """The patient id the file carries, by the module's cheap path when it has one."""
        module = importlib.import_module(self.module)
        if hasattr(module, "read_patient_id"):
            return module.read_patient_id(path)
        return module.read(path, verify_checksums=False).patient_id


# WFDB is recognised by its header file, not by content; the others by their first bytes.
WFDB = RecordFormat("wfdb", "WFDB / PhysioNet Challenge (.hea + .dat/.mat)", "ecgtool.io.wfdb")
FORMATS: tuple[RecordFormat, ...] = (
    RecordFormat("mfer", "MFER (JIS T 7308 / ISO 22077-1, .mwf)", "ecgtool.io.mfer"),
    RecordFormat("ge-muse", "GE MUSE RestingECG XML", "ecgtool.io.ge_muse"),
    RecordFormat("ge-cardiosoft", "GE CardioSoft CardiologyXML", "ecgtool.io.ge_cardiosoft"),
    RecordFormat("philips", "Philips Sierra ECG 1.03 / PhilipsECG 1.04 XML", "ecgtool.io.philips"),
    RecordFormat("hl7-aecg", "HL7 v3 annotated ECG (FDA aECG) XML", "ecgtool.io.hl7_aecg"),
    RecordFormat("dicom-ecg", "DICOM 12-lead / general ECG waveform (pydicom)", "ecgtool.io.dicom_ecg"),
    RecordFormat("scp-ecg", "SCP-ECG (EN 1064 / ISO 11073-91064)", "ecgtool.io.scp_ecg"),
)


_SPECIAL_FILES = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                  (stat.S_ISBLK, "a block device"))


def not_a_regular_file(path: str | Path) -> str | None:
    """Why the file at ``path`` must not be read as a record (a FIFO, whose reading waits for a
    writer forever; a socket; a device), or None for a regular file, a folder or a missing path."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    kind = next((name for test, name in _SPECIAL_FILES if test(mode)), "a special file")
    return f"not a regular file ({kind}): not read"


def format_of(path: Path, head: bytes | None = None) -> RecordFormat | None:
    """The format of the file at ``path`` by its content (WFDB by its ``.hea``), or None."""
    if path.suffix.lower() == ".hea":
        return WFDB
    if head is None:
        try:
            with open(path, "rb") as stream:
                head = stream.read(SNIFF_BYTES)
        except OSError:
            return None
    for record_format in FORMATS:
        if record_format.sniff(head):
            return record_format
    return None


def read_record(path: str | Path, verify_checksums: bool = True, record_format: RecordFormat | None = None) -> Record:
    """Read one record in any supported format, chosen by the file's content.

    A WFDB / Challenge record may be named by its ``.hea``, its ``.dat`` / ``.mat`` or its name
    without extension; every other format by its file. ``record_format``, when the caller has
    already sniffed the file (ingest's discovery), skips sniffing it again.

    Raises
    ------
    RecordError
        No such file, an unrecognised format, or whatever the format's reader found wrong.
    """
    path = Path(path)
    if record_format is not None:  # found by discovery, which reads regular files only
        return record_format.read(path, verify_checksums=verify_checksums)
    if path.suffix.lower() in (".dat", ".mat", "") and path.with_suffix(".hea").exists():
        path = path.with_suffix(".hea")
    if not path.exists():
        raise RecordError(path, "no such file")
    if path.is_dir():
        raise RecordError(path, "is a directory, not a record (use a batch command for folders)")
    special = not_a_regular_file(path)
    if special:
        raise RecordError(path, special)
    record_format = format_of(path)
    if record_format is None:
        if path.suffix.lower() in (".dat", ".mat"):
            raise RecordError(path, "no WFDB header (.hea) beside this file")
        raise RecordError(path, f"unrecognised record format (readable: {', '.join(supported_formats())})")
    return record_format.read(path, verify_checksums=verify_checksums)


def supported_formats() -> list[str]:
    return [WFDB.name] + [record_format.name for record_format in FORMATS]
