"""The default model shipped in the package: it loads, predicts, and its card's figures reproduce."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


from ecgtool.bench.run import per_label_accuracy
from ecgtool.bundle import DEFAULT_BUNDLE, load_bundle
from ecgtool.model import ModelConfig, input_filters
from ecgtool.predict import predict_record
from ecgtool.registry import load_registry
from ecgtool.signal import input_contract
from ecgtool.store import Store

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "ptb-xl"


def test_default_bundle_matches_this_installation():
    bundle = load_bundle(DEFAULT_BUNDLE)
    contract = bundle.contract
    expected = input_contract()
    for key in ("sampling_rate_hz", "n_samples", "lead_order", "units", "canonical_form_version"):
        assert contract[key] == expected[key], key
    # The canonical form filters nothing; the model's own band-limit is declared, as the model builds it.
    model_filters = input_filters(ModelConfig.from_dict(bundle.description["model"]), expected["sampling_rate_hz"])
    assert model_filters and contract["filters"] == expected["filters"] + model_filters
    assert contract["language_model"]["model_fingerprint"] and contract["text_language"] == "both"
    assert bundle.description["languages"] == ["ja", "en"]
    assert bundle.description["registry"]["hash"] == load_registry().hash


def test_readme_main_command_prints_five_japanese_findings():
    done = subprocess.run([sys.executable, "-m", "ecgtool.cli", "predict", str(EXAMPLES / "00299_hr.hea"), "--top", "5"],
                          capture_output=True, text=True, env={**os.environ, "COLUMNS": "160"}, cwd=REPO)
    assert done.returncode == 0, done.stderr
    registry = load_registry()
    prediction = predict_record(EXAMPLES / "00299_hr.hea", load_bundle(DEFAULT_BUNDLE), top=5)
    for finding in prediction.findings:
        assert registry.finding(finding.id).ja in done.stdout


def test_held_out_figures_of_the_model_card_reproduce(public_store):
    """Re-ingest the public records exactly as scripts/default-model-store.sh does and recompute
    the test-split figures of the bench baseline (quoted in docs/model-card.md) within one pair."""
    baseline = json.loads((REPO / "benchmarks" / "baselines" / "default-model.json").read_text())
    stored = baseline["per_label"]["all"]["ours"]["ja"]
    store = Store(public_store)
    result = per_label_accuracy(load_bundle(DEFAULT_BUNDLE), store, "test", "ja")
    tolerance = 100.0 / stored["pairs"]  # one pair's worth: float rounding may swap two near-equal scores
    assert result["pairs"] == stored["pairs"]
    assert abs(result["top1"] - stored["top1"]) <= tolerance and abs(result["top5"] - stored["top5"]) <= tolerance
