"""ecgtool.measure on synthetic ECGs whose intervals and axes are known by construction.

Every wave is a Gaussian truncated at ±3σ and lowered by its value there, so that it starts and
ends exactly at a known sample (and is continuous there): the P wave, a Q-R-S complex of three such
Gaussians, and a T wave with a slower rise than fall (σ 50 ms up, 30 ms down), as T waves have.
The frontal leads are projections of one frontal vector per wave at a chosen angle (Einthoven and
Goldberger: lead I = cos θ, II = cos(θ − 60°), III = cos(θ − 120°), aVR, aVL, aVF = √3/2 ·
cos(θ − φ) for φ = −150°, −30°, 90°), so that the axis is known; the chest leads take fixed gains.

Tolerances: PR and QRS 10 ms, QT 20 ms, heart rate 1 bpm, axes 10°. The P wave, starting where it
is ~1 % of its peak, is the hardest: ecgtool's P onset falls 8–10 ms after it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from ecgtool.measure import CRITERIA, KEYS, Measurements, criteria, measure
from ecgtool.measure.axes import frontal_axis
from ecgtool.signal import LEADS

FS = 500
LIMB_ANGLES = np.radians([0.0, 60.0, 120.0, -150.0, -30.0, 90.0])
LIMB_GAINS = np.array([1.0, 1.0, 1.0, np.sqrt(3) / 2, np.sqrt(3) / 2, np.sqrt(3) / 2])
# V1 … V6: the QRS goes from rS to qR across the chest, the P and T waves stay upright but in V1.
CHEST_QRS = np.array([-0.9, -1.1, 0.4, 1.3, 1.4, 1.1])
CHEST_P = np.array([0.05, 0.08, 0.1, 0.1, 0.1, 0.08])
CHEST_T = np.array([-0.1, 0.4, 0.5, 0.45, 0.35, 0.25])


@dataclass(frozen=True)
class Truth:
    """The fiducial points (ms from each beat's QRS onset) and values the signal was built with."""

    heart_rate_bpm: float
    pr_ms: float | None
    qrs_ms: float
    qt_ms: float
    p_axis_deg: float
    qrs_axis_deg: float
    t_axis_deg: float


def bump(t: np.ndarray, start: float, rise: float, fall: float) -> np.ndarray:
    """A Gaussian of peak 1 from ``start`` (s), rising over ``rise`` s and falling over ``fall`` s
    (3σ each), exactly zero outside: exp(−x²/2σ²) minus its value at 3σ, rescaled to peak 1."""
    peak = start + rise
    sigma = np.where(t < peak, rise / 3.0, fall / 3.0)
    floor = np.exp(-4.5)
    shape = (np.exp(-0.5 * ((t - peak) / sigma) ** 2) - floor) / (1.0 - floor)
    return np.where((t >= start) & (t <= peak + fall), shape, 0.0)


def frontal(angle_deg: float) -> np.ndarray:
    """(6,) gains of I, II, III, aVR, aVL, aVF for a unit frontal vector at ``angle_deg``."""
    return LIMB_GAINS * np.cos(np.radians(angle_deg) - LIMB_ANGLES)


def ecg(heart_rate_bpm: float = 60.0, pr_ms: float | None = 160.0, qrs_ms: float = 100.0, qt_ms: float = 400.0,
        p_axis_deg: float = 50.0, qrs_axis_deg: float = 60.0, t_axis_deg: float = 40.0, seconds: float = 10.0,
        noise_mv: float = 0.0, wander_mv: float = 0.0, mains_mv: float = 0.0, fibrillation_mv: float = 0.0,
        rr_jitter: float = 0.0, qrs_mv: float = 1.5, seed: int = 0) -> tuple[np.ndarray, Truth]:
    """A (12, seconds·500) float32 ECG in mV, canonical lead order, and what it was built with.

    ``pr_ms=None`` leaves the P waves out; ``fibrillation_mv`` adds fibrillatory waves (4–9 Hz,
    random phases) and ``rr_jitter`` the RR irregularity of atrial fibrillation (fraction of RR).
    """
    rng = np.random.default_rng(seed)
    n = round(seconds * FS)
    t = np.arange(n) / FS
    rr = 60.0 / heart_rate_bpm
    onsets = []
    at = 0.35
    while at + qt_ms / 1000 < seconds:
        onsets.append(at)
        at += rr * (1.0 + rr_jitter * rng.uniform(-1, 1))
    p_wave = np.zeros(n)
    qrs = np.zeros(n)
    t_wave = np.zeros(n)
    q = qrs_ms / 1000.0
    for onset in onsets:
        if pr_ms is not None:
            p_wave += bump(t, onset - pr_ms / 1000.0, 0.05, 0.05)
        # Q, R and S waves that together start at the onset and end at the offset.
        qrs += -0.1 * bump(t, onset, 0.12 * q, 0.12 * q)
        qrs += 1.0 * bump(t, onset + 0.18 * q, 0.27 * q, 0.27 * q)
        qrs += -0.35 * bump(t, onset + 0.56 * q, 0.22 * q, 0.22 * q)
        t_wave += bump(t, onset + qt_ms / 1000.0 - 0.24, 0.15, 0.09)
    gains = {
        "p": np.concatenate([frontal(p_axis_deg) * 0.15, CHEST_P]),
        "qrs": np.concatenate([frontal(qrs_axis_deg) * qrs_mv, CHEST_QRS * qrs_mv]),
        "t": np.concatenate([frontal(t_axis_deg) * 0.35, CHEST_T]),
    }
    signal = gains["p"][:, None] * p_wave + gains["qrs"][:, None] * qrs + gains["t"][:, None] * t_wave
    if fibrillation_mv:
        waves = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) for f in rng.uniform(4, 9, 6))
        signal += fibrillation_mv / 3 * np.concatenate([frontal(70.0), [1.0, 0.8, 0.5, 0.3, 0.2, 0.2]])[:, None] * waves
    if wander_mv:
        drift = wander_mv * (np.sin(2 * np.pi * 0.25 * t + 1.0) + 0.5 * np.sin(2 * np.pi * 0.08 * t))
        signal += drift * rng.uniform(0.5, 1.0, (12, 1))
    if mains_mv:
        signal += mains_mv * np.sin(2 * np.pi * 50.0 * t)
    if noise_mv:
        signal += rng.normal(0.0, noise_mv, signal.shape)
    mean_rr = float(np.mean(np.diff(onsets))) if len(onsets) > 1 else rr
    truth = Truth(heart_rate_bpm=60.0 / mean_rr, pr_ms=pr_ms, qrs_ms=qrs_ms, qt_ms=qt_ms,
                  p_axis_deg=p_axis_deg, qrs_axis_deg=qrs_axis_deg, t_axis_deg=t_axis_deg)
    return signal.astype(np.float32), truth


