"""Every command with bad arguments, damaged inputs or unusable outputs: a non-zero exit and one
``error:`` line (or the usage error of the option parser), never a traceback without ``--debug``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ecgtool.ingest import IngestOptions, ingest
from ecgtool.store import Store
from lm_fixtures import small_labelled_store

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "ptb-xl" / "00299_hr.hea"


def _cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ecgtool.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "COLUMNS": "200"}, timeout=300)


def _assert_one_line_error(done: subprocess.CompletedProcess, *fragments: str) -> None:
    assert done.returncode != 0, done.stdout[-2000:]
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    usage = "Usage:" in done.stderr and done.returncode == 2
    assert usage or len(errors) == 1, done.stderr[-3000:]
    for fragment in fragments:
        assert fragment in done.stderr, (fragment, done.stderr[-3000:])


@pytest.fixture(scope="module")
def small_store(tmp_path_factory, shared_data) -> Path:
    """Eight PTB-XL records (train, val and test) with a tiny LM's text cache."""
    store, _ = small_labelled_store(tmp_path_factory.mktemp("cli-errors"), shared_data)
    return store


@pytest.mark.parametrize("args, fragments", [
    (["predict", EXAMPLE, "--top", "0"], ["--top"]),
    (["predict", EXAMPLE, "--device", "tpu"], ["--device tpu: expected auto, cpu, cuda or cuda:N"]),
    (["predict", EXAMPLE, "--batch-size", "-3"], ["--batch-size"]),
    (["ingest", EXAMPLE, "--out", "x", "--workers", "-1"], ["--workers"]),
    (["train", "--store", "x", "--out", "y", "--epochs", "0"], ["--epochs"]),
    (["train", "--store", "x", "--out", "y", "--label-prompt-prob", "1.5"], ["--label-prompt-prob"]),
    (["bench", "--store", "x", "--device", "cuda:7"], ["--device cuda:7"]),
])
def test_nonsensical_values_are_refused_by_name(args, fragments):
    _assert_one_line_error(_cli(*args), *fragments)


def test_unusable_output_paths_name_the_path(tmp_path):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    _assert_one_line_error(_cli("predict", EXAMPLE, "--plot", tmp_path / "missing" / "x.png"), str(tmp_path / "missing"))
    _assert_one_line_error(_cli("predict", EXAMPLE, "--plot", tmp_path), str(tmp_path))
    _assert_one_line_error(_cli("predict", EXAMPLE.parent, "--out", a_file / "x.csv"), str(a_file))
    _assert_one_line_error(_cli("ingest", EXAMPLE.parent, "--out", a_file), str(a_file))


def test_binary_list_file_is_named(tmp_path):
    listing = tmp_path / "records.txt"
    listing.write_bytes(bytes(range(256)) * 4)
    done = _cli("predict", listing, "--out", tmp_path / "scores.csv")
    _assert_one_line_error(done, str(listing))


def test_damaged_checkpoints_are_named(small_store, tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "best.pt").write_bytes(b"PK\x03\x04" + os.urandom(500))
    done = _cli("export", "--run", run, "--text-cache", small_store / "text-cache", "--out", tmp_path / "bundle")
    _assert_one_line_error(done, str(run / "checkpoints" / "best.pt"), "not a readable checkpoint")
    shutil.copy(run / "checkpoints" / "best.pt", run / "checkpoints" / "last.pt")
    done = _cli("train", "--store", small_store, "--out", run, "--resume", "--epochs", "1", "--batch-size", "2")
    _assert_one_line_error(done, str(run / "checkpoints" / "last.pt"), "not a readable checkpoint")


def test_resume_without_a_checkpoint_starts_fresh_with_a_note(small_store, tmp_path):
    done = _cli("train", "--store", small_store, "--out", tmp_path / "run", "--resume", "--epochs", "1",
                "--batch-size", "2", "--max-records", "4", "--device", "cpu")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "no checkpoint to resume from" in done.stderr and "starting a new run" in done.stderr
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()


