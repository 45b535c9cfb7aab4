"""Labels, reports, patient ids and splits that come beside the records, not inside them.

Two table layouts are read, told apart by their columns:

* PTB-XL's ``ptbxl_database.csv``: ``ecg_id, patient_id, report, scp_codes, strat_fold,
  filename_hr, filename_lr``;
* a generic sidecar CSV, the form in which a hospital hands over its own reports: a ``record``
  column (record id or file name) and any of ``patient``, ``report``, ``findings`` (finding ids,
  English or Japanese names or synonyms, separated by ``;``, ``|`` or ``、``), ``split`` and
  ``ecg`` (an identifier of the ECG itself: rows that share it are copies of one ECG).

PTB-XL names the ECG of each row ``ptb-xl:<ecg_id>``: its 500 Hz (``filename_hr``) and 100 Hz
(``filename_lr``) files are two copies of one ECG, and ingest keeps only one of them.
  UTF-8 (with or without BOM) and Shift_JIS (cp932, as Japanese Excel saves) are both read.
"""

from __future__ import annotations

import ast
import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

from ecgtool.errors import EcgToolError
from ecgtool.splits import PTBXL_FOLDS, SPLITS

_RECORD_COLUMNS = ("record", "record_id", "file", "filename")
_PATIENT_COLUMNS = ("patient", "patient_id")
_REPORT_COLUMNS = ("report", "report_text")
_FINDINGS_COLUMNS = ("findings", "labels", "finding_ids")
_FINDING_SEPARATORS = re.compile(r"[;|、；]")
_RECORD_SUFFIXES = re.compile(r"\.(hea|dat|mat|mwf|xml|dcm|scp)$", re.IGNORECASE)


class AnnotationError(EcgToolError):
    """A metadata table cannot be used; the message names the file (and row)."""


@dataclass
class Annotation:
    """What the tables say about one record."""

    patient_id: str | None = None
    report: str | None = None
    codes: dict[str, list[str]] = field(default_factory=dict)
    finding_terms: list[str] = field(default_factory=list)
    split: str | None = None
    findings_from_report: bool = False
    ecg: str | None = None

    def merge(self, other: "Annotation") -> None:
        """Fill what this annotation lacks from ``other``; codes and finding terms are united."""
        self.patient_id = self.patient_id or other.patient_id
        self.report = self.report or other.report
        self.split = self.split or other.split
        self.ecg = self.ecg or other.ecg
        self.findings_from_report = self.findings_from_report or other.findings_from_report
        for vocabulary, codes in other.codes.items():
            self.codes.setdefault(vocabulary, []).extend(c for c in codes if c not in self.codes[vocabulary])
        self.finding_terms.extend(t for t in other.finding_terms if t not in self.finding_terms)


def record_key(name: str) -> str:
    """The record id a table cell refers to: ``records500/00000/00001_hr`` → ``00001_hr``."""
    return _RECORD_SUFFIXES.sub("", Path(name.strip().replace("\\", "/")).name)


def load_annotations(paths: list[Path]) -> dict[str, Annotation]:
    """Read every table in ``paths`` into record id → ``Annotation`` (tables merged in order).

    Tables that disagree on a record's patient, split or ECG are refused, naming the record and
    both tables: which one is right decides whether a patient leaks into the test split, and no
    rule can guess it.
    """
    merged: dict[str, Annotation] = {}
    source: dict[str, Path] = {}
    for path in paths:
        for key, annotation in _read_table(Path(path)).items():
            if key in merged:
                _refuse_conflict(key, merged[key], annotation, source[key], Path(path))
                merged[key].merge(annotation)
            else:
                merged[key] = annotation
                source[key] = Path(path)
    return merged


def _refuse_conflict(key: str, first: Annotation, second: Annotation, first_path: Path, second_path: Path) -> None:
    for what in ("patient_id", "split", "ecg"):
        a, b = getattr(first, what), getattr(second, what)
        if a is not None and b is not None and a != b:
            raise AnnotationError(
                f"{second_path}: record {key} has {what.replace('_id', '')} {b!r}, but {first_path} gives {a!r}; "
                "correct one table (the tables must agree on patients, splits and ECG ids)"
            )


