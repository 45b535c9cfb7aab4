"""The fixed band-limit inside the model (``ModelConfig.input_lowpass_hz``), on sines and on the
real PTB-XL ECGs published at both 500 Hz and 100 Hz; and the shipped model's reading of both copies."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ecgtool.bench.rate_pairs import compare_copies, find_pairs
from ecgtool.bundle import DEFAULT_BUNDLE, load_bundle
from ecgtool.io.canonical import load_canonical
from ecgtool.model import BandLimit, ModelConfig, ResNet1d, input_filters
from ecgtool.signal import CanonicalOptions

RATE = 500


def _sine(hz: float) -> torch.Tensor:
    t = torch.arange(5000, dtype=torch.float64) / RATE
    return torch.sin(2 * np.pi * hz * t).float().expand(1, 12, 5000).contiguous()


def test_passes_the_diagnostic_band_and_removes_what_100_hz_records_lack():
    band = BandLimit(12, RATE, 40.0, 5)
    for hz, low, high in [(1.25, 0.999, 1.001), (10.0, 0.999, 1.001), (30.0, 0.995, 1.005)]:  # whole cycles in 9.6 s
        out = band(_sine(hz))[..., 20:-20]
        assert out.shape[-1] == 1000 - 40
        rms = float(out.pow(2).mean().sqrt()) * np.sqrt(2)  # a sine's amplitude from its RMS
        assert low < rms < high, (hz, rms)
    for hz in (50.0, 60.0, 150.0):  # mains hum and content above 100 Hz Nyquist: at least 55 dB down
        assert float(band(_sine(hz))[..., 20:-20].abs().max()) < 10 ** (-55 / 20), hz


def test_output_is_not_delayed():
    band = BandLimit(12, RATE, 40.0, 1)
    x = torch.zeros(1, 12, 5000)
    x[..., 2500] = 1.0
    assert int(band(x)[0, 0].argmax()) == 2500


def test_refuses_a_decimation_that_would_alias():
    with pytest.raises(ValueError, match="alias"):
        BandLimit(12, RATE, 40.0, 10)  # 50 Hz out: Nyquist 25 Hz < 45 Hz stopband edge


def test_contract_describes_the_filter_and_the_encoder_runs_at_100_hz():
    config = ModelConfig(input_lowpass_hz=40.0, input_decimation=5)
    (described,) = input_filters(config, RATE)
    assert described["cutoff_hz"] == 40.0 and described["encoder_rate_hz"] == 100.0
    assert described["taps"] == BandLimit(12, RATE, 40.0, 5).taps.shape[-1]
    assert input_filters(ModelConfig(), RATE) == []
    encoder = ResNet1d(config).eval()
    assert encoder(torch.zeros(2, 12, 5000)).shape == (2, 512)
    assert not any("taps" in key for key in encoder.state_dict())  # rebuilt from the config, not stored


@pytest.fixture(scope="module")
def rate_pairs(shared_data):
    pairs = find_pairs(shared_data / "ptb-xl" / "records500", shared_data / "ptb-xl" / "records100")
    if len(pairs) < 50:
        pytest.skip(f"only {len(pairs)} PTB-XL ECGs at both rates in {shared_data}")
    return pairs


def test_real_copies_at_two_rates_are_closer_once_band_limited(rate_pairs):
    band = BandLimit(12, RATE, 40.0, 5)
    raw, limited = [], []
    for pair in rate_pairs:
        high = torch.from_numpy(load_canonical(pair.high, CanonicalOptions())[1])[None]
        low = torch.from_numpy(load_canonical(pair.low, CanonicalOptions())[1])[None]
        raw.append(float((high - low).norm() / high.norm()))
        limited.append(float((band(high) - band(low)).norm() / band(high).norm()))
    assert np.median(limited) < 0.85 * np.median(raw), (np.median(limited), np.median(raw))


def test_the_shipped_model_reads_both_copies_alike(rate_pairs):
    bundle = load_bundle(DEFAULT_BUNDLE)
    result = compare_copies(bundle, rate_pairs, "ja")
    assert result["pairs"] == len(rate_pairs)
    assert result["cosine_mean"] > 0.95 and result["cosine_mean"] > result["cosine_other_ecgs_mean"] + 0.1
    assert result["same_ecg_is_nearest"] >= 90.0
    assert result["top5_overlap_mean"] >= 4.0


def test_the_numpy_design_is_scipys_firwin_to_the_float32_bit():
    from scipy.signal import firwin, kaiserord

    from ecgtool.model import BAND_LIMIT_ATTENUATION_DB, BAND_LIMIT_TRANSITION_HZ, kaiser_lowpass

    for cutoff in (25.0, 40.0, 100.0):
        n_taps, beta = kaiserord(BAND_LIMIT_ATTENUATION_DB, BAND_LIMIT_TRANSITION_HZ / (RATE / 2))
        reference = firwin(n_taps | 1, cutoff, window=("kaiser", beta), fs=RATE)
        ours = kaiser_lowpass(cutoff, RATE)
        assert ours.shape == reference.shape
        np.testing.assert_array_equal(ours.astype(np.float32), reference.astype(np.float32))