INTERVAL_MS = 10
QT_MS = 20
AXIS_DEG = 10
RATE_BPM = 1.0
NOISY = {"noise_mv": 0.02, "wander_mv": 0.3, "mains_mv": 0.02}


def angle_difference(a: float, b: float) -> float:
    return abs((a - b + 180.0) % 360.0 - 180.0)


def assert_explained(m: Measurements) -> None:
    assert set(KEYS) <= set(m.values)
    for key, value in m.values.items():
        if value is None:
            assert m.reasons.get(key), f"{key} is None without a reason"
    json.dumps(m.to_dict())


@pytest.mark.parametrize("noise", [{}, NOISY], ids=["clean", "noise+wander+mains"])
@pytest.mark.parametrize("heart_rate", [60.0, 100.0])
def test_intervals_and_rate_of_known_beats(heart_rate, noise):
    signal, truth = ecg(heart_rate_bpm=heart_rate, pr_ms=160.0, qrs_ms=100.0, qt_ms=400.0, **noise)
    m = measure(signal)
    assert_explained(m)
    assert abs(m["heart_rate_bpm"] - truth.heart_rate_bpm) <= RATE_BPM
    assert abs(m["rr_ms"] - 60000.0 / truth.heart_rate_bpm) <= 5
    assert m["rr_irregularity"] < 0.02
    assert m["p_wave_present"] is True
    assert abs(m["pr_ms"] - truth.pr_ms) <= INTERVAL_MS
    assert abs(m["qrs_ms"] - truth.qrs_ms) <= INTERVAL_MS
    assert abs(m["qt_ms"] - truth.qt_ms) <= QT_MS
    rr_s = m["rr_ms"] / 1000.0
    assert m["qtc_ms"] == round(m["qt_ms"] / math.sqrt(rr_s))
    assert m["qtcf_ms"] == round(m["qt_ms"] / rr_s ** (1 / 3))