def _read_table(path: Path) -> dict[str, Annotation]:
    rows = _read_csv_rows(path)
    if not rows:
        raise AnnotationError(f"{path}: no rows")
    columns = {name.strip().lower() for name in rows[0].keys() if name}
    if {"scp_codes", "patient_id"} <= columns and ({"filename_hr", "filename_lr"} & columns):
        return _read_ptbxl_rows(rows, path)
    if not columns & set(_RECORD_COLUMNS):
        raise AnnotationError(
            f"{path}: not a PTB-XL database and no record column (one of {', '.join(_RECORD_COLUMNS)})"
        )
    return _read_sidecar_rows(rows, path, columns)


def _read_csv_rows(path: Path) -> list[dict[str, str]]:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise AnnotationError(f"{path}: cannot read: {error.strerror or error}") from None
    for encoding in ("utf-8-sig", "cp932"):
        try:
            text = data.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        raise AnnotationError(f"{path}: neither UTF-8 nor Shift_JIS text")
    # strict: an unbalanced quote is an error, not the rest of the file swallowed into one cell
    reader = csv.reader(io.StringIO(text), strict=True)
    rows: list[list[str]] = []
    start = 1
    try:
        for row in reader:
            rows.append(row)
            start = reader.line_num + 1
    except csv.Error as error:
        raise AnnotationError(f"{path}:{start}: malformed CSV ({error}); an unbalanced quote starts here?") from None
    if not rows:
        return []
    header = [name.strip().lower() for name in rows[0]]
    table = []
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue  # blank line
        if len(row) > len(header):
            raise AnnotationError(f"{path}: row {number} has {len(row)} cells, the header {len(header)}")
        table.append({name: (row[i] if i < len(row) else "").strip() for i, name in enumerate(header) if name})
    return table


def _read_ptbxl_rows(rows: list[dict[str, str]], path: Path) -> dict[str, Annotation]:
    annotations: dict[str, Annotation] = {}
    for line, row in enumerate(rows, start=2):
        try:
            scp_codes = ast.literal_eval(row["scp_codes"]) if row.get("scp_codes") else {}
        except (ValueError, SyntaxError):
            raise AnnotationError(f"{path}:{line}: malformed scp_codes {row['scp_codes']!r}") from None
        fold = row.get("strat_fold", "")
        annotation = Annotation(
            patient_id=_patient_id(row.get("patient_id", "")),
            report=row.get("report") or None,
            codes={"scp": list(scp_codes)},
            split=PTBXL_FOLDS.get(int(float(fold))) if fold else None,
            ecg=f"ptb-xl:{int(float(row['ecg_id']))}" if row.get("ecg_id") else None,
        )
        for column in ("filename_hr", "filename_lr"):
            if row.get(column):
                annotations[record_key(row[column])] = annotation
    return annotations


def _read_sidecar_rows(rows: list[dict[str, str]], path: Path, columns: set[str]) -> dict[str, Annotation]:
    record_column = next(c for c in _RECORD_COLUMNS if c in columns)
    findings_column = next((c for c in _FINDINGS_COLUMNS if c in columns), None)
    annotations: dict[str, Annotation] = {}
    for line, row in enumerate(rows, start=2):
        if not row.get(record_column):
            raise AnnotationError(f"{path}:{line}: empty {record_column} cell")
        split = row.get("split", "").lower() or None
        if split is not None and split not in SPLITS:
            raise AnnotationError(f"{path}:{line}: split {split!r} is not one of {', '.join(SPLITS)}")
        terms = [t.strip() for t in _FINDING_SEPARATORS.split(row.get(findings_column, "") if findings_column else "")]
        annotation = Annotation(
            patient_id=_patient_id(next((row[c] for c in _PATIENT_COLUMNS if row.get(c)), "")),
            report=next((row[c] for c in _REPORT_COLUMNS if row.get(c)), None),
            finding_terms=[t for t in terms if t],
            split=split,
            findings_from_report=findings_column is None,
            ecg=row.get("ecg") or None,
        )
        key = record_key(row[record_column])
        if key in annotations:
            raise AnnotationError(f"{path}:{line}: record {key} appears twice")
        annotations[key] = annotation
    return annotations


def _patient_id(value: str) -> str | None:
    value = value.strip()
    if not value or value.lower() == "nan":
        return None
    # PTB-XL exports write integer ids as floats ("15709.0"): one patient, one id.
    return value[:-2] if re.fullmatch(r"\d+\.0", value) else value
