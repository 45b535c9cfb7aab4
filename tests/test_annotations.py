"""Sidecar CSVs as a hospital would hand them over, including Shift_JIS Japanese."""

from __future__ import annotations

import pytest

from ecgtool.annotations import AnnotationError, load_annotations, record_key


def test_record_key_from_paths_and_names():
    assert record_key("records500/00000/00001_hr") == "00001_hr"
    assert record_key(r"C:\export\ECG02.mwf") == "ECG02"
    assert record_key(" A0001.hea ") == "A0001"


def test_shift_jis_sidecar_with_japanese_findings(tmp_path):
    sidecar = tmp_path / "reports.csv"
    sidecar.write_bytes("record,patient,report,findings,split\nA0001,P-1,洞調律 完全右脚ブロック,完全右脚ブロック;左室肥大,test\n".encode("cp932"))
    annotation = load_annotations([sidecar])["A0001"]
    assert annotation.patient_id == "P-1" and annotation.split == "test"
    assert annotation.finding_terms == ["完全右脚ブロック", "左室肥大"]
    assert not annotation.findings_from_report


def test_report_only_sidecar_asks_for_extraction(tmp_path):
    sidecar = tmp_path / "reports.csv"
    sidecar.write_text("record_id,report\nE00001,心房細動\n", encoding="utf-8-sig")
    annotation = load_annotations([sidecar])["E00001"]
    assert annotation.report == "心房細動" and annotation.findings_from_report


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("patient,report\n1,x\n", "no record column"),
        ("record,split\nA1,training\n", r"reports.csv:2: split 'training' is not one of train, val, test"),
        ("record\nA1\nA1\n", r"reports.csv:3: record A1 appears twice"),
        ("record\n", "no rows"),
    ],
)
def test_bad_sidecars_are_named_with_their_line(tmp_path, text, message):
    sidecar = tmp_path / "reports.csv"
    sidecar.write_text(text)
    with pytest.raises(AnnotationError, match=message):
        load_annotations([sidecar])
