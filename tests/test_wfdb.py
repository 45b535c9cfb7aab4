"""The WFDB / Challenge reader against wfdb-python on every real record, and on broken copies."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import wfdb

from ecgtool.errors import RecordError
from ecgtool.io.matv4 import read_matv4_matrix
from ecgtool.io.wfdb import read_wfdb
from ecgtool.io.wfdb_header import read_header


def _all_headers(shared_data):
    return sorted(shared_data.rglob("*.hea"))


def test_every_real_record_matches_wfdb_python(shared_data):
    compared = 0
    for header in _all_headers(shared_data):
        ours = read_wfdb(header)
        try:
            reference = wfdb.rdrecord(str(header.with_suffix("")))
        except wfdb.io.header.HeaderSyntaxError:
            continue  # Georgia record lines: covered by test_georgia_record_line_names_the_mat_file
        assert ours.signal.shape == reference.p_signal.T.shape, header
        np.testing.assert_allclose(ours.signal, reference.p_signal.T, rtol=1e-6, atol=1e-6, err_msg=str(header))
        assert ours.sampling_rate == reference.fs
        compared += 1
    assert compared > 2000


def test_formats_212_and_1000hz_15_leads(shared_data):
    mitbih = read_wfdb(shared_data / "wfdb-samples" / "100.hea")
    assert mitbih.signal.shape == (2, 650000) and mitbih.sampling_rate == 360
    assert mitbih.lead_names == ("MLII", "V5")
    ptb = read_wfdb(shared_data / "wfdb-samples" / "s0010_re.hea")
    assert ptb.signal.shape == (15, 38400) and ptb.sampling_rate == 1000


def test_georgia_record_line_names_the_mat_file(shared_data):
    path = shared_data / "challenge" / "cinc2020-labeled" / "E00009.hea"
    assert path.read_text().split()[0] == "E00009.mat"
    record = read_wfdb(path)
    assert record.record_id == "E00009"
    assert record.signal.shape == (12, 5000)
    digital = read_matv4_matrix(path.with_suffix(".mat"))
    np.testing.assert_allclose(record.signal, digital / 4880.0, rtol=1e-6)  # the header's 4880/mV, baseline 0


def test_lowercase_mv_unit_and_snomed_codes(shared_data):
    record = read_wfdb(shared_data / "challenge" / "cinc2021" / "HR06000.hea")
    assert "mv" in (shared_data / "challenge" / "cinc2021" / "HR06000.hea").read_text()
    assert record.codes == {"snomed": ("164934002", "426783006")}
    assert 0.2 < np.ptp(record.signal[1]) < 10


def test_cpsc_text_labels_and_ptbxl_2024_labels(shared_data):
    cpsc = read_header(shared_data / "challenge" / "cinc2020-cpsc2018" / "A0001.hea")
    assert cpsc.label_codes() == {"cpsc": ("RBBB",)}
    labelled = [h for h in (shared_data / "ptb-xl" / "records500").rglob("*.hea") if "# Labels:" in h.read_text()]
    assert labelled, "the 2024 Challenge copies carry '# Labels:' lines"
    assert read_header(labelled[0]).label_codes()["ptbxl_labels"]


@pytest.fixture
def record_copy(tmp_path, ptbxl500):
    for suffix in (".hea", ".dat"):
        shutil.copy(ptbxl500 / "00000" / f"00001_hr{suffix}", tmp_path / f"00001_hr{suffix}")
    return tmp_path / "00001_hr.hea"


def test_truncated_dat_is_named(record_copy):
    dat = record_copy.with_suffix(".dat")
    dat.write_bytes(dat.read_bytes()[:-2400])
    with pytest.raises(RecordError, match=r"00001_hr\.dat: truncated: header declares 5000 samples per signal, file holds 4900"):
        read_wfdb(record_copy)


def test_header_that_lies_about_its_length(record_copy):
    text = record_copy.read_text().replace("00001_hr 12 500 5000", "00001_hr 12 500 4000", 1)
    record_copy.write_text(text)
    with pytest.raises(RecordError, match="header declares 4000 samples per signal but the file holds 5000"):
        read_wfdb(record_copy)


def test_corrupt_samples_fail_the_checksum(record_copy):
    dat = record_copy.with_suffix(".dat")
    data = bytearray(dat.read_bytes())
    data[1000] ^= 0x40
    dat.write_bytes(bytes(data))
    with pytest.raises(RecordError, match="checksum mismatch"):
        read_wfdb(record_copy)
    assert read_wfdb(record_copy, verify_checksums=False).signal.shape == (12, 5000)


def test_unreadable_and_missing_files(record_copy, tmp_path):
    record_copy.with_suffix(".dat").unlink()
    with pytest.raises(RecordError, match="signal file named by the header does not exist"):
        read_wfdb(record_copy)
    garbage = tmp_path / "junk.hea"
    garbage.write_bytes(b"\x00\x01 not a header at all\n")
    with pytest.raises(RecordError, match="junk.hea: not a WFDB header: binary content"):
        read_wfdb(garbage)
    garbage.write_text("hello world\n")
    with pytest.raises(RecordError, match="junk.hea: malformed number of signals 'world'"):
        read_wfdb(garbage)
