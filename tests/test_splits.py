"""Patient-level splits: deterministic, disjoint, folds respected."""

from __future__ import annotations

import pytest

from ecgtool.annotations import load_annotations
from ecgtool.splits import SplitFractions, assign_splits, patients_in_several_splits, split_of_patient


def test_hash_split_is_deterministic_and_near_the_fractions():
    patients = [f"p{i}" for i in range(20000)]
    splits = [split_of_patient(p) for p in patients]
    assert splits == [split_of_patient(p) for p in patients]
    assert abs(splits.count("train") / len(splits) - 0.8) < 0.01
    assert abs(splits.count("test") / len(splits) - 0.1) < 0.01
    assert [split_of_patient(p, seed="other") for p in patients] != splits


def test_all_records_of_a_patient_share_a_split():
    patient_of_record = {f"r{i}": f"p{i % 97}" for i in range(2000)}
    splits, warnings = assign_splits(patient_of_record)
    assert not warnings
    assert patients_in_several_splits([(patient_of_record[r], s) for r, s in splits.items()]) == {}


def test_conflicting_folds_send_the_patient_to_the_most_held_out_split():
    splits, warnings = assign_splits({"a": "p1", "b": "p1", "c": "p2"}, {"a": "train", "b": "test", "c": "val"})
    assert splits == {"a": "test", "b": "test", "c": "val"}
    assert warnings == ["patient p1: records ask for splits ['test', 'train']; all 2 go to test"]


def test_fractions_are_validated():
    with pytest.raises(ValueError, match="sum to 1"):
        SplitFractions(0.8, 0.3, 0.1)


def test_ptbxl_strat_folds_keep_patients_disjoint(shared_data):
    annotations = load_annotations([shared_data / "ptb-xl" / "ptbxl_database.csv"])
    assert len(annotations) == 2 * 21837  # each row under its 500 Hz and its 100 Hz file name
    first = annotations["00001_hr"]
    assert first.patient_id == "15709" and first.split == "train" and first.codes["scp"] == ["NORM", "LVOLT", "SR"]
    assert annotations["00001_lr"] is first
    patient_of_record = {k: a.patient_id for k, a in annotations.items() if k.endswith("_hr")}
    requested = {k: a.split for k, a in annotations.items() if k.endswith("_hr")}
    splits, warnings = assign_splits(patient_of_record, requested)
    assert not warnings, "PTB-XL's strat_fold is patient-grouped"
    assert splits == requested
    assert patients_in_several_splits([(patient_of_record[r], s) for r, s in splits.items()]) == {}
    counts = {s: list(splits.values()).count(s) for s in ("train", "val", "test")}
    assert counts["test"] == sum(1 for a in requested.values() if a == "test") > 2000
