"""A hospital export as it is: every format in one folder, one ingest run, and predict on each."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ecgtool.ingest import IngestOptions, ingest, is_placeholder_patient_id
from ecgtool.io import FORMATS, format_of, read_record
from ecgtool.store import Store

REPO = Path(__file__).resolve().parents[1]
ONE_FILE_PER_FORMAT = {
    "mfer": "mfer/ECG02.mwf",
    "ge-muse": "formats/ge-muse-xml/MUSE_20200923_093504_79000_example.xml",
    "ge-cardiosoft": "formats/ge-cardiosoft-xml/example-XML1.xml",
    "philips": "formats/philips-xml/129DYPRG.XML",
    "hl7-aecg": "formats/hl7-aecg/example-aecg.xml",
    "dicom-ecg": "formats/dicom-ecg/waveform_ecg.dcm",
    "scp-ecg": "formats/scp-ecg/demo.scp",
}


@pytest.fixture(scope="module")
def mixed_export(shared_data, tmp_path_factory) -> Path:
    """One folder mixing every format, with a README and a reports CSV beside them, names as exported."""
    export = tmp_path_factory.mktemp("hospital-export")
    for source in sorted((shared_data / "formats").rglob("*")) + sorted((shared_data / "mfer").glob("*.mwf")):
        if source.is_file() and source.name != "README.md":
            shutil.copy(source, export / source.name)
    for source in sorted((REPO / "examples" / "ptb-xl").glob("00*_hr.*")):
        shutil.copy(source, export / source.name)
    (export / "README.txt").write_text("exported 2026-11-23\n")
    (export / "notes.bin").write_bytes(os.urandom(2048))
    return export


def test_every_format_is_listed_and_recognised(shared_data):
    assert {f.name for f in FORMATS} == set(ONE_FILE_PER_FORMAT)
    for name, relative in ONE_FILE_PER_FORMAT.items():
        assert format_of(shared_data / relative).name == name, relative


def test_a_folder_mixing_all_formats_ingests_in_one_run(mixed_export, tmp_path):
    result = ingest([mixed_export], tmp_path / "store", options=IngestOptions(workers=2))
    manifest = result.manifest
    store = Store(tmp_path / "store")
    stored, patients = {}, {}
    for split in ("train", "val", "test"):
        for shard in store.shards(split):
            assert shard.signal.shape[1:] == (12, 5000)
            for record_id, acquisition, patient in zip(shard.record_id, shard.acquisition, shard.patient_id):
                stored[record_id] = json.loads(acquisition)
                patients[record_id] = patient
    # 13 vendor files, 5 MFER, 4 PTB-XL WFDB records: all stored; only the random file is skipped.
    assert len(stored) == 22
    assert [s["path"] for s in manifest["skipped"]] == [f"{mixed_export.name}/notes.bin"]
    assert manifest["skipped"][0]["reason"] == "not a recognised ECG record format"
    assert {metadata["format"] for metadata in stored.values()} == set(ONE_FILE_PER_FORMAT) | {"wfdb"}
    assert stored["ECG02"]["derived_leads"] == ["III", "aVR", "aVL", "aVF"]
    muse = stored["MUSE_20200923_093504_79000_example"]
    assert muse["statements"] and muse["measurements"]["heart_rate_bpm"] > 0 and muse["acquired"].startswith("2020-")
    assert any("placeholder patient id" in warning for warning in manifest["warnings"])
    # The patient id the file carries (read cheaply at indexing) is the store's, placeholders aside.
    for record_id in ("129DYPRG", "MUSE_20200923_093504_79000_example", "waveform_ecg", "example-XML1"):
        own = read_record(next(mixed_export.glob(f"{record_id}.*"))).patient_id
        assert own and patients[record_id] == own, record_id
    assert patients["guangxi_teaching_sinus_rhythm"] == "record:guangxi_teaching_sinus_rhythm"  # file says 00000000


@pytest.mark.parametrize("name", sorted(ONE_FILE_PER_FORMAT))
def test_predict_prints_five_findings_for_each_format(shared_data, name):
    done = subprocess.run([sys.executable, "-m", "ecgtool.cli", "predict", str(shared_data / ONE_FILE_PER_FORMAT[name]),
                           "--top", "5", "--json"], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    prediction = json.loads(done.stdout)
    assert prediction["record_id"] == Path(ONE_FILE_PER_FORMAT[name]).stem
    assert len(prediction["findings"]) >= 5  # the top 5, and every finding with a call below them


def test_placeholder_patient_ids():
    for placeholder in ("", "  ", "00000000", "9999", "XXXX", "UNKNOWN", "Anonymous", "n/a"):
        assert is_placeholder_patient_id(placeholder), placeholder
    for real in ("12345678", "P-0042", "JS00001", "山田0001"):
        assert not is_placeholder_patient_id(real), real
