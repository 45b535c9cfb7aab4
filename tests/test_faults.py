"""Nothing lost, nothing silently wrong: one writer per output, resume keyed on the resolved file,
writes that fail leave nothing half-written, unreadable folders on the skip list, conflicting or
malformed metadata refused. On the real example records and public PTB-XL records."""

from __future__ import annotations

import errno
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ecgtool import ingest as ingest_module
from ecgtool.annotations import AnnotationError, load_annotations
from ecgtool.ingest import IngestError, IngestOptions, ingest
from ecgtool.io.discover import find_records
from ecgtool.output_lock import OutputInUseError, exclusive_output, lock_path_for
from ecgtool.predict import PredictError, ReadingOptions, _ResultWriter, predict_record
from ecgtool.bundle import DEFAULT_BUNDLE, load_bundle

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "ptb-xl"


def _cli(*args, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ecgtool.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "COLUMNS": "200"}, timeout=300)


# --- one output, one writer ------------------------------------------------------------------

def test_a_second_writer_of_the_same_output_is_refused(tmp_path):
    out = tmp_path / "scores.csv"
    with exclusive_output(out, is_directory=False):  # as another ecgtool process would hold it
        done = _cli("predict", EXAMPLES, "--out", out)
        assert done.returncode == 1 and "Traceback" not in done.stderr
        assert f"{out}: being written by another ecgtool process (pid {os.getpid()})" in done.stderr
        assert not out.exists()
        store = tmp_path / "store"
        with exclusive_output(store, is_directory=True):
            done = _cli("ingest", EXAMPLES, "--out", store)
            assert done.returncode == 1 and "being written by another ecgtool process" in done.stderr
    assert not lock_path_for(out, False).exists()
    assert _cli("predict", EXAMPLES, "--out", out).returncode == 0  # free again


def _hold_lock_forever(path: str) -> None:
    with exclusive_output(path, is_directory=True):
        signal.pause()


def test_a_lock_dies_with_its_process_even_on_kill_minus_9(tmp_path):
    out = tmp_path / "run"
    holder = multiprocessing.get_context("fork").Process(target=_hold_lock_forever, args=(str(out),))
    holder.start()
    try:
        for _ in range(200):
            if lock_path_for(out, True).exists():
                break
            holder.join(0.05)
        with pytest.raises(OutputInUseError, match=f"pid {holder.pid}"):
            with exclusive_output(out, is_directory=True):
                pass
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.join()
    with exclusive_output(out, is_directory=True):  # the stale lock file does not block
        pass


# --- predict: resume by resolved file, whole lines only --------------------------------------

def test_resume_keys_on_the_resolved_file_however_the_input_is_spelled(tmp_path):
    out = tmp_path / "scores.csv"
    relative = os.path.relpath(EXAMPLES, REPO)
    first = _cli("predict", relative, "--out", out)
    assert first.returncode == 0, first.stderr
    second = _cli("predict", EXAMPLES.resolve(), "--out", out)
    assert second.returncode == 0, second.stderr
    lines = out.read_text().splitlines()
    assert lines[0].startswith("record_id,path") and sum(line.startswith("record_id") for line in lines) == 1
    rows = lines[1:]
    assert len(rows) == len(set(rows)) == len(list(EXAMPLES.glob("*.hea")))


