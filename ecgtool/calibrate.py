"""``ecgtool calibrate``: fit a bundle's calibration on a store's val split and write it into
the bundle; and the export-then-calibrate sequence that ``train`` and ``ecgtool export`` end with.

The fitting rules are ``ecgtool.calibration``'s; the file and its checks ``ecgtool.calibration_file``'s.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from ecgtool.bundle import BUNDLE_JSON, READING_SCORE, reading_scores, export_bundle, load_bundle, record_calibration, weight_checksums
from ecgtool.calibration import (
    CALIBRATION_FORMAT_VERSION,
    ISOTONIC_MIN,
    MIN_F1,
    MIN_POSITIVES,
    PRESENT_PROBABILITY,
    RULES,
    fit_all,
)
from ecgtool.calibration_file import CalibrationError, write_calibration_file
from ecgtool.combined_calibration import METHOD as COMBINED_METHOD
from ecgtool.combined_calibration import fit_all_combined
from ecgtool.output_lock import writes_output
from ecgtool.registry import Registry
from ecgtool.split_embeddings import embed_split
from ecgtool.split_measurements import measure_split
from ecgtool.store import MANIFEST, Store

NEVER_CALIBRATE_ON = ("test",)


def calibrate_bundle(bundle_dir: str | Path, store: str | Path, split: str = "val",
                     min_positives: int = MIN_POSITIVES, isotonic_min: int = ISOTONIC_MIN,
                     rule: str = "max_f1", target_sensitivity: float | None = None, min_f1: float = MIN_F1,
                     device: torch.device = torch.device("cpu"), force: bool = False) -> dict:
    """Fit every finding's calibration on ``split`` of ``store`` and write it into the bundle
    (one writer at a time: the bundle directory is locked while it is written).

    A calibration that calibrates fewer findings than the one the bundle carries (a small val
    split) is refused, naming what would be lost, unless ``force``.

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
                             min_f1, device, force)


@writes_output("bundle_dir", is_directory=True)
def _calibrate_locked(bundle_dir: Path, store: Store, split: str, min_positives: int, isotonic_min: int,
                      rule: str, target_sensitivity: float | None, min_f1: float, device: torch.device,
                      force: bool = False) -> dict:
    if split in NEVER_CALIBRATE_ON:
        raise CalibrationError(f"{store.directory}: calibration is never fitted on the {split} split "
                               "(it is where calibration is measured); use --split val")
    bundle = load_bundle(bundle_dir, with_calibration=False).to(device)
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
    scores, _ = reading_scores(bundle, torch.from_numpy(embeddings).to(device))
    calibrations = fit_all(bundle.findings, scores, findings, min_positives=min_positives, isotonic_min=isotonic_min,
                           rule=rule, target_sensitivity=target_sensitivity, min_f1=min_f1)
    # The findings a measurement supports are also fitted on the model's score and the measurement
    # together (ecgtool.combined_calibration): predict reads a measured record with these.
    measured = measure_split(store, split, keep=labelled)
    measurements = [measured[i] for i in np.flatnonzero(labelled)]
    combined = fit_all_combined(bundle.findings, scores, findings, measurements, min_positives=min_positives,
                                rule=rule, target_sensitivity=target_sensitivity, min_f1=min_f1)
    entry = {
        "format_version": CALIBRATION_FORMAT_VERSION,
        "fitted_on": {"store": store.directory.name, "split": split, "records": int(labelled.sum()),
                      "records_without_findings_left_out": int((~labelled).sum()),
                      "registry_hash": store.registry_hash,
                      "record_ids_sha256": hashlib.sha256("\n".join(np.asarray(record_ids)[labelled]).encode()).hexdigest()},
        "weights": fingerprint,
        "feature": READING_SCORE,
        "languages": list(bundle.description["languages"]),
        "rules": {"min_positives": min_positives, "isotonic_min": isotonic_min,
                  "methods": "platt below isotonic_min positives or negatives, isotonic from there",
                  "operating_point": {"probability": f"probability>={PRESENT_PROBABILITY:g}", "max_f1": "max_f1",
                                      "sensitivity": f"sensitivity>={target_sensitivity}"}[rule],
                  "min_f1": min_f1},
        "calibrated_findings": sum(c.calibrated for c in calibrations),
        "findings_with_operating_point": sum(c.operating_point is not None for c in calibrations),
        "combined": {"method": COMBINED_METHOD, "fitted": [c.finding for c in combined if c.fitted],
                     "with_operating_point": [c.finding for c in combined if c.operating_point is not None]},
    }
    if not force:
        _refuse_losing_findings(bundle_dir, bundle.description.get("calibration"), calibrations)
    record_calibration(bundle_dir, *write_calibration_file(bundle_dir, entry, calibrations, combined), entry)
    return entry


def _refuse_losing_findings(bundle_dir: Path, previous: dict | None, calibrations) -> None:
    """One line naming what a new calibration would drop, when it calibrates fewer findings than
    the bundle's current one (whose count ``bundle.json`` records; per language before format 2)."""
    if not previous:
        return
    counts = previous.get("calibrated_findings")
    before = max(counts.values()) if isinstance(counts, dict) else int(counts or 0)
    after = sum(c.calibrated for c in calibrations)
    if after >= before:
        return
    lost = ""
    try:
        rows = json.loads((bundle_dir / previous["file"]).read_text(encoding="utf-8")).get("findings") or []
        now = {c.finding for c in calibrations if c.calibrated}
        names = [row["finding"] for row in rows if row.get("method") and row["finding"] not in now]
        lost = f" (no longer calibrated: {', '.join(names[:8])}{f' and {len(names) - 8} more' if len(names) > 8 else ''})" if names else ""
    except (OSError, ValueError, KeyError, TypeError):
        pass
    raise CalibrationError(f"{bundle_dir}: the new calibration calibrates {after} findings, the bundle's current one "
                           f"{before}{lost}: kept the current one; pass --force to replace it anyway")


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


class CalibratedExport(NamedTuple):
    bundle_dir: Path
    calibration: dict | None  # the calibration entry of bundle.json; None: not calibrated (a note said why)
    store: Path | None  # the store whose val split it was fitted on


def export_calibrated_bundle(checkpoint: str | Path, text_cache: str | Path, out_dir: str | Path,
                             calibrate_on: str | Path | None = None, registry: Registry | None = None,
                             dtype: torch.dtype = torch.float16, device: torch.device = torch.device("cpu"),
                             on_note=None) -> CalibratedExport:
    """Export a bundle from a training checkpoint, then calibrate it on the val split of
    ``calibrate_on`` (default: the store the run was trained on, when it is still there) with the
    default rules, or say why not: how ``train`` and ``ecgtool export`` end.
    """
    out_dir = Path(out_dir)
    export_bundle(checkpoint, text_cache, out_dir, registry, dtype)
    store = Path(calibrate_on) if calibrate_on is not None else _training_store(out_dir)
    if calibrate_on is None and not (store / MANIFEST).is_file():
        (on_note or (lambda text: None))(f"the run's store {store} is not here: bundle not calibrated "
                                         "(pass --calibrate-store S, or run `ecgtool calibrate`)")
        return CalibratedExport(out_dir, None, None)
    return CalibratedExport(out_dir, calibrate_if_possible(out_dir, Store(store), device, on_note), store)


def _training_store(bundle_dir: Path) -> Path:
    recorded = load_bundle(bundle_dir).description["training"].get("store")
    return Path(recorded.get("directory", "") if isinstance(recorded, dict) else (recorded or ""))