def test_damaged_stores_are_named(small_store, tmp_path):
    garbage = tmp_path / "garbage"
    shutil.copytree(small_store, garbage)
    (garbage / "manifest.json").write_text("{ not json")
    _assert_one_line_error(_cli("bench", "--store", garbage), str(garbage / "manifest.json"))
    _assert_one_line_error(_cli("train", "--store", garbage, "--out", tmp_path / "r1"), str(garbage / "manifest.json"))
    cut = tmp_path / "cut"
    shutil.copytree(small_store, cut)
    shard = sorted(cut.glob("test-*.h5"))[0]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 3])
    _assert_one_line_error(_cli("bench", "--store", cut), str(shard))


def test_bench_on_a_split_without_labelled_records(small_store, tmp_path, shared_data):
    unlabelled = tmp_path / "unlabelled"
    ingest([REPO / "examples" / "ptb-xl"], unlabelled, options=IngestOptions(workers=1))  # no metadata: no findings
    split = next(s for s, c in Store(unlabelled).counts().items() if c["records"])
    _assert_one_line_error(_cli("bench", "--store", unlabelled, "--split", split), "no record with a finding")


def test_empty_input_folder_says_no_records_found(tmp_path):
    (tmp_path / "empty").mkdir()
    _assert_one_line_error(_cli("ingest", tmp_path / "empty", "--out", tmp_path / "store"), "no records found")


# --- damaged stores and bundles are refused, not used as if whole -----------------------------

def _rewrite_manifest_checksums(store: Path) -> None:
    """As if an older or faulty ingest had written the shards as they are now."""
    import json

    from ecgtool.files import file_sha256

    manifest = json.loads((store / "manifest.json").read_text())
    for shard in manifest["shards"]:
        shard["sha256"] = file_sha256(store / shard["file"])
    (store / "manifest.json").write_text(json.dumps(manifest))


def test_a_shard_swapped_for_another_splits_is_refused(small_store, tmp_path):
    swapped = tmp_path / "swapped"
    shutil.copytree(small_store, swapped)
    test_shard, val_shard = sorted(swapped.glob("test-*.h5"))[0], sorted(swapped.glob("val-*.h5"))[0]
    shutil.copy(val_shard, test_shard)
    _assert_one_line_error(_cli("bench", "--store", swapped), str(test_shard), "checksum")
    _rewrite_manifest_checksums(swapped)  # the bytes now "match": the record ids still do not
    _assert_one_line_error(_cli("bench", "--store", swapped), str(test_shard), "other records than the manifest says")


def test_nan_samples_stop_training_naming_the_step_and_records(small_store, tmp_path):
    import h5py

    poisoned = tmp_path / "poisoned"
    shutil.copytree(small_store, poisoned)
    for shard in sorted(poisoned.glob("train-*.h5")):
        with h5py.File(shard, "r+") as f:
            signal = f["signal"][()]
            signal[:, 0, 100] = float("nan")
            f["signal"][...] = signal
    _rewrite_manifest_checksums(poisoned)
    done = _cli("train", "--store", poisoned, "--out", tmp_path / "run", "--epochs", "1", "--batch-size", "2",
                "--max-records", "4", "--device", "cpu")
    _assert_one_line_error(done, "loss is nan at epoch 1, step 1", "records ")
    assert not (tmp_path / "run" / "bundle").exists()


def test_damaged_bundles_are_refused(tmp_path):
    import json

    from safetensors.torch import load_file, save_file

    from ecgtool.bundle import DEFAULT_BUNDLE

    cut = tmp_path / "cut"
    shutil.copytree(DEFAULT_BUNDLE, cut)
    text = load_file(str(cut / "text.safetensors"))
    text["label/ja"] = text["label/ja"][:50].contiguous()
    save_file(text, str(cut / "text.safetensors"))
    _assert_one_line_error(_cli("predict", EXAMPLE, "--model", cut), str(cut / "text.safetensors"), "checksum")
    description = json.loads((cut / "bundle.json").read_text())
    description.pop("files")  # as an old bundle, without recorded checksums: the shapes still tell
    (cut / "bundle.json").write_text(json.dumps(description))
    _assert_one_line_error(_cli("predict", EXAMPLE, "--model", cut), "label/ja holds (50,", "expected 98")
    (cut / "model.safetensors").write_bytes((cut / "model.safetensors").read_bytes()[:1000])
    _assert_one_line_error(_cli("predict", EXAMPLE, "--model", cut), str(cut / "model.safetensors"))
