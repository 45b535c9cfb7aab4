"""Nothing silently wrong, round 3 (issue 21): embeddings of samples a store no longer holds, a
regression gate given something that is no baseline, a shard overwritten in place, a list file
naming one record several ways, a full disk under ``embed``, file names that are not UTF-8, a
FIFO among the records, and the weak messages. On the real example and PTB-XL records."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from ecgtool import store as store_module
from ecgtool.bench.run import BenchError, load_baseline, regressions, run_bench
from ecgtool.bundle import DEFAULT_BUNDLE, load_bundle
from ecgtool.calibrate import calibrate_bundle
from ecgtool.embeddings import default_embeddings_path, embed_store, read_embeddings
from ecgtool.ingest import IngestError, IngestOptions, ingest
from ecgtool.io.discover import find_records, read_record_list
from ecgtool.registry import load_registry
from ecgtool.search import SearchError, open_search_space
from ecgtool.signal import CanonicalOptions
from ecgtool.store import Store, StoreError
from ecgtool.text import collect_prompts

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "ptb-xl"
NAMES = ["00172_hr", "00180_hr", "00299_hr", "00318_hr"]


def _cli(*args, columns: int = 200, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ecgtool.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, "COLUMNS": str(columns)}, timeout=timeout)


def _one_line_error(done: subprocess.CompletedProcess, *fragments: str) -> str:
    assert done.returncode == 1, (done.returncode, done.stdout[-1000:], done.stderr[-2000:])
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def _copy_examples(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name in NAMES:
        for suffix in (".hea", ".dat"):
            shutil.copy(EXAMPLES / f"{name}{suffix}", folder)
    return folder


@pytest.fixture(scope="module")
def labelled_store(tmp_path_factory, shared_data) -> Path:
    """The first 60 PTB-XL 500 Hz records with their labels and folds (train, val and test)."""
    root = tmp_path_factory.mktemp("labelled")
    records = root / "records"
    records.mkdir()
    for source in sorted((shared_data / "ptb-xl" / "records500" / "00000").glob("*_hr.*"))[:120]:
        shutil.copy(source, records)
    store = root / "store"
    ingest([records], store, metadata=[shared_data / "ptb-xl" / "ptbxl_database.csv"], options=IngestOptions(workers=1))
    assert all(Store(store).counts()[split]["labelled"] for split in ("train", "val", "test"))
    return store


# --- 3. embeddings of samples the store no longer holds ------------------------------------------

def _same_ids_other_ecgs(folder: Path) -> Path:
    """The four example records under each other's ids: 00180_hr holds 00299_hr's ECG, and so on."""
    folder.mkdir()
    for name, other in zip(NAMES, NAMES[1:] + NAMES[:1]):
        (folder / f"{name}.hea").write_text((EXAMPLES / f"{other}.hea").read_text().replace(other, name))
        shutil.copy(EXAMPLES / f"{other}.dat", folder / f"{name}.dat")
    return folder


def test_records_reingested_with_other_ecgs_are_re_embedded_and_searched_right(tmp_path):
    store = tmp_path / "store"
    assert _cli("ingest", EXAMPLES, "--out", store).returncode == 0
    assert _cli("embed", "--store", store).returncode == 0
    swapped = _same_ids_other_ecgs(tmp_path / "swapped")
    done = _cli("ingest", swapped, "--out", store, "--overwrite")
    assert done.returncode == 0, done.stderr[-2000:]
    # The vectors on file are of the ECGs these ids held before: search refuses them.
    _one_line_error(_cli("search", "--store", store, "--like", EXAMPLES / "00299_hr.hea"),
                    "the vectors of 4 records were not computed from the samples", "run `ecgtool embed")
    done = _cli("embed", "--store", store)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("0 records embedded and 4 re-embedded"), done.stdout
    done = _cli("search", "--store", store, "--like", EXAMPLES / "00299_hr.hea", "--top", "1", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    assert [hit["record_id"] for hit in json.loads(done.stdout)["hits"]] == ["00180_hr"]  # holds 00299_hr's ECG now
    assert _cli("embed", "--store", store).stdout.startswith("0 records embedded, 4 already")


def test_an_embedding_file_that_does_not_say_which_samples_it_holds_is_re_embedded(tmp_path):
    ingest([EXAMPLES], tmp_path / "store", options=IngestOptions(workers=1))
    store, bundle = Store(tmp_path / "store"), load_bundle(DEFAULT_BUNDLE)
    path = embed_store(store, bundle).path
    with h5py.File(path, "r+") as handle:  # as format 1 wrote it
        del handle["shard_sha256"]
        handle.attrs["format_version"] = 1
    assert not read_embeddings(path, bundle).shard_sha256.any()
    with pytest.raises(SearchError, match="the vectors of 4 records were not computed from the samples"):
        open_search_space(store, bundle)
    result = embed_store(store, bundle)
    assert (result.embedded, result.reembedded, result.already) == (0, 4, 0)
    assert len(open_search_space(store, bundle)) == 4
    with h5py.File(path, "r") as handle:
        assert handle.attrs["format_version"] == 2


# --- 4. a baseline that is no baseline ---------------------------------------------------------

@pytest.mark.parametrize("content, why", [
    ("null", "a JSON null"), ("[]", "a JSON array"), ("0", "a JSON number (0)"), ("false", "a JSON boolean (false)"),
    ('"x"', "a JSON string"), ("{}", "no headline figures"), ('{"headline": null}', "no headline figures"),
    ('{"headline": {}}', "no headline figures"), ('{"headline": {"per_label/ja/top1": null}}', "every headline figure is null"),
    ('{"headline": {"per_label/ja/top1": "35"}}', "headline figure per_label/ja/top1 is a JSON string"),
])
def test_a_baseline_that_is_no_baseline_is_refused_naming_the_file(tmp_path, content, why):
    path = tmp_path / "baseline.json"
    path.write_text(content)
    with pytest.raises(BenchError, match=f"^{re.escape(str(path))}: .*{re.escape(why)}"):
        load_baseline(path)


def test_the_gate_names_a_baseline_that_shares_no_figure():
    with pytest.raises(BenchError, match=r"^other\.json: shares no headline figure"):
        regressions({"headline": {"per_label/en/top1": 30.0}}, {"headline": {"per_label/ja/top1": 30.0}}, 2.0, "other.json")
    with pytest.raises(BenchError, match=r"^the baseline: not a bench baseline \(a JSON null"):
        regressions({"headline": {"per_label/en/top1": 30.0}}, None, 2.0)


def test_bench_with_a_null_baseline_fails_in_one_line(labelled_store, tmp_path):
    baseline = tmp_path / "empty.json"
    baseline.write_text("null\n")
    _one_line_error(_cli("bench", "--store", labelled_store, "--baseline", baseline), f"{baseline}: not a bench baseline")


# --- 6. a shard overwritten in place -----------------------------------------------------------

def _overwrite_first_record(shard: Path) -> None:
    """One record's samples set to a constant: still a valid shard, with the same record ids."""
    with h5py.File(shard, "r+") as handle:
        handle["signal"][0] = np.full(handle["signal"].shape[1:], 0.5, dtype=handle["signal"].dtype)