@pytest.mark.parametrize("pr, qrs, qt", [(120.0, 80.0, 360.0), (240.0, 140.0, 480.0)])
def test_short_and_long_intervals(pr, qrs, qt):
    signal, truth = ecg(heart_rate_bpm=55.0, pr_ms=pr, qrs_ms=qrs, qt_ms=qt, **NOISY)
    m = measure(signal)
    assert abs(m["pr_ms"] - pr) <= INTERVAL_MS
    assert abs(m["qrs_ms"] - qrs) <= INTERVAL_MS
    assert abs(m["qt_ms"] - qt) <= QT_MS


@pytest.mark.parametrize("noise", [{}, NOISY], ids=["clean", "noisy"])
@pytest.mark.parametrize("axis", [-45.0, 60.0, 120.0])
def test_constructed_frontal_axes(axis, noise):
    signal, truth = ecg(qrs_axis_deg=axis, p_axis_deg=axis / 2 + 20, t_axis_deg=axis - 10, **noise)
    m = measure(signal)
    assert angle_difference(m["qrs_axis_deg"], axis) <= AXIS_DEG
    assert angle_difference(m["p_axis_deg"], truth.p_axis_deg) <= AXIS_DEG
    assert angle_difference(m["t_axis_deg"], truth.t_axis_deg) <= AXIS_DEG


def test_frontal_axis_uses_the_hexaxial_geometry():
    # A vector at 60° projects cos 60° on lead I and (√3/2)·sin 60° on aVF.
    theta = math.radians(60.0)
    assert frontal_axis(math.cos(theta), math.sqrt(3) / 2 * math.sin(theta)) == pytest.approx(60.0)
    assert frontal_axis(-1.0, 0.0) == pytest.approx(180.0)
    assert frontal_axis(0.0, -1.0) == pytest.approx(-90.0)


def test_no_p_wave_gives_no_pr_and_says_why():
    signal, _ = ecg(pr_ms=None, **NOISY)
    m = measure(signal)
    assert_explained(m)
    assert m["pr_ms"] is None and m["p_axis_deg"] is None
    assert m["p_wave_present"] is False
    assert "P wave" in m.reasons["pr_ms"]
    assert m["qrs_ms"] is not None and m["qt_ms"] is not None


def test_atrial_fibrillation_like_rhythm():
    signal, truth = ecg(pr_ms=None, fibrillation_mv=0.15, rr_jitter=0.25, heart_rate_bpm=80.0, noise_mv=0.01)
    m = measure(signal)
    assert m["p_wave_present"] is False
    assert m["pr_ms"] is None and "P wave" in m.reasons["pr_ms"]
    assert m["rr_irregularity"] > 0.1
    assert abs(m["heart_rate_bpm"] - truth.heart_rate_bpm) <= RATE_BPM
    assert abs(m["qrs_ms"] - truth.qrs_ms) <= INTERVAL_MS
    assert abs(m["qt_ms"] - truth.qt_ms) <= QT_MS


def test_flat_signal_gives_reasons_not_errors():
    m = measure(np.zeros((12, 5000), dtype=np.float32))
    assert_explained(m)
    assert m["heart_rate_bpm"] is None and m["qrs_ms"] is None
    assert m.median_beats is None
    assert "flat" in m.reasons["qrs_ms"]


def test_a_flat_lead_is_left_out_and_named():
    signal, truth = ecg()
    signal[LEADS.index("V3")] = 0.0
    m = measure(signal)
    assert_explained(m)
    assert m.lead_quality == {"V3": "flat"}
    assert m["cornell_mv"] is None and "V3" in m.reasons["cornell_mv"]
    assert m["st_j60_mv"]["V3"] is None and m["st_j60_mv"]["V5"] is not None
    assert abs(m["qrs_ms"] - truth.qrs_ms) <= INTERVAL_MS


def test_a_missing_lead_of_nan_is_left_out():
    signal, truth = ecg()
    signal[LEADS.index("I")] = np.nan
    m = measure(signal)
    assert_explained(m)
    assert m.lead_quality.get("I") == "flat"
    assert m["qrs_axis_deg"] is None and "lead I" in m.reasons["qrs_axis_deg"]
    assert abs(m["qt_ms"] - truth.qt_ms) <= QT_MS


def test_noise_everywhere_is_refused_with_the_reason():
    signal, _ = ecg(noise_mv=0.15, seed=3)
    m = measure(signal)
    assert_explained(m)
    assert m["qrs_ms"] is None and "noise" in m.reasons["qrs_ms"]


