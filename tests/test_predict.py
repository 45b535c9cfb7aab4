"""Bundle export/load and ``predict`` on real records, with a bundle from a tiny CPU training run."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ecgtool.bundle import BundleError, load_bundle
from ecgtool.cli import app
from ecgtool.errors import RecordError
from ecgtool.ingest import IngestOptions, ingest
from ecgtool.predict import ReadingOptions, predict_directory, predict_record
from ecgtool.registry import load_registry
from ecgtool.store import Store
from ecgtool.text import collect_prompts, embed_prompts
from ecgtool.training.train import TrainConfig, train
from lm_fixtures import build_tiny_llama

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "ptb-xl"
runner = CliRunner()


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory, shared_data) -> Path:
    root = tmp_path_factory.mktemp("predict")
    registry = load_registry()
    ingest([shared_data / "ptb-xl" / "records500" / "00000"], root / "store",
           metadata=[shared_data / "ptb-xl" / "ptbxl_database.csv"], options=IngestOptions(workers=2))
    model = build_tiny_llama(root / "tiny-llama", registry, seed=0)
    embed_prompts(model, collect_prompts(registry, Store(root / "store"), ("ja", "en")), root / "store" / "text-cache", registry=registry)
    train(root / "store", root / "store" / "text-cache", root / "run",
          TrainConfig(epochs=1, batch_size=4, max_records=8, device="cpu"))
    return root / "run" / "bundle"


def test_train_exports_a_bundle_with_its_input_contract(bundle_dir):
    description = json.loads((bundle_dir / "bundle.json").read_text())
    contract = description["input_contract"]
    assert contract["sampling_rate_hz"] == 500 and contract["n_samples"] == 5000 and contract["units"] == "mV"
    assert contract["lead_order"][:3] == ["I", "II", "III"] and contract["filters"] == []
    assert contract["language_model"]["pooling"] == "mean" and contract["language_model"]["model_fingerprint"]
    assert description["registry"]["hash"] == load_registry().hash
    assert description["languages"] == ["ja", "en"]
    bundle = load_bundle(bundle_dir)
    assert bundle.text["label/ja"].shape == (98, 512)
    assert torch.allclose(bundle.text["label/ja"].norm(dim=1), torch.ones(98), atol=1e-5)


@pytest.mark.device
def test_predict_one_record_in_japanese_and_english(bundle_dir, device):
    bundle = load_bundle(bundle_dir).to(torch.device(device))
    registry = load_registry()
    ja = predict_record(EXAMPLES / "00180_hr.hea", bundle, top=5, lang="ja", device=torch.device(device))
    en = predict_record(EXAMPLES / "00180_hr.dat", bundle, top=5, lang="en", device=torch.device(device))
    assert ja.record_id == "00180_hr" and len(ja.findings) >= 5  # the top 5, and every finding with a call
    # One reading whatever the language: the same findings, scores and calls; only the names differ.
    assert [(f.id, f.score, f.probability, f.present) for f in ja.findings] == [
        (f.id, f.score, f.probability, f.present) for f in en.findings]
    assert ja.findings[0].name == registry.finding(ja.findings[0].id).ja
    assert all(f.name == registry.finding(f.id).en for f in en.findings)
    scores = [f.score for f in ja.findings]
    assert scores == sorted(scores, reverse=True)
    assert 0 < sum(f.softmax_share for f in ja.findings) <= 1 + 1e-6
    superset = predict_record(EXAMPLES / "00180_hr.hea", bundle, top=5, lang="ja", superset="rhythm", device=torch.device(device))
    assert {f.id for f in superset.findings} == {c.id for c in registry.supersets["rhythm"]}


def test_record_that_cannot_meet_the_contract_is_one_line(bundle_dir, shared_data):
    bundle = load_bundle(bundle_dir)
    with pytest.raises(RecordError, match="100.hea: missing leads"):
        predict_record(shared_data / "wfdb-samples" / "100.hea", bundle)
    result = runner.invoke(app, ["predict", str(shared_data / "wfdb-samples" / "100.hea"), "--model", str(bundle_dir)])
    assert result.exit_code == 1
    assert result.output.strip().startswith("error: ") and "missing leads" in result.output and len(result.output.strip().splitlines()) == 1


def test_bundle_for_another_registry_is_refused(bundle_dir, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(bundle_dir, copy)
    description = json.loads((copy / "bundle.json").read_text())
    description["registry"]["hash"] = "0123456789abcdef"
    (copy / "bundle.json").write_text(json.dumps(description))
    with pytest.raises(BundleError, match="made for registry 0123456789abcdef"):
        load_bundle(copy)


def test_cli_table_json_and_plot(bundle_dir, tmp_path):
    table = runner.invoke(app, ["predict", str(EXAMPLES / "00318_hr.hea"), "--top", "5", "--model", str(bundle_dir)], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert "00318_hr: top 5 findings" in table.output and "所見" in table.output
    as_json = runner.invoke(app, ["predict", str(EXAMPLES / "00318_hr.hea"), "--json", "--lang", "en", "--model", str(bundle_dir)])
    payload = json.loads(as_json.output)
    assert payload["record_id"] == "00318_hr" and len(payload["findings"]) == 5
    png = tmp_path / "ecg.png"
    plotted = runner.invoke(app, ["predict", str(EXAMPLES / "00318_hr.hea"), "--plot", str(png), "--model", str(bundle_dir)])
    assert plotted.exit_code == 0 and png.stat().st_size > 50_000
    from PIL import Image

    image = np.asarray(Image.open(png).convert("RGB")).astype(int)
    reddish = (image[..., 0] > 200) & (image[..., 1] < 200)  # the grid paper
    dark = image.sum(axis=2) < 150  # the traces and the text
    assert reddish.mean() > 0.02 and dark.mean() > 0.005


@pytest.mark.device
def test_directory_scoring_with_skip_list_and_resume(bundle_dir, shared_data, tmp_path, device):
    bundle = load_bundle(bundle_dir).to(torch.device(device))
    out = tmp_path / "scores.csv"
    folder = shared_data / "challenge" / "cinc2021"
    result = predict_directory([folder], out, bundle, ReadingOptions(top=3), workers=2, batch_size=16, device=torch.device(device))
    n_records = len(list(folder.glob("*.hea")))
    assert result.scored + result.skipped == n_records and result.skipped == 2
    with open(out, encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == result.scored and {"top1_id", "top3_probability"} <= rows[0].keys()
    skips = list(csv.DictReader(open(str(out) + ".skipped.csv", encoding="utf-8")))
    assert {s["record"] for s in skips} == {"JS20004", "JS20008"} and "flat lead" in skips[0]["reason"]
    # A run cut short mid-line resumes without redoing or duplicating records.
    text = out.read_text(encoding="utf-8").splitlines(keepends=True)
    out.write_text("".join(text[:10]) + text[10][:15], encoding="utf-8")
    again = predict_directory([folder], out, bundle, ReadingOptions(top=3), workers=1, device=torch.device(device))
    assert again.already_done == 9 and again.scored == result.scored - 9
    with open(out, encoding="utf-8") as handle:
        assert sorted(r["record_id"] for r in csv.DictReader(handle)) == sorted(r["record_id"] for r in rows)