def test_a_shard_overwritten_in_place_is_refused_by_every_reader(labelled_store, tmp_path, monkeypatch):
    store_dir = tmp_path / "store"
    shutil.copytree(labelled_store, store_dir)
    bundle = load_bundle(DEFAULT_BUNDLE)
    embed_store(Store(store_dir), bundle)  # before: search has every vector it needs
    for shard in Store(store_dir).shard_paths():
        _overwrite_first_record(shard)
    checksum = "does not match the manifest's checksum"
    with pytest.raises(StoreError, match=checksum):
        embed_store(Store(store_dir), bundle, tmp_path / "new.h5")
    assert not (tmp_path / "new.h5").exists()
    with pytest.raises(StoreError, match=checksum):
        open_search_space(Store(store_dir), bundle)
    with pytest.raises(StoreError, match=checksum):
        run_bench(bundle, Store(store_dir), load_registry())
    bundle_copy = tmp_path / "bundle"
    shutil.copytree(DEFAULT_BUNDLE, bundle_copy)
    with pytest.raises(StoreError, match=checksum):
        calibrate_bundle(bundle_copy, store_dir, force=True)
    with pytest.raises(StoreError, match=checksum):
        collect_prompts(load_registry(), Store(store_dir))  # embed-labels --store
    _one_line_error(_cli("search", "--store", store_dir, "--finding", "AF"), "-00000.h5: " + checksum)
    _one_line_error(_cli("embed", "--store", store_dir, "--out", tmp_path / "other.h5"), checksum)