def test_too_short_and_single_beat_records():
    m = measure(ecg()[0][:, :500])
    assert_explained(m)
    assert "shorter" in m.reasons["heart_rate_bpm"]
    single, _ = ecg(heart_rate_bpm=30.0, seconds=2.5, noise_mv=0.005)
    m = measure(single)
    assert_explained(m)
    assert m["n_beats"] == 1
    assert m["heart_rate_bpm"] is None and "fewer than 2" in m.reasons["heart_rate_bpm"]


def test_zero_padding_of_a_short_canonical_record_is_ignored():
    signal, truth = ecg(seconds=7.0)
    padded = np.zeros((12, 5000), dtype=np.float32)
    padded[:, : signal.shape[1]] = signal
    m = measure(padded)
    assert abs(m["heart_rate_bpm"] - truth.heart_rate_bpm) <= RATE_BPM
    assert abs(m["qt_ms"] - truth.qt_ms) <= QT_MS


def test_paced_beats_are_not_measured():
    signal, _ = ecg(heart_rate_bpm=70.0)
    m0 = measure(signal)
    # A 2 ms stimulus of 4 mV, 40 ms before each QRS onset, in every lead.
    for fiducial in m0.qrs_samples:
        at = fiducial - round(0.09 * FS)
        signal[:, at] += 4.0
    m = measure(signal)
    assert_explained(m)
    assert m["heart_rate_bpm"] == pytest.approx(m0["heart_rate_bpm"], abs=RATE_BPM)
    assert m["qrs_ms"] is None and "paced" in m.reasons["qrs_ms"]
    assert criteria(m)["qrs_complete_bbb_width"].met is None


def test_median_beats_and_fiducials_for_plotting():
    signal, _ = ecg()
    m = measure(signal)
    assert m.median_beats.shape == (12, round(1.3 * FS)) and m.median_beats.dtype == np.float32
    f = m.fiducials
    assert f["p_onset"] < f["p_peak"] < f["p_offset"] < f["qrs_onset"] < f["qrs_fiducial"] < f["qrs_offset"] \
        < f["t_peak"] < f["t_offset"] < m.median_beats.shape[1]
    # Amplitudes are referred to the PR level: the beat is at 0 mV just before the QRS onset.
    assert np.abs(m.median_beats[:, f["qrs_onset"] - 3]).max() < 0.02


def test_voltages_on_known_amplitudes():
    signal, _ = ecg(qrs_axis_deg=0.0, qrs_mv=1.0)
    m = measure(signal)
    # Lead I carries the whole frontal vector: R 1.0 mV, Q −0.1, S −0.35 → peak to peak 1.35.
    assert m["limb_qrs_mv"]["I"] == pytest.approx(1.35, abs=0.05)
    # V1 is −0.9 × the complex (S 0.9 mV), V5 +1.4 × (R 1.4), V6 +1.1; aVL cos 30°·√3/2 = 0.75; V3 +0.4.
    assert m["sokolow_lyon_mv"] == pytest.approx(0.9 + 1.4, abs=0.06)
    assert m["cornell_mv"] == pytest.approx(0.75 + 0.4 * 0.35, abs=0.06)
    assert m["low_voltage_limb"] is False and m["low_voltage_chest"] is False
    low, _ = ecg(qrs_mv=0.25)
    m = measure(low)
    assert m["low_voltage_limb"] is True
    assert all(v < 0.5 for v in m["limb_qrs_mv"].values())


def test_st_level_at_j_plus_60():
    signal, _ = ecg()
    m = measure(signal)
    assert set(m["st_j60_mv"]) == set(LEADS)
    # The synthetic ST segment is isoelectric until the T wave starts 60 ms after the J point.
    assert max(abs(v) for v in m["st_j60_mv"].values()) < 0.05


def test_xqrs_detector_finds_the_same_beats():
    signal, _ = ecg(heart_rate_bpm=75.0, **NOISY)
    fused = measure(signal).qrs_samples
    xqrs = measure(signal, detector="xqrs").qrs_samples
    assert fused.size == xqrs.size
    assert np.abs(fused - xqrs).max() <= 0.03 * FS


def test_bad_input_shape_and_detector_are_errors():
    with pytest.raises(ValueError, match="12"):
        measure(np.zeros((8, 5000)))
    with pytest.raises(ValueError, match="detector"):
        measure(ecg()[0], detector="nope")


