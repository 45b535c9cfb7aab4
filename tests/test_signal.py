"""The canonical transform on real records: lead order, resampling, crop/pad, quality checks."""

from __future__ import annotations

import numpy as np
import pytest

from ecgtool.errors import RecordError
from ecgtool.io.wfdb import read_wfdb
from ecgtool.record import Record
from ecgtool.signal import LEADS, CanonicalOptions, canonicalize, derive_limb_leads_from_i_ii


def test_500hz_ptbxl_record_is_unchanged_but_for_lead_names(ptbxl500):
    record = read_wfdb(ptbxl500 / "00000" / "00001_hr.hea")
    assert record.lead_names[3:6] == ("AVR", "AVL", "AVF")
    canonical = canonicalize(record)
    assert canonical.signal.shape == (12, 5000) and canonical.n_valid == 5000
    np.testing.assert_array_equal(canonical.signal, record.signal)


def test_lead_order_is_fixed_whatever_the_file_order(ptbxl500):
    record = read_wfdb(ptbxl500 / "00000" / "00001_hr.hea")
    order = np.random.default_rng(0).permutation(12)
    shuffled = Record(record.record_id, record.path, record.signal[order], 500.0, tuple(record.lead_names[i].lower() for i in order))
    np.testing.assert_array_equal(canonicalize(shuffled).signal, canonicalize(record).signal)


def test_100hz_record_resampled_matches_its_500hz_original(shared_data):
    # PTB-XL's 100 Hz files are decimated copies of the 500 Hz ones: upsampling must come back close.
    low = read_wfdb(shared_data / "ptb-xl" / "records100" / "01000" / "01017_lr.hea")
    high = canonicalize(read_wfdb(shared_data / "ptb-xl" / "records500" / "01000" / "01017_hr.hea")).signal
    upsampled = canonicalize(low).signal
    inner = slice(250, 4750)
    correlation = np.corrcoef(upsampled[:, inner].ravel(), high[:, inner].ravel())[0, 1]
    assert correlation > 0.95


def test_1000hz_long_record_is_resampled_and_cropped(shared_data):
    record = read_wfdb(shared_data / "wfdb-samples" / "s0010_re.hea")
    canonical = canonicalize(record)
    assert canonical.signal.shape == (12, 5000) and canonical.n_valid == 5000
    # The first 10 s, decimated by two: every other source sample, up to the anti-alias filter.
    source_ii = record.signal[1, :10000:2]
    assert np.corrcoef(canonical.signal[1], source_ii)[0, 1] > 0.99


def test_short_record_is_padded_and_too_short_rejected(ptbxl500):
    full = read_wfdb(ptbxl500 / "00000" / "00002_hr.hea")
    record = Record(full.record_id, full.path, full.signal[:, :3600], 500.0, full.lead_names)  # 7.2 s
    canonical = canonicalize(record)
    assert canonical.n_valid == record.signal.shape[1] < 5000
    assert not canonical.signal[:, canonical.n_valid :].any()
    with pytest.raises(RecordError, match=r"too short: \d+\.\d\d s, at least 15 s needed"):
        canonicalize(record, CanonicalOptions(min_seconds=15))


def test_two_lead_holter_record_is_rejected_naming_missing_leads(shared_data):
    with pytest.raises(RecordError, match="100.hea: missing leads: I, III, aVR"):
        canonicalize(read_wfdb(shared_data / "wfdb-samples" / "100.hea"))


def test_limb_leads_derived_only_on_request(ptbxl500):
    record = read_wfdb(ptbxl500 / "00000" / "00001_hr.hea")
    keep = [0, 1, 6, 7, 8, 9, 10, 11]
    eight = Record("x", "x.hea", record.signal[keep], 500.0, tuple(record.lead_names[i] for i in keep))
    with pytest.raises(RecordError, match="missing leads: III, aVR, aVL, aVF"):
        canonicalize(eight)
    derived = canonicalize(eight, CanonicalOptions(derive_limb_leads=True))
    assert derived.derived_leads == ("III", "aVR", "aVL", "aVF")
    s = derived.signal
    np.testing.assert_allclose(s[2], s[1] - s[0], atol=1e-6)
    np.testing.assert_allclose(s[3], -(s[0] + s[1]) / 2, atol=1e-6)
    # The device's own limb leads agree with the derived ones up to its rounding.
    np.testing.assert_allclose(s[2:6], canonicalize(record).signal[2:6], atol=0.02)


def test_quality_checks_name_the_lead(ptbxl500):
    record = read_wfdb(ptbxl500 / "00000" / "00001_hr.hea")
    flat = record.signal.copy(); flat[7] = 0.0
    with pytest.raises(RecordError, match=r"flat lead\(s\) V2"):
        canonicalize(Record("x", "x.hea", flat, 500.0, record.lead_names))
    nan = record.signal.copy(); nan[4, 100] = np.nan
    with pytest.raises(RecordError, match=r"NaN/inf or missing samples in lead\(s\) aVL"):
        canonicalize(Record("x", "x.hea", nan, 500.0, record.lead_names))
    clipped = record.signal.copy(); clipped[9] = np.clip(clipped[9], -0.05, 0.05)
    with pytest.raises(RecordError, match=r"saturated lead\(s\) V4"):
        canonicalize(Record("x", "x.hea", clipped, 500.0, record.lead_names))
    huge = record.signal * 100
    with pytest.raises(RecordError, match="implausible amplitude"):
        canonicalize(Record("x", "x.hea", huge, 500.0, record.lead_names))


def test_real_quirks_flat_leads_and_wrong_gain(shared_data):
    with pytest.raises(RecordError, match=r"flat lead\(s\) V2, V4, V6"):
        canonicalize(read_wfdb(shared_data / "challenge" / "cinc2021" / "JS20004.hea"))
    # S0001 declares 2000000/mV: every lead comes out ~2000x too small, i.e. flat.
    with pytest.raises(RecordError, match="flat lead"):
        canonicalize(read_wfdb(shared_data / "challenge" / "cinc2020-unlabeled" / "S0001.hea"))


def test_derivation_identities():
    rng = np.random.default_rng(1)
    signal = rng.normal(size=(12, 50)).astype(np.float32)
    derive_limb_leads_from_i_ii(signal)
    i, ii = signal[0], signal[1]
    np.testing.assert_allclose(signal[LEADS.index("aVL")], i - ii / 2)
    np.testing.assert_allclose(signal[LEADS.index("aVF")], ii - i / 2)