def test_a_verified_shard_is_hashed_again_once_written_to_and_only_then(tmp_path, monkeypatch):
    ingest([EXAMPLES], tmp_path / "store", options=IngestOptions(workers=1))
    monkeypatch.setattr(store_module, "_SETTLED_NS", 0)  # remember files however recently written
    hashed = []
    real_sha256 = store_module.file_sha256
    monkeypatch.setattr(store_module, "file_sha256", lambda path: hashed.append(path.name) or real_sha256(path))
    Store(tmp_path / "store").verify()
    assert sorted(hashed) == ["test-00000.h5", "train-00000.h5"]
    Store(tmp_path / "store").verify()  # another process: the files are unchanged
    assert len(hashed) == 2
    _overwrite_first_record(tmp_path / "store" / "train-00000.h5")
    with pytest.raises(StoreError, match="train-00000.h5: does not match the manifest's checksum"):
        Store(tmp_path / "store").verify()


# --- 7. a list file naming one record several ways ---------------------------------------------

def _list_naming_one_record_four_ways(tmp_path: Path) -> Path:
    records = _copy_examples(tmp_path / "records")
    listing = tmp_path / "records.txt"
    listing.write_text("# the records to read\n\n"
                       "records/00299_hr.hea\n"
                       f"{records / '00299_hr.hea'}\n"
                       "records/00299_hr\n"
                       f"  {records / '00299_hr'}  \n"
                       "./records/00299_hr.dat\n"
                       "   # an indented comment\n"
                       "records/00180_hr.hea\n")
    return listing


def test_a_list_file_names_each_record_once_and_skips_comments(tmp_path):
    listing = _list_naming_one_record_four_ways(tmp_path)
    records = (tmp_path / "records").resolve()
    assert read_record_list(listing) == [records / "00299_hr.hea", records / "00180_hr.hea"]


def test_predict_scores_a_record_listed_four_ways_once(tmp_path):
    listing = _list_naming_one_record_four_ways(tmp_path)
    done = _cli("predict", listing, "--out", tmp_path / "scores.csv")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = (tmp_path / "scores.csv").read_text().splitlines()[1:]
    assert sorted(row.split(",")[0] for row in rows) == ["00180_hr", "00299_hr"]
    assert (tmp_path / "scores.csv.skipped.csv").read_text().splitlines()[1:] == []


# --- 8. a full disk under embed ----------------------------------------------------------------

# ecgtool embed with the free-space check fooled (as when another writer takes the space after
# it): the disk fills while HDF5 writes.
_EMBED_WITHOUT_SPACE_CHECK = """
import shutil, sys, types
import ecgtool.embeddings as embeddings
embeddings.shutil = types.SimpleNamespace(copyfile=shutil.copyfile,
                                          disk_usage=lambda path: shutil.disk_usage(path)._replace(free=1 << 40))
from ecgtool.cli import app
sys.argv = ["ecgtool", *sys.argv[1:]]
app()
"""


def test_a_full_disk_ends_embed_in_one_line_with_nothing_half_written(tiny_disk, tmp_path):
    ingest([EXAMPLES], tmp_path / "store", options=IngestOptions(workers=1))
    filler = tiny_disk / "filler"
    filler.write_bytes(b"\0" * (shutil.disk_usage(tiny_disk).free - 300_000))  # 300 kB left: less than a chunk of vectors
    out = tiny_disk / "emb.h5"
    _one_line_error(_cli("embed", "--store", tmp_path / "store", "--out", out), f"{out}: not enough free space")
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["filler"]
    done = subprocess.run([sys.executable, "-c", _EMBED_WITHOUT_SPACE_CHECK, "embed", "--store", tmp_path / "store",
                           "--out", out], capture_output=True, text=True, cwd=REPO, timeout=300)
    _one_line_error(done, f"{out}: cannot write (No space left on device)", "nothing half-written is left")
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["filler"]
    filler.unlink()  # space freed: the same command completes
    done = _cli("embed", "--store", tmp_path / "store", "--out", out)
    assert done.returncode == 0 and done.stdout.startswith("4 records embedded"), done.stderr[-2000:]


