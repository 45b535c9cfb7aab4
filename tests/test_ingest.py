"""``ingest`` end to end on the real public records: splits, labels, skip list, precision, resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ecgtool.ingest import IngestError, IngestOptions, ingest
from ecgtool.io.wfdb import read_wfdb
from ecgtool.registry import load_registry
from ecgtool.signal import canonicalize
from ecgtool.splits import PTBXL_FOLDS, patients_in_several_splits
from ecgtool.store import Store, read_shard


def _all_rows(store: Store):
    rows = []
    for split in ("train", "val", "test"):
        for shard in store.shards(split, with_signal=False):
            rows.extend((split, r, p, f) for r, p, f in zip(shard.record_id, shard.patient_id, shard.findings))
    return rows


@pytest.fixture(scope="module")
def ptbxl_store(tmp_path_factory, shared_data):
    out = tmp_path_factory.mktemp("ptbxl") / "store"
    ingest(
        [shared_data / "ptb-xl" / "records500"],
        out,
        metadata=[shared_data / "ptb-xl" / "ptbxl_database.csv"],
        options=IngestOptions(workers=2, shard_size=128),
    )
    return Store(out)


def test_ptbxl_splits_follow_strat_fold_and_are_patient_disjoint(ptbxl_store, shared_data):
    import csv

    fold_of = {}
    with open(shared_data / "ptb-xl" / "ptbxl_database.csv", encoding="utf-8") as table:
        for row in csv.DictReader(table):
            fold_of[Path(row["filename_hr"]).name] = int(row["strat_fold"])
    rows = _all_rows(ptbxl_store)
    assert len(rows) == 550 and not ptbxl_store.manifest["skipped"]
    for split, record_id, _, _ in rows:
        assert split == PTBXL_FOLDS[fold_of[record_id]], record_id
    assert patients_in_several_splits([(p, s) for s, _, p, _ in rows]) == {}
    counts = ptbxl_store.counts()
    assert sum(c["records"] for c in counts.values()) == 550
    assert counts["test"]["records"] == sum(1 for s, *_ in rows if s == "test") > 0


def test_ptbxl_findings_come_from_scp_codes(ptbxl_store):
    registry = load_registry()
    by_id = {r: registry.ids_from_multi_hot(f) for _, r, _, f in _all_rows(ptbxl_store)}
    # 00001_hr: NORM, LVOLT, SR.
    expected = {f for code in ("NORM", "LVOLT", "SR") for f in registry.codes_to_findings("scp", code)}
    assert set(by_id["00001_hr"]) == expected and expected
    labelled = sum(1 for f in by_id.values() if f)
    assert ptbxl_store.counts()["train"]["labelled"] + ptbxl_store.counts()["val"]["labelled"] + ptbxl_store.counts()["test"]["labelled"] == labelled
    shard = read_shard(ptbxl_store.shard_paths("train")[0], with_signal=False)
    index = next(i for i, f in enumerate(shard.findings) if f.any())
    ids = registry.ids_from_multi_hot(shard.findings[index])
    assert shard.prompt_ja[index] == registry.prompt(ids, "ja")
    assert shard.prompt_en[index].startswith("This ECG shows ")


def test_stored_float16_error_is_within_the_stated_bound(ptbxl_store, ptbxl500):
    bound = ptbxl_store.contract["stored_dtype_max_relative_error"]
    assert bound == 2.0**-11
    checked = 0
    for path in ptbxl_store.shard_paths():
        shard = read_shard(path)
        for record_id, source, stored in list(zip(shard.record_id, shard.source, shard.signal))[:20]:
            original = canonicalize(read_wfdb(ptbxl500.parent / source)).signal
            error = np.abs(stored.astype(np.float32) - original)
            assert (error <= bound * np.abs(original) + 2.0**-24).all(), record_id
            checked += 1
    assert checked >= 60


def test_manifest_carries_contract_and_registry(ptbxl_store):
    manifest = ptbxl_store.manifest
    registry = load_registry()
    assert manifest["registry"]["hash"] == registry.hash
    assert manifest["registry"]["findings"] == list(registry.ids())
    contract = manifest["contract"]
    assert contract["sampling_rate_hz"] == 500 and contract["n_samples"] == 5000 and contract["units"] == "mV"
    assert contract["lead_order"] == ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    assert contract["stored_dtype"] == "float16" and contract["registry_hash"] == registry.hash


def test_challenge_tree_ingests_with_an_honest_skip_list(tmp_path, shared_data):
    result = ingest([shared_data / "challenge"], tmp_path / "store", options=IngestOptions(workers=2))
    manifest = result.manifest
    reasons = {s["path"]: s["reason"] for s in manifest["skipped"]}
    assert "duplicate record id A0001 (already taken from challenge/cinc2020-cpsc2018/A0001.hea)" == reasons[
        "challenge/cinc2020-unlabeled/A0001.hea"
    ]
    assert "flat lead" in reasons["challenge/cinc2020-unlabeled/S0001.hea"]
    assert "flat lead(s) V2, V4, V6" in reasons["challenge/cinc2021/JS20004.hea"]
    assert "without a WFDB header" in reasons["challenge/cpsc2018-original-mat/A1980.mat"]
    stored = {r for _, r, _, _ in _all_rows(Store(tmp_path / "store"))}
    assert {"E00009", "E00666", "E07500", "HR06000", "JS00001", "A0150"} <= stored
    n_headers = len(list((shared_data / "challenge").rglob("*.hea")))
    n_orphans = len(list((shared_data / "challenge" / "cpsc2018-original-mat").glob("*.mat")))
    assert len(stored) + len(manifest["skipped"]) == n_headers + n_orphans
    assert "records have no patient id" in " ".join(manifest["warnings"])
    # CPSC text labels and SNOMED codes reach the findings.
    registry = load_registry()
    findings = {r: registry.ids_from_multi_hot(f) for _, r, _, f in _all_rows(Store(tmp_path / "store"))}
    assert set(registry.codes_to_findings("cpsc", "RBBB")) <= set(findings["A0001"])


@pytest.fixture
def damaged_tree(tmp_path, ptbxl500):
    tree = tmp_path / "records"
    for folder in ("a", "b"):
        (tree / folder).mkdir(parents=True)
    names = ["00001_hr", "00002_hr", "00003_hr", "00004_hr", "00005_hr", "00006_hr"]
    for name in names:
        for suffix in (".hea", ".dat"):
            shutil.copy(ptbxl500 / "00000" / f"{name}{suffix}", tree / "a" / f"{name}{suffix}")
    dat = tree / "a" / "00002_hr.dat"
    dat.write_bytes(dat.read_bytes()[:50000])  # truncated
    header = tree / "a" / "00003_hr.hea"
    header.write_text(header.read_text().replace("12 500 5000", "12 500 6000", 1))  # lies about its length
    (tree / "a" / "00004_hr.hea").write_bytes(b"\xff\xfe\x00garbage")  # unreadable
    for suffix in (".hea", ".dat"):
        shutil.copy(ptbxl500 / "00000" / f"00005_hr{suffix}", tree / "b" / f"00005_hr{suffix}")  # duplicate id
    return tree


def test_bad_records_end_in_the_skip_list_while_the_rest_goes_on(tmp_path, damaged_tree):
    result = ingest([damaged_tree], tmp_path / "store", options=IngestOptions(workers=1))
    reasons = {s["path"]: s["reason"] for s in result.manifest["skipped"]}
    assert reasons == {
        "records/a/00002_hr.hea": "truncated: header declares 5000 samples per signal, file holds 2083",
        "records/a/00003_hr.hea": "truncated: header declares 6000 samples per signal, file holds 5000",
        "records/a/00004_hr.hea": "not a WFDB header: binary content",
        "records/b/00005_hr.hea": "duplicate record id 00005_hr (already taken from records/a/00005_hr.hea)",
    }
    stored = sorted(r for _, r, _, _ in _all_rows(Store(tmp_path / "store")))
    assert stored == ["00001_hr", "00005_hr", "00006_hr"]


def test_rerun_resumes_and_other_settings_are_refused(tmp_path, damaged_tree):
    out = tmp_path / "store"
    first = ingest([damaged_tree], out, options=IngestOptions(workers=1, shard_size=2))
    again = ingest([damaged_tree], out, options=IngestOptions(workers=2, shard_size=2))
    assert first.records_converted > 0 and again.records_converted == 0 and again.shards_written == 0
    assert again.manifest["counts"] == first.manifest["counts"]
    with pytest.raises(IngestError, match="holds a store made with other settings \\(options differ\\)"):
        ingest([damaged_tree], out, options=IngestOptions(workers=1, shard_size=3))
    replaced = ingest([damaged_tree], out, options=IngestOptions(workers=1, shard_size=3), overwrite=True)
    assert replaced.manifest["counts"] == first.manifest["counts"]


def _store_snapshot(directory: Path) -> dict:
    snapshot = {}
    for path in sorted(directory.glob("*.h5")):
        shard = read_shard(path)
        snapshot[path.name] = (shard.record_id, shard.patient_id, shard.findings.tolist(), shard.signal.tobytes())
    manifest = json.loads((directory / "manifest.json").read_text())
    return {"shards": snapshot, "counts": manifest["counts"], "skipped": manifest["skipped"]}


def test_kill_minus_9_then_rerun_gives_the_uninterrupted_result(tmp_path, ptbxl500, shared_data):
    metadata = shared_data / "ptb-xl" / "ptbxl_database.csv"
    command = [sys.executable, "-m", "ecgtool.cli", "ingest", str(ptbxl500), "--metadata", str(metadata), "--shard-size", "8", "--workers", "1"]
    reference = tmp_path / "reference"
    subprocess.run([*command, "--out", str(reference)], check=True, capture_output=True)

    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen([*command, "--out", str(interrupted)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(list(interrupted.glob("*.h5"))) < 3 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    shards_at_kill = len(list(interrupted.glob("*.h5")))
    assert not (interrupted / "manifest.json").exists(), "the run finished before it could be killed"
    assert 3 <= shards_at_kill < len(list(reference.glob("*.h5")))

    resumed = subprocess.run([*command, "--out", str(interrupted)], check=True, capture_output=True, text=True)
    assert "shards written" in resumed.stdout
    assert _store_snapshot(interrupted) == _store_snapshot(reference)
    assert not list(interrupted.glob("*.tmp"))


def test_one_ecg_at_two_rates_is_stored_once_at_500_hz(tmp_path, shared_data):
    """PTB-XL publishes each ECG at 500 and 100 Hz: a folder holding both keeps the 500 Hz copy,
    and the 100 Hz one is on the skip list naming the copy kept. A sidecar's ``ecg`` column
    groups copies the same way (here: one PTB-XL record under a second name)."""
    ptbxl = shared_data / "ptb-xl"
    (tmp_path / "lr").mkdir()
    (tmp_path / "hr").mkdir()
    for suffix in (".hea", ".dat"):
        shutil.copy(ptbxl / "records100" / "00000" / f"00009_lr{suffix}", tmp_path / "lr")
        shutil.copy(ptbxl / "records500" / "00000" / f"00009_hr{suffix}", tmp_path / "hr")
        shutil.copy(ptbxl / "records500" / "00000" / f"00010_hr{suffix}", tmp_path / "hr")
    header = (tmp_path / "hr" / "00010_hr.hea").read_text().replace("00010_hr", "copy10")
    (tmp_path / "hr" / "copy10.hea").write_text(header)
    shutil.copy(tmp_path / "hr" / "00010_hr.dat", tmp_path / "hr" / "copy10.dat")
    sidecar = tmp_path / "copies.csv"
    sidecar.write_text("record,ecg\ncopy10,ptb-xl:10\n")
    result = ingest([tmp_path / "lr", tmp_path / "hr"], tmp_path / "store",
                    metadata=[ptbxl / "ptbxl_database.csv", sidecar], options=IngestOptions(workers=1))
    stored = sorted(r for _, r, _, _ in _all_rows(Store(tmp_path / "store")))
    assert stored == ["00009_hr", "00010_hr"]
    reasons = {s["record_id"]: s["reason"] for s in result.manifest["skipped"]}
    assert reasons["00009_lr"] == "another copy of ECG ptb-xl:9: kept 00009_hr (500 Hz) over this one (100 Hz)"
    assert reasons["copy10"].startswith("another copy of ECG ptb-xl:10: kept 00010_hr (500 Hz)")
