"""Calibration carried by a bundle: fitted on a store's val split, written into the bundle, read
back with the checks that it belongs to these weights.

Layout: ``calibration-<sha12>.json`` in the bundle directory (the name carries the start of its
own checksum), and a ``calibration`` entry in ``bundle.json`` naming it with its full sha256, the
weights' checksums it was fitted for, the store and split, and the rules. A new calibration is
written beside the old one, then ``bundle.json`` is replaced in one rename, then the old file is
removed: an interruption leaves either the old calibration or the new one, never a mixture.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ecgtool.bundle import weight_checksums
from ecgtool.calibration import (
    CALIBRATION_FORMAT_VERSION,
    ISOTONIC_MIN,
    MIN_F1,
    MIN_POSITIVES,
    PRESENT_PROBABILITY,
    RULES,
    FindingCalibration,
    fit_all,
)
from ecgtool.errors import EcgToolError
from ecgtool.output_lock import writes_output
from ecgtool.files import json_safe, write_bytes_atomic, write_json_atomic
from ecgtool.store import Store

BUNDLE_JSON = "bundle.json"
NEVER_CALIBRATE_ON = ("test",)


class CalibrationError(EcgToolError):
    """A calibration that cannot be fitted, written or trusted; the message names the file."""


@dataclass(frozen=True)
class BundleCalibration:
    """A bundle's per-finding calibrations, per language, in the bundle's finding order."""

    languages: dict[str, list[FindingCalibration]]
    summary: dict

    def for_language(self, lang: str) -> list[FindingCalibration] | None:
        return self.languages.get(lang)


def calibrate_bundle(bundle_dir: str | Path, store: str | Path, split: str = "val",
                     min_positives: int = MIN_POSITIVES, isotonic_min: int = ISOTONIC_MIN,
                     rule: str = "max_f1", target_sensitivity: float | None = None, min_f1: float = MIN_F1,
                     device: torch.device = torch.device("cpu")) -> dict:
    """Fit every finding's calibration on ``split`` of ``store`` and write it into the bundle
    (one writer at a time: the bundle directory is locked while it is written).

    Returns the ``calibration`` entry written to ``bundle.json``.

    Raises
    ------
    CalibrationError
        The split is a test split or holds no labelled record.
    """
    bundle_dir = Path(bundle_dir)
    if not (bundle_dir / BUNDLE_JSON).is_file():
        raise CalibrationError(f"{bundle_dir}: not an ecgtool model bundle (no {BUNDLE_JSON})")
    if rule not in RULES:
        raise CalibrationError(f"operating point rule {rule!r}: expected one of {', '.join(RULES)}")
    if (rule == "sensitivity") != (target_sensitivity is not None):
        raise CalibrationError("a target sensitivity goes with the sensitivity rule, and only with it")
    if target_sensitivity is not None and not 0.0 < target_sensitivity <= 1.0:
        raise CalibrationError(f"target sensitivity {target_sensitivity:g}: expected a fraction in (0, 1]")
    return _calibrate_locked(bundle_dir, Store(store), split, min_positives, isotonic_min, rule, target_sensitivity,
                             min_f1, device)


@writes_output("bundle_dir", is_directory=True)
def _calibrate_locked(bundle_dir: Path, store: Store, split: str, min_positives: int, isotonic_min: int,
                      rule: str, target_sensitivity: float | None, min_f1: float, device: torch.device) -> dict:
    from ecgtool.bundle import bundle_scores, load_bundle
    from ecgtool.evaluate import embed_split

    if split in NEVER_CALIBRATE_ON:
        raise CalibrationError(f"{store.directory}: calibration is never fitted on the {split} split "
                               "(it is where calibration is measured); use --split val")
    bundle = load_bundle(bundle_dir).to(device)
    fingerprint = weight_checksums(bundle_dir, bundle.description)
    if store.counts().get(split, {}).get("records", 0) == 0:
        raise CalibrationError(f"{store.directory}: the {split} split is empty (nothing to calibrate on)")
    store.verify(split)
    embeddings, findings, record_ids, _ = embed_split(bundle, store, split, device=device)
    labelled = findings.any(axis=1)
    if not labelled.any():
        raise CalibrationError(f"{store.directory}: no record of the {split} split has a finding (ingest it with labels)")
    # Records without any finding carry no label at all (no report): they are not negatives.
    embeddings, findings = embeddings[labelled], findings[labelled]
    languages = {}
    for lang in bundle.description["languages"]:
        scores, _ = bundle_scores(bundle, torch.from_numpy(embeddings).to(device), lang)
        languages[lang] = fit_all(bundle.findings, scores, findings, min_positives=min_positives,
                                  isotonic_min=isotonic_min, rule=rule, target_sensitivity=target_sensitivity,
                                  min_f1=min_f1)
    entry = {
        "format_version": CALIBRATION_FORMAT_VERSION,
        "fitted_on": {"store": store.directory.name, "split": split, "records": int(labelled.sum()),
                      "records_without_findings_left_out": int((~labelled).sum()),
                      "registry_hash": store.registry_hash,
                      "record_ids_sha256": hashlib.sha256("\n".join(np.asarray(record_ids)[labelled]).encode()).hexdigest()},
        "weights": fingerprint,
        "feature": "cosine similarity of the ECG embedding to the finding's label prompt",
        "rules": {"min_positives": min_positives, "isotonic_min": isotonic_min,
                  "methods": "platt below isotonic_min positives or negatives, isotonic from there",
                  "operating_point": {"probability": f"probability>={PRESENT_PROBABILITY:g}", "max_f1": "max_f1",
                                      "sensitivity": f"sensitivity>={target_sensitivity}"}[rule],
                  "min_f1": min_f1},
        "calibrated_findings": {lang: sum(c.calibrated for c in cals) for lang, cals in languages.items()},
        "findings_with_operating_point": {lang: sum(c.operating_point is not None for c in cals)
                                          for lang, cals in languages.items()},
    }
    write_calibration(bundle_dir, entry, languages)
    return entry


def calibrate_if_possible(bundle_dir: Path, store: Store, device: torch.device = torch.device("cpu"),
                          on_note=None) -> dict | None:
    """Calibrate a freshly exported bundle on the store's val split with the default rules, or
    say why not (no labelled val record): what ``train`` and ``export`` do after exporting."""
    note = on_note or (lambda text: None)
    if not store.counts().get("val", {}).get("records", 0):
        note(f"bundle not calibrated: {store.directory}: no val split to calibrate on "
             "(run `ecgtool calibrate` with another store)")
        return None
    try:
        return calibrate_bundle(bundle_dir, store.directory, "val", device=device)
    except CalibrationError as error:
        note(f"bundle not calibrated: {error}")
        return None


def write_calibration(bundle_dir: Path, entry: dict, languages: dict[str, list[FindingCalibration]]) -> None:
    """Write the calibration file, point ``bundle.json`` at it in one rename, drop the old file."""
    payload = {"format": "ecgtool-calibration", **entry,
               "languages": {lang: [json_safe(c.as_dict()) for c in cals] for lang, cals in languages.items()}}
    data = json.dumps(payload, ensure_ascii=False, indent=1, allow_nan=False).encode("utf-8")
    sha = hashlib.sha256(data).hexdigest()
    name = f"calibration-{sha[:12]}.json"
    write_bytes_atomic(bundle_dir / name, data, fsync=True)
    description = json.loads((bundle_dir / BUNDLE_JSON).read_text(encoding="utf-8"))
    previous = (description.get("calibration") or {}).get("file")
    description["calibration"] = {"file": name, "sha256": sha, **{k: v for k, v in entry.items()}}
    write_json_atomic(bundle_dir / BUNDLE_JSON, description)
    if previous and previous != name and (bundle_dir / previous).exists():
        (bundle_dir / previous).unlink()


def load_calibration(bundle_dir: Path, description: dict) -> BundleCalibration | None:
    """The bundle's calibration, checked against its checksum and the weights it was fitted for;
    None when the bundle carries none."""
    entry = description.get("calibration")
    if not entry:
        return None
    path = bundle_dir / entry["file"]
    if not path.is_file():
        raise CalibrationError(f"{path}: missing from the bundle ({BUNDLE_JSON} names it)")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise CalibrationError(f"{path}: does not match the checksum in {BUNDLE_JSON} (damaged or replaced)")
    if entry.get("weights") != weight_checksums(bundle_dir, description):
        raise CalibrationError(f"{path}: fitted for other weights than this bundle's (re-run ecgtool calibrate)")
    payload = json.loads(data.decode("utf-8"))
    if payload.get("format_version") != CALIBRATION_FORMAT_VERSION:
        raise CalibrationError(f"{path}: calibration format {payload.get('format_version')} is not supported")
    languages = {}
    for lang, rows in payload["languages"].items():
        if [row["finding"] for row in rows] != description["findings"]:
            raise CalibrationError(f"{path}: its {lang} findings are not the bundle's findings in the bundle's order")
        try:
            languages[lang] = [FindingCalibration.from_dict(_nan_for_none(row)) for row in rows]
        except (KeyError, TypeError, ValueError) as error:
            raise CalibrationError(f"{path}: malformed calibration ({error})") from None
    return BundleCalibration(languages, {k: v for k, v in entry.items() if k not in ("file", "sha256")})


def _nan_for_none(row: dict) -> dict:
    point = row.get("operating_point")
    if point:
        row = {**row, "operating_point": {k: (float("nan") if v is None else v) for k, v in point.items()}}
    return row
