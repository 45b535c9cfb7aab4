"""The calibration file a bundle carries, read back with the checks that it belongs to the
bundle's weights.

Layout: ``calibration-<sha12>.json`` in the bundle directory (the name carries the start of its
own checksum), and a ``calibration`` entry in ``bundle.json`` naming it with its full sha256, the
weights' checksums it was fitted for, the store and split, and the rules. A new calibration is
written beside the old one, then ``bundle.json`` is replaced in one rename
(``ecgtool.bundle.record_calibration``), then the old file is removed: an interruption leaves
either the old calibration or the new one, never a mixture. ``ecgtool.calibrate`` fits it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from ecgtool.calibration import READABLE_FORMAT_VERSIONS, FindingCalibration
from ecgtool.combined_calibration import CombinedCalibration
from ecgtool.errors import EcgToolError
from ecgtool.files import json_safe, write_bytes_atomic


class CalibrationError(EcgToolError):
    """A calibration that cannot be fitted, written or trusted; the message names the file."""


@dataclass(frozen=True)
class BundleCalibration:
    """A bundle's per-finding calibrations of the reading score (``ecgtool.bundle.reading_scores``:
    one for every language), in the bundle's finding order."""

    findings: list[FindingCalibration]
    summary: dict
    # The model-and-measurement combinations of the findings a criterion supports (format 3; none
    # in a format-2 file: there the model's calibration reads every finding).
    combined: list[CombinedCalibration] = field(default_factory=list)

    def calibrated_count(self) -> int:
        return sum(c.calibrated for c in self.findings)


def write_calibration_file(bundle_dir: Path, entry: dict, findings: list[FindingCalibration],
                           combined: list[CombinedCalibration] = ()) -> tuple[str, str]:
    """Write the calibration file beside the bundle's weights; return its name and sha256 (what
    ``bundle.json``'s entry names it by)."""
    payload = {"format": "ecgtool-calibration", **entry, "findings": [json_safe(c.as_dict()) for c in findings],
               "combined": [json_safe(c.as_dict()) for c in combined]}
    data = json.dumps(payload, ensure_ascii=False, indent=1, allow_nan=False).encode("utf-8")
    sha = hashlib.sha256(data).hexdigest()
    name = f"calibration-{sha[:12]}.json"
    write_bytes_atomic(bundle_dir / name, data, fsync=True)
    return name, sha


def load_calibration(bundle_dir: Path, entry: dict, findings: list[str], weights: dict[str, str]) -> BundleCalibration:
    """The calibration ``entry`` (``bundle.json``'s) names, checked against its checksum and
    against ``weights``, the checksums of the weights it must have been fitted for."""
    path = bundle_dir / entry["file"]
    if not path.is_file():
        raise CalibrationError(f"{path}: missing from the bundle (bundle.json names it)")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise CalibrationError(f"{path}: does not match the checksum in bundle.json (damaged or replaced)")
    if entry.get("weights") != weights:
        raise CalibrationError(f"{path}: fitted for other weights than this bundle's (re-run ecgtool calibrate)")
    payload = json.loads(data.decode("utf-8"))
    if payload.get("format_version") == 1:
        raise CalibrationError(f"{path}: calibrated per output language by an earlier ecgtool (calls could differ "
                               f"between ja and en); re-run `ecgtool calibrate {bundle_dir} --store STORE`")
    if payload.get("format_version") not in READABLE_FORMAT_VERSIONS:
        raise CalibrationError(f"{path}: calibration format {payload.get('format_version')} is not supported")
    rows = payload.get("findings")
    if not isinstance(rows, list) or [row.get("finding") for row in rows] != findings:
        raise CalibrationError(f"{path}: its findings are not the bundle's findings in the bundle's order")
    combined_rows = payload.get("combined", []) if payload["format_version"] >= 3 else []
    if payload["format_version"] >= 3 and not isinstance(payload.get("combined"), list):
        raise CalibrationError(f"{path}: format 3 without its list of combined calibrations")
    named = [row.get("finding") for row in combined_rows if isinstance(row, dict)]
    if len(named) != len(combined_rows) or len(set(named)) != len(named) or not set(named) <= set(findings):
        raise CalibrationError(f"{path}: its combined calibrations name findings that are not the bundle's, or twice")
    try:
        calibrations = [FindingCalibration.from_dict(_nan_for_none(row)) for row in rows]
        combined = [CombinedCalibration.from_dict(_nan_for_none(row)) for row in combined_rows]
    except (KeyError, TypeError, ValueError) as error:
        raise CalibrationError(f"{path}: malformed calibration ({error})") from None
    return BundleCalibration(calibrations, {k: v for k, v in entry.items() if k not in ("file", "sha256")}, combined)


def _nan_for_none(row: dict) -> dict:
    point = row.get("operating_point")
    if point:
        row = {**row, "operating_point": {k: (float("nan") if v is None else v) for k, v in point.items()}}
    return row