class _DiskFullAfter:
    """A file handle whose next write stores half the text, then fails as a full disk does."""

    def __init__(self, handle):
        self.handle = handle
        self.name = handle.name

    def write(self, text: str) -> int:
        self.handle.write(text[: len(text) // 2])
        self.handle.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
        return getattr(self.handle, name)


def test_a_failed_write_leaves_only_complete_lines(tmp_path):
    bundle = load_bundle(DEFAULT_BUNDLE)
    predictions = [predict_record(path, bundle) for path in sorted(EXAMPLES.glob("*.hea"))]
    out = tmp_path / "scores.jsonl"
    writer = _ResultWriter(out, bundle, ReadingOptions(top=5))
    writer.write(predictions[:2])
    writer.handle = _DiskFullAfter(writer.handle)
    with pytest.raises(PredictError, match="No space left on device"):
        writer.write(predictions[2:])
    writer.close()
    data = out.read_bytes()
    assert data.endswith(b"\n") and data.count(b"\n") == 2  # the two whole lines, nothing of the third


# --- ingest: no space, unreadable folders ----------------------------------------------------

def test_ingest_refuses_a_shard_the_disk_cannot_hold_and_resumes(tmp_path, shared_data, monkeypatch):
    records = tmp_path / "records"
    records.mkdir()
    for source in sorted((shared_data / "ptb-xl" / "records500" / "00000").glob("0001[0-5]_hr.*")):
        shutil.copy(source, records)
    store = tmp_path / "store"
    real = shutil.disk_usage
    monkeypatch.setattr(ingest_module.shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    with pytest.raises(IngestError, match="not enough free space"):
        ingest([records], store, options=IngestOptions(workers=1, shard_size=2))
    assert not list(store.glob("*.tmp")) and not list(store.glob("*.h5"))
    monkeypatch.setattr(ingest_module.shutil, "disk_usage", real)
    result = ingest([records], store, options=IngestOptions(workers=1, shard_size=2))
    assert sum(c["records"] for c in result.manifest["counts"].values()) == 6


def test_unreadable_folders_and_files_go_on_the_skip_list(tmp_path, monkeypatch):
    tree = tmp_path / "tree"
    (tree / "locked").mkdir(parents=True)
    for suffix in (".hea", ".dat"):
        shutil.copy(EXAMPLES / f"00299_hr{suffix}", tree)
    (tree / "gone.xml").symlink_to(tmp_path / "nowhere.xml")
    real_scandir = os.scandir

    def scandir(path="."):  # as a folder without read permission behaves (tests run as root)
        if os.fspath(path).endswith("locked"):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    found, rejected = find_records([tree])
    assert [f.record_id for f in found] == ["00299_hr"]
    reasons = {f.display: f.reason for f in rejected}
    assert reasons[os.path.join("tree", "locked")] == "unreadable folder: Permission denied"
    assert reasons[os.path.join("tree", "gone.xml")] == "cannot read: No such file or directory"
    result = ingest([tree], tmp_path / "store", options=IngestOptions(workers=1))
    skipped = {s["path"]: s["reason"] for s in result.manifest["skipped"]}
    assert skipped[os.path.join("tree", "locked")] == "unreadable folder: Permission denied"


# --- metadata --------------------------------------------------------------------------------

def test_tables_that_disagree_on_a_patient_or_split_are_refused(tmp_path):
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    first.write_text("record,patient,split\n00299_hr,P1,train\n")
    second.write_text("record,patient\n00299_hr,P2\n")
    with pytest.raises(AnnotationError, match=r"b.csv: record 00299_hr has patient 'P2', but .*a.csv gives 'P1'"):
        load_annotations([first, second])
    second.write_text("record,split\n00299_hr,test\n")
    with pytest.raises(AnnotationError, match="has split 'test'"):
        load_annotations([first, second])
    second.write_text("record,patient,split\n00299_hr,P1,train\n")  # agreeing tables merge
    assert load_annotations([first, second])["00299_hr"].patient_id == "P1"


def test_an_unbalanced_quote_is_an_error_naming_its_line(tmp_path):
    sidecar = tmp_path / "reports.csv"
    sidecar.write_text('record,report\n00299_hr,"sinus rhythm\n00180_hr,left bundle branch block\n00172_hr,normal\n')
    with pytest.raises(AnnotationError, match=r"reports.csv:2: malformed CSV"):
        load_annotations([sidecar])


def test_placeholder_patient_ids_in_a_table_are_not_one_patient(tmp_path):
    sidecar = tmp_path / "patients.csv"
    sidecar.write_text("record,patient,findings\n" + "".join(f"{p.stem},00000000,normal\n" for p in EXAMPLES.glob("*.hea")))
    result = ingest([EXAMPLES], tmp_path / "store", metadata=[sidecar], options=IngestOptions(workers=1))
    assert any("placeholder patient id" in w for w in result.manifest["warnings"])
    assert sum(c["patients"] for c in result.manifest["counts"].values()) == len(list(EXAMPLES.glob("*.hea")))


def test_ingest_prints_how_many_finding_terms_were_unknown(tmp_path):
    sidecar = tmp_path / "findings.csv"
    sidecar.write_text("record,findings\n00299_hr,left ventricular hypertrophy;frobnication\n00180_hr,frobnication\n")
    done = _cli("ingest", EXAMPLES, "--metadata", sidecar, "--out", tmp_path / "store")
    assert done.returncode == 0, done.stderr
    assert "2 finding terms (1 distinct) the registry does not know" in done.stdout + done.stderr


def test_ctrl_c_during_ingest_stops_in_one_line_and_the_rerun_resumes(tmp_path, shared_data):
    import time

    store = tmp_path / "store"
    # PTB-XL's 100 Hz records (3,513, resampled to 500 Hz): an ingest long enough (seconds) that
    # the interrupt lands while shards are still being written, however fast the machine.
    records = shared_data / "ptb-xl" / "records100"
    command = [sys.executable, "-m", "ecgtool.cli", "ingest", str(records),
               "--out", str(store), "--workers", "2", "--shard-size", "16"]
    # As from a terminal: SIGINT handled by default, even where this test runs with it ignored (a
    # background job of a non-interactive shell ignores SIGINT, and its children inherit that).
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True, cwd=REPO,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None and not list(store.glob("*.h5")):
        time.sleep(0.05)
    assert process.poll() is None, "ingest finished before it could be interrupted"
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C sends: the whole foreground group
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr and stderr.count("error:") == 1 and "re-run the same command" in stderr
    done = _cli("ingest", records, "--out", store, "--workers", "2", "--shard-size", "16")
    assert done.returncode == 0, done.stderr[-2000:]
    manifest = __import__("json").loads((store / "manifest.json").read_text())
    assert sum(c["records"] for c in manifest["counts"].values()) + len(manifest["skipped"]) == len(list(records.rglob("*.hea")))


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_full_disk_ends_ingest_in_one_line_with_nothing_half_written(tiny_disk, shared_data, workers, monkeypatch):
    records = shared_data / "ptb-xl" / "records500" / "00000"
    store = tiny_disk / "store"
    done = _cli("ingest", records, "--out", store, "--workers", workers, "--shard-size", "12")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert [line for line in done.stderr.splitlines() if line.strip()] == [
        line for line in done.stderr.splitlines() if line.startswith("error:")] and str(store) in done.stderr
    assert not list(store.glob("*.tmp"))
    # The disk fills while a shard is written (the free-space check passed, another writer took
    # the space): HDF5 fails, or crashes its process, mid-write. Still one error, no .tmp, no hang.
    monkeypatch.setattr(ingest_module, "_check_free_space", lambda task, options: None)
    with pytest.raises(IngestError, match="No space left on device|was killed"):
        ingest([records], store, options=IngestOptions(workers=int(workers), shard_size=12))
    assert not list(store.glob("*.tmp"))
    subprocess.run(["mount", "-o", "remount,size=256m", str(tiny_disk)], check=True)  # space freed
    assert shutil.disk_usage(store).free > 128e6, subprocess.run(["df", "-h", str(store)], capture_output=True, text=True).stdout
    monkeypatch.undo()
    result = ingest([records], store, options=IngestOptions(workers=int(workers), shard_size=12))
    assert sum(c["records"] for c in result.manifest["counts"].values()) + len(result.manifest["skipped"]) == len(list(records.glob("*.hea")))