def test_measurements_refuse_an_unexplained_none():
    values = dict.fromkeys(KEYS, 1.0)
    values["pr_ms"] = None
    with pytest.raises(ValueError, match="pr_ms"):
        Measurements(values=values, reasons={})


# --- criteria -------------------------------------------------------------------------------


def made(**values) -> Measurements:
    full = dict.fromkeys(KEYS)
    full.update(values)
    reasons = {key: "not measured in this test" for key, value in full.items() if value is None}
    return Measurements(values=full, reasons=reasons)


def test_axis_criteria():
    assert criteria(made(qrs_axis_deg=-45))["left_axis_deviation"].met is True
    assert criteria(made(qrs_axis_deg=-30))["left_axis_deviation"].met is False
    assert criteria(made(qrs_axis_deg=120))["right_axis_deviation"].met is True
    assert criteria(made(qrs_axis_deg=90))["right_axis_deviation"].met is False
    northwest = criteria(made(qrs_axis_deg=-120))
    assert northwest["left_axis_deviation"].met is False and northwest["right_axis_deviation"].met is False
    missing = criteria(made())["left_axis_deviation"]
    assert missing.met is None and missing.reason == "not measured in this test"


def test_rate_criteria_need_a_p_wave_for_sinus():
    assert criteria(made(heart_rate_bpm=45.0, p_wave_present=True))["sinus_bradycardia"].met is True
    assert criteria(made(heart_rate_bpm=45.0, p_wave_present=False))["sinus_bradycardia"].met is False
    unknown = criteria(made(heart_rate_bpm=45.0))
    assert unknown["sinus_bradycardia"].met is None and unknown["sinus_bradycardia"].reason
    assert unknown["bradycardia"].met is True
    assert criteria(made(heart_rate_bpm=55.0, p_wave_present=True))["sinus_bradycardia"].met is False
    assert criteria(made(heart_rate_bpm=110.0, p_wave_present=True))["sinus_tachycardia"].met is True
    assert criteria(made(heart_rate_bpm=100.0, p_wave_present=True))["sinus_tachycardia"].met is False


def test_interval_criteria():
    assert criteria(made(pr_ms=210))["first_degree_av_block"].met is True
    assert criteria(made(pr_ms=200))["first_degree_av_block"].met is False
    wide = criteria(made(qrs_ms=124))
    assert wide["qrs_complete_bbb_width"].met is True and wide["qrs_incomplete_bbb_width"].met is False
    middle = criteria(made(qrs_ms=114))
    assert middle["qrs_complete_bbb_width"].met is False and middle["qrs_incomplete_bbb_width"].met is True


def test_sex_specific_limits_and_unknown_sex():
    m = made(qtc_ms=455, cornell_mv=2.5)
    assert criteria(m, sex="male")["long_qt"].met is True
    assert criteria(m, sex="female")["long_qt"].met is False
    unknown = criteria(m)
    assert unknown["long_qt"].met is False and "sex unknown" in unknown["long_qt"].threshold
    assert criteria(m, sex="female")["lvh_cornell"].met is True
    assert criteria(m, sex="male")["lvh_cornell"].met is False
    assert criteria(m)["lvh_cornell"].met is False and "sex unknown" in criteria(m)["lvh_cornell"].threshold
    with pytest.raises(ValueError):
        criteria(m, sex="m")


def test_voltage_criteria():
    assert criteria(made(sokolow_lyon_mv=3.6))["lvh_sokolow_lyon"].met is True
    assert criteria(made(sokolow_lyon_mv=3.4))["lvh_sokolow_lyon"].met is False
    assert criteria(made(low_voltage_limb=True))["low_voltage_limb"].met is True
    checks = criteria(made(low_voltage_chest=False))
    assert checks["low_voltage_chest"].met is False
    assert set(checks) == set(CRITERIA)
    json.dumps({name: check.to_dict() for name, check in checks.items()})


def test_criteria_name_real_registry_findings():
    registry = Path(__file__).resolve().parents[1] / "labels" / "findings.yaml"
    ids = {finding["id"] for finding in yaml.safe_load(registry.read_text(encoding="utf-8"))["findings"]}
    for name, findings in CRITERIA.items():
        assert set(findings) <= ids, f"{name}: {set(findings) - ids} not in the registry"