# --- 9. file names that are not UTF-8 ------------------------------------------------------------

def test_a_file_name_that_is_not_utf8_is_skipped_and_the_batch_goes_on(tmp_path):
    records = _copy_examples(tmp_path / "records")
    shift_jis = "心電図".encode("cp932")  # as a Japanese Windows export names a file
    os.rename(records / "00318_hr.hea", os.fsencode(records) + b"/" + shift_jis + b".hea")
    os.mkdir(os.fsencode(records) + b"/" + shift_jis)
    shown = "\\x90S\\x93d\\x90}"
    done = _cli("ingest", records, "--out", tmp_path / "store", timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    manifest = json.loads((tmp_path / "store" / "manifest.json").read_text(encoding="utf-8"))
    assert sum(counts["records"] for counts in manifest["counts"].values()) == 3
    skipped = {entry["path"]: entry["reason"] for entry in manifest["skipped"]}
    assert skipped[f"records/{shown}.hea"].startswith("name is not UTF-8")
    assert skipped[f"records/{shown}"].startswith("name is not UTF-8")
    scores = tmp_path / "scores.csv"
    done = _cli("predict", records, "--out", scores, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(scores.read_text(encoding="utf-8").splitlines()) == 1 + 3
    skip_list = (tmp_path / "scores.csv.skipped.csv").read_text(encoding="utf-8")
    assert f"records/{shown}.hea,name is not UTF-8" in skip_list


# --- 11. a FIFO among the records --------------------------------------------------------------

def test_a_fifo_among_the_records_is_skipped_not_waited_for(tmp_path):
    records = _copy_examples(tmp_path / "records")
    os.mkfifo(records / "stuck.xml")
    (records / "00318_hr.dat").unlink()
    os.mkfifo(records / "00318_hr.dat")  # a header whose signal file is a FIFO
    found, rejected = find_records([records])
    assert [f.record_id for f in found] == ["00172_hr", "00180_hr", "00299_hr"]
    assert {f.display: f.reason for f in rejected} == {
        "records/00318_hr.hea": "signal file 00318_hr.dat: not a regular file (a FIFO): not read",
        "records/stuck.xml": "not a regular file (a FIFO): not read"}
    done = _cli("ingest", records, "--out", tmp_path / "store", timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "skipped records/stuck.xml: not a regular file (a FIFO)" in done.stdout
    done = _cli("predict", records / "stuck.xml", timeout=120)
    _one_line_error(done, "stuck.xml: not a regular file (a FIFO)")


# --- weak messages -----------------------------------------------------------------------------

def _eight_leads(folder: Path) -> Path:
    """00299_hr as a device writing I, II and V1-V6 only."""
    folder.mkdir()
    lines = (EXAMPLES / "00299_hr.hea").read_text().splitlines()
    keep = [0, 1, 6, 7, 8, 9, 10, 11]
    (folder / "00299_hr.hea").write_text("\n".join(["00299_hr 8 500 5000", *(lines[1 + i] for i in keep)]) + "\n")
    samples = np.fromfile(EXAMPLES / "00299_hr.dat", dtype="<i2").reshape(-1, 12)
    np.ascontiguousarray(samples[:, keep]).tofile(folder / "00299_hr.dat")
    return folder / "00299_hr.hea"


def test_an_8_lead_record_is_refused_naming_derive_limb_leads(tmp_path):
    header = _eight_leads(tmp_path / "eight")
    _one_line_error(_cli("predict", header), "missing leads: III, aVR, aVL, aVF", "--derive-limb-leads")
    result = ingest([header.parent], tmp_path / "store", options=IngestOptions(workers=1))
    assert "`ecgtool ingest --derive-limb-leads` computes them" in result.manifest["skipped"][0]["reason"]
    derived = ingest([header.parent], tmp_path / "derived",
                     options=IngestOptions(workers=1, canonical=CanonicalOptions(derive_limb_leads=True)))
    assert sum(c["records"] for c in derived.manifest["counts"].values()) == 1


@pytest.fixture(scope="module")
def bench_on_train_in_80_columns(labelled_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench80") / "bench.json"
    done = _cli("bench", "--store", labelled_store, "--split", "train", "--json", out, columns=80)
    assert done.returncode == 0, done.stderr[-2000:]
    return done, json.loads(out.read_text(encoding="utf-8"))


def test_bench_on_the_train_split_warns_of_leakage(bench_on_train_in_80_columns):
    done, _ = bench_on_train_in_80_columns
    assert "warning: the train split: a model trained on this store has learnt these records" in done.stderr
    assert "WARNING: the train split" in done.stdout


def test_bench_tables_in_80_columns_cut_no_number(bench_on_train_in_80_columns):
    done, result = bench_on_train_in_80_columns
    assert "…" not in done.stdout
    assert max(len(line) for line in done.stdout.splitlines()) <= 80
    ours = result["per_label"]["all"]["ours"]["ja"]
    assert any(f"{ours['top1']:.1f}" in line and f"{ours['top5']:.1f}" in line
               for line in done.stdout.splitlines() if "all labels" in line)
    for key, value in result["headline"].items():  # every headline figure whole, beside its name
        if value is not None:
            assert any(f"{value:.2f}" in line for line in done.stdout.splitlines() if key[:20] in line), key


def test_overwrite_rewrites_shards_written_from_other_records(tmp_path):
    records = _copy_examples(tmp_path / "records")
    splits = tmp_path / "splits.csv"
    splits.write_text("record,split\n" + "".join(f"{name},train\n" for name in NAMES))
    store = tmp_path / "store"
    ingest([records], store, metadata=[splits], options=IngestOptions(workers=1))
    (records / "00318_hr.hea").unlink()  # same settings, other records
    with pytest.raises(IngestError, match="was written from a different set of records .* pass --overwrite"):
        ingest([records], store, metadata=[splits], options=IngestOptions(workers=1))
    result = ingest([records], store, metadata=[splits], options=IngestOptions(workers=1), overwrite=True)
    assert result.manifest["counts"]["train"]["records"] == 3 and result.shards_written == 1
    Store(store).verify()


def test_ingest_says_how_many_records_it_stored(tmp_path):
    records = _copy_examples(tmp_path / "records")
    with open(records / "00318_hr.dat", "r+b") as signal_file:
        signal_file.truncate(1000)  # its header reads; its samples do not
    done = _cli("ingest", records, "--out", tmp_path / "store")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "stored 3 records of 4 read (1 skipped, listed below)" in done.stdout, done.stdout


def test_an_unknown_language_is_a_one_line_error():
    _one_line_error(_cli("labels", "--lang", "fr"), "--lang fr: expected ja, en or both")


@pytest.mark.parametrize("edit, what", [
    (lambda c: c.update(sampling_rate_hz=250, n_samples=2500), "sampling_rate_hz is 250"),
    (lambda c: c["lead_order"].__setitem__(slice(0, 2), ["II", "I"]), "lead_order"),
    (lambda c: c.update(units="uV"), "units is 'uV'"),
    (lambda c: c["filters"][0].update(cutoff_hz=25.0), "filters declares lowpass 25.0 Hz, but its model applies lowpass 40.0 Hz"),
])
def test_a_bundle_whose_input_contract_is_not_what_prepares_its_input_is_refused(tmp_path, edit, what):
    """Issue 21, item 2: the contract a bundle declares is enforced, not carried."""
    import json
    import shutil

    from ecgtool.bundle import DEFAULT_BUNDLE, BundleError, load_bundle

    copy = tmp_path / "bundle"
    shutil.copytree(DEFAULT_BUNDLE, copy)
    description = json.loads((copy / "bundle.json").read_text(encoding="utf-8"))
    edit(description["input_contract"])
    (copy / "bundle.json").write_text(json.dumps(description), encoding="utf-8")
    with pytest.raises(BundleError, match=re.escape(what)) as caught:
        load_bundle(copy)
    assert str(copy / "bundle.json") in str(caught.value) and "\n" not in str(caught.value)
    done = _cli("predict", REPO / "examples" / "ptb-xl" / "00318_hr.hea", "--model", copy)
    assert done.returncode == 1 and done.stdout.count("\n") + done.stderr.count("\n") <= 1
