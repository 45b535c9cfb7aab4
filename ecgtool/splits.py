"""Patient-level train/val/test splits: no patient ever has records in two splits."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

SPLITS = ("train", "val", "test")
# PTB-XL's recommendation: strat_fold 1-8 train, 9 validation, 10 test.
PTBXL_FOLDS = {**{fold: "train" for fold in range(1, 9)}, 9: "val", 10: "test"}
# When one patient's records name different splits, the patient goes to the most held-out one.
_HOLD_OUT_RANK = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class SplitFractions:
    """Fractions of patients per split for hash-based assignment."""

    train: float = 0.8
    val: float = 0.1
    test: float = 0.1

    def __post_init__(self):
        total = self.train + self.val + self.test
        if min(self.train, self.val, self.test) < 0 or abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions must be non-negative and sum to 1, got {total:g}")


def split_of_patient(patient_id: str, fractions: SplitFractions = SplitFractions(), seed: str = "ecgtool") -> str:
    """Deterministic split of a patient: a hash of ``seed`` and the id, independent of record order."""
    digest = hashlib.sha256(f"{seed}\0{patient_id}".encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    if position < fractions.train:
        return "train"
    if position < fractions.train + fractions.val:
        return "val"
    return "test"


def assign_splits(
    patient_of_record: Mapping[str, str],
    requested_split_of_record: Mapping[str, str] | None = None,
    fractions: SplitFractions = SplitFractions(),
    seed: str = "ecgtool",
) -> tuple[dict[str, str], list[str]]:
    """Assign every record a split so that each patient's records share one.

    Parameters
    ----------
    patient_of_record : mapping
        record id → patient id.
    requested_split_of_record : mapping, optional
        record id → split asked for by the data (a fold column, a ``split`` column). Records not in
        it are placed by ``split_of_patient``.

    Returns
    -------
    splits : dict
        record id → ``"train"``, ``"val"`` or ``"test"``.
    warnings : list of str
        One line per patient whose records asked for different splits (all of them then go to the
        most held-out of those splits, so that nothing seen in training leaks into evaluation).
    """
    requested = requested_split_of_record or {}
    records_of_patient: dict[str, list[str]] = {}
    for record_id, patient_id in patient_of_record.items():
        records_of_patient.setdefault(patient_id, []).append(record_id)
    splits: dict[str, str] = {}
    warnings: list[str] = []
    for patient_id, record_ids in records_of_patient.items():
        asked = {requested[r] for r in record_ids if r in requested}
        if not asked:
            split = split_of_patient(patient_id, fractions, seed)
        else:
            split = max(asked, key=_HOLD_OUT_RANK.__getitem__)
            if len(asked) > 1:
                warnings.append(
                    f"patient {patient_id}: records ask for splits {sorted(asked)}; all {len(record_ids)} go to {split}"
                )
        for record_id in record_ids:
            splits[record_id] = split
    return splits, warnings


def patients_in_several_splits(patient_and_split: Sequence[tuple[str, str]]) -> dict[str, set[str]]:
    """The patients found in more than one split (empty when the splits are patient-disjoint)."""
    seen: dict[str, set[str]] = {}
    for patient_id, split in patient_and_split:
        seen.setdefault(patient_id, set()).add(split)
    return {patient: splits for patient, splits in seen.items() if len(splits) > 1}
