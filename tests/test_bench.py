"""``ecgtool bench``: the metrics on hand-made inputs, then the command on the shipped default
model and the public held-out records, the regression gate, and its one-line errors."""

from __future__ import annotations

import csv
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from ecgtool.bench.run import published_per_label, published_superset, regressions
from ecgtool.metrics import auroc, superset_accuracy, top1_confusions
from ecgtool.bundle import DEFAULT_BUNDLE, load_bundle
from ecgtool.registry import load_registry

REPO = Path(__file__).resolve().parents[1]
BASELINE = REPO / "benchmarks" / "baselines" / "default-model.json"


def _cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ecgtool.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "COLUMNS": "400"})


# --- metrics ----------------------------------------------------------------------------------

def test_auroc_equals_the_fraction_of_correctly_ordered_pairs():
    rng = np.random.default_rng(3)
    scores = np.round(rng.normal(size=60), 1)  # rounding makes ties, which count half
    positives = rng.random(60) < 0.3
    pairs = [(p, n) for p, n in itertools.product(scores[positives], scores[~positives])]
    by_pairs = np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs])
    assert auroc(scores, positives) == pytest.approx(by_pairs, abs=1e-12)
    assert auroc(-scores, positives) == pytest.approx(1 - by_pairs, abs=1e-12)
    assert np.isnan(auroc(scores, np.zeros(60, bool)))


def test_superset_accuracy_any_of_rule_and_left_out_records():
    # 4 records, 3 classes: one single-class right, one two-class right through its second class,
    # one single-class wrong, one with no class (left out).
    truth = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 1], [0, 0, 0]], bool)
    scores = np.array([[0.9, 0.1, 0.0], [0.0, 0.2, 0.8], [0.7, 0.1, 0.2], [0.9, 0.0, 0.0]])
    result = superset_accuracy(scores, truth)
    assert (result["records"], result["correct"], result["left_out"], result["multi_class"]) == (3, 2, 1, 1)
    assert result["accuracy"] == pytest.approx(200 / 3)
    assert result["single_class_accuracy"] == pytest.approx(50.0)
    assert result["per_class"][1] == {"count": 1, "correct": 1, "accuracy": 100.0}  # judged by the any-of rule
    assert result["per_class"][2] == {"count": 2, "correct": 1, "accuracy": 50.0}


def test_confusions_count_only_top1_labels_absent_from_the_report():
    findings = np.array([[1, 0, 0], [1, 0, 0], [1, 1, 0], [0, 0, 1]])
    scores = np.array([[0.1, 0.9, 0.0], [0.1, 0.0, 0.9], [0.1, 0.9, 0.0], [0.0, 0.9, 0.1]])
    confusions = top1_confusions(scores, findings)
    # Record 2's top-1 is label 1, which its report has: not a confusion of label 0.
    assert confusions[0] == [(1, 1), (2, 1)]
    assert confusions[2] == [(1, 1)] and 1 not in confusions


def test_gate_names_what_dropped_and_ignores_rises():
    before = {"headline": {"per_label/ja/top1": 30.0, "per_label/ja/top5": 50.0, "superset/rhythm/prompt/ja/accuracy": None}}
    now = {"headline": {"per_label/ja/top1": 27.5, "per_label/ja/top5": 58.0, "superset/rhythm/prompt/ja/accuracy": 1.0}}
    assert regressions(now, before, 2.0) == ["per_label/ja/top1: 30.00 -> 27.50 (-2.50 points)"]
    assert regressions(now, before, 3.0) == []


# --- published figures ------------------------------------------------------------------------

def test_published_figures_equal_the_reference_copy_and_name_registry_findings(shared_data):
    paper = shared_data.parent / "paper"
    with open(paper / "table9_per_label_accuracy.csv", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    shipped = published_per_label()
    assert len(shipped) == len(rows) == 99
    for row in rows:
        assert shipped[row["finding_en"]]["top1"] == float(row["top1_pct"])
    registry = load_registry()
    assert {f.en for f in registry.findings} == set(shipped) - {"all labels"}
    superset = published_superset()
    for test, classes in registry.supersets.items():
        assert {c.en for c in classes} | {"all"} == set(superset[test])


# --- the command on the default model ---------------------------------------------------------

def test_bench_on_the_default_model_prints_what_it_writes_and_passes_the_gate(public_store, tmp_path):
    out_json, out_md, out_png = tmp_path / "bench.json", tmp_path / "bench.md", tmp_path / "bench.png"
    done = _cli("bench", "--store", str(public_store), "--json", str(out_json), "--markdown", str(out_md),
                "--plot", str(out_png), "--baseline", str(BASELINE), "--max-drop", "2.0")
    assert done.returncode == 0, done.stderr
    result = json.loads(out_json.read_text(encoding="utf-8"))
    assert result["records"] == json.loads(BASELINE.read_text())["records"] > 0
    markdown = out_md.read_text(encoding="utf-8")
    # Every headline figure is on the terminal and in the Markdown exactly as in the JSON.
    for key, value in result["headline"].items():
        line = re.compile(rf"{re.escape(key)}\s*[│|]\s*{value:.2f}\b")
        assert line.search(done.stdout), key
        assert line.search(markdown), key
    # The "all labels" row carries our pairs and top-1/top-5 beside the paper's Table 9 figures.
    ours, paper = result["per_label"]["all"]["ours"]["ja"], result["per_label"]["all"]["paper"]
    all_row = next(line for line in done.stdout.splitlines() if "all labels" in line)
    cells = [cell.strip() for cell in re.split(r"[│|]", all_row) if cell.strip()]
    assert cells[2:5] == [str(ours["pairs"]), f"{ours['top1']:.1f}", f"{ours['top5']:.1f}"]
    assert cells[-3:] == [str(paper["count"]), f"{paper['top1']:.1f}", f"{paper['top5']:.1f}"] == ["7710", "35.9", "44.8"]
    # Superset tables show the paper's two systems beside ours.
    for test in ("superclass", "rhythm", "mitbih"):
        assert result["superset"][test]["prompt"]["ja"]["records"] > 0
    assert "64.1" in done.stdout and "60.5" in done.stdout  # paper superclass "all": MedLlama3-JP-v2, Swallow
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The findings a measurement supports, read three ways, as predict reads them.
    combined = {c.finding for c in load_bundle(DEFAULT_BUNDLE).calibration.combined if c.fitted}
    measured = result["measured_findings"]
    assert {row["id"] for row in measured["findings"]} == combined and measured["measured"] == measured["records"]
    assert "The findings a measurement supports" in markdown and "The findings a measurement supports" in done.stdout
    by_id = {row["id"]: row for row in result["calibration"]["languages"]["reading"]["findings"]}
    assert all(by_id[finding]["read_with_measurement"] for finding in combined)


def test_gate_fails_on_a_damaged_bundle_naming_the_figures(public_store, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(DEFAULT_BUNDLE, damaged)
    weights = load_file(damaged / "model.safetensors")
    rng = np.random.default_rng(0)
    for name, value in weights.items():
        if name.startswith("ecg_encoder.") and name.endswith("conv2.weight"):
            noise = rng.normal(scale=float(value.astype(np.float32).std()), size=value.shape)
            weights[name] = (value.astype(np.float32) + noise).astype(value.dtype)
    save_file(weights, damaged / "model.safetensors")
    # A worse model, not a corrupted file: its bundle.json records the new bytes' checksum.
    from ecgtool.files import file_sha256

    description = json.loads((damaged / "bundle.json").read_text())
    description["files"]["model.safetensors"]["sha256"] = file_sha256(damaged / "model.safetensors")
    del description["calibration"]  # fitted for the weights replaced here: it would be refused
    (damaged / "bundle.json").write_text(json.dumps(description))
    done = _cli("bench", "--store", str(public_store), "--model", str(damaged), "--lang", "ja",
                "--baseline", str(BASELINE), "--max-drop", "2.0")
    assert done.returncode == 1, done.stdout[-2000:]
    error = done.stderr.strip()
    assert error.startswith("error: regression against") and "per_label/ja/top1" in error and len(error.splitlines()) == 1


def test_a_bundle_of_another_registry_is_a_one_line_error(public_store, tmp_path):
    other = tmp_path / "other-registry"
    shutil.copytree(DEFAULT_BUNDLE, other)
    description = json.loads((other / "bundle.json").read_text())
    description["registry"]["hash"] = "0000000000000000"
    (other / "bundle.json").write_text(json.dumps(description))
    done = _cli("bench", "--store", str(public_store), "--model", str(other))
    assert done.returncode == 1
    assert done.stderr.startswith("error: ") and "registry" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_an_empty_test_split_is_a_one_line_error(tmp_path):
    examples = REPO / "examples" / "ptb-xl"
    splits = tmp_path / "all-train.csv"
    splits.write_text("record,split\n" + "".join(f"{p.stem},train\n" for p in examples.glob("*.hea")))
    store = tmp_path / "store"
    built = _cli("ingest", str(examples), "--metadata", str(splits), "--out", str(store))
    assert built.returncode == 0, built.stderr
    done = _cli("bench", "--store", str(store))
    assert done.returncode == 1
    assert done.stderr.strip() == f"error: {store}: the test split is empty (nothing to benchmark)"
