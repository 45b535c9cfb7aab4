"""Text embedding: a tiny random-weight Llama built here stands in for the real model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ecgtool.cli import app
from lm_fixtures import build_tiny_llama
from ecgtool.ingest import IngestOptions, ingest
from ecgtool.registry import load_registry
from ecgtool.store import Store
from ecgtool.text import (
    TextModelError,
    collect_prompts,
    embed_prompts,
    embed_texts,
    load_text_model,
    model_fingerprint,
)
from ecgtool.text_cache import Prompt, read_cache

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "ptb-xl"


@pytest.fixture(scope="module")
def registry():
    return load_registry()


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory, registry) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), registry, seed=0)


@pytest.fixture(scope="module")
def other_llama(tmp_path_factory, registry) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("other-llama"), registry, seed=1)


@pytest.fixture(scope="module")
def loaded(tiny_llama):
    return load_text_model(tiny_llama)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    out = tmp_path_factory.mktemp("store") / "ptbxl"
    ingest([EXAMPLES], out, [EXAMPLES / "ptbxl_database.csv"], IngestOptions(workers=1))
    return Store(out)


SHORT = "この心電図は洞調律を示す。"
LONG = "This ECG shows " + ", ".join(["sinus rhythm", "left axis deviation", "first degree AV block"] * 6) + "."


def test_shapes_and_dtype(loaded):
    model, tokenizer = loaded
    vectors = embed_texts(model, tokenizer, [SHORT, LONG, "x"])
    assert vectors.shape == (3, 32) and vectors.dtype == np.float32
    assert np.isfinite(vectors).all()


@pytest.mark.parametrize("pooling", ["mean", "last"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_never_changes_a_vector(loaded, pooling, side):
    model, tokenizer = loaded
    tokenizer.padding_side = side
    try:
        alone = embed_texts(model, tokenizer, [SHORT], pooling=pooling)
        batched = embed_texts(model, tokenizer, [LONG, SHORT, LONG + LONG], pooling=pooling, batch_size=3)
    finally:
        tokenizer.padding_side = "right"
    np.testing.assert_allclose(batched[1], alone[0], atol=1e-5, rtol=0)


def test_pooling_and_layer_change_vectors(loaded):
    model, tokenizer = loaded
    mean = embed_texts(model, tokenizer, [SHORT, LONG], pooling="mean")
    last = embed_texts(model, tokenizer, [SHORT, LONG], pooling="last")
    first_layer = embed_texts(model, tokenizer, [SHORT, LONG], layer=1)
    assert not np.allclose(mean, last)
    assert not np.allclose(mean, first_layer)


def test_collect_prompts_counts(registry, store):
    prompts = collect_prompts(registry, store)
    for lang in ("ja", "en"):
        assert sum(p.kind == "label" and p.lang == lang for p in prompts) == 98
        assert sum(p.kind == "superset" and p.lang == lang for p in prompts) == 15
    reports = [p for p in prompts if p.kind == "report"]
    expected = set()
    for split in ("train", "val"):
        for shard in store.shards(split, with_signal=False):
            expected |= {(lang, t) for lang in ("ja", "en") for t in getattr(shard, f"prompt_{lang}") if t}
    assert len(reports) == len(expected) == len({(p.lang, p.text) for p in reports})
    assert {p.key for p in prompts if p.kind == "superset"} >= {"superclass/mi", "rhythm/sinus_rhythm"}


def test_cache_reuse_and_growth(tiny_llama, registry, tmp_path):
    prompts = collect_prompts(registry, langs=("en",))
    cache = tmp_path / "cache"
    first = embed_prompts(tiny_llama, prompts, cache, registry=registry)
    assert first.new == len({p.text for p in prompts}) and first.cached == 0
    again = embed_prompts(tiny_llama, prompts, cache, registry=registry)
    assert again.new == 0
    extra = Prompt("This ECG shows something new.", "report", "en", (), "")
    grown = embed_prompts(tiny_llama, [*prompts, extra], cache, registry=registry)
    assert grown.new == 1
    metadata, rows, vectors = read_cache(cache)
    assert rows[-1] == extra and vectors.shape == (len(prompts) + 1, 32)
    assert metadata["model_fingerprint"] == model_fingerprint(tiny_llama)
    assert metadata["registry_hash"] == registry.hash and metadata["pooling"] == "mean"
    # Cached rows are the same vectors a fresh embedding gives.
    model, tokenizer = load_text_model(tiny_llama)
    np.testing.assert_allclose(vectors[:3], embed_texts(model, tokenizer, [p.text for p in rows[:3]]), atol=1e-5)


def test_other_model_or_pooling_is_refused(tiny_llama, other_llama, registry, tmp_path):
    assert model_fingerprint(tiny_llama) != model_fingerprint(other_llama)
    prompts = collect_prompts(registry, langs=("ja",))[:5]
    cache = tmp_path / "cache"
    embed_prompts(tiny_llama, prompts, cache, registry=registry)
    with pytest.raises(TextModelError, match="model_fingerprint.*choose another --out"):
        embed_prompts(other_llama, prompts, cache, registry=registry)
    with pytest.raises(TextModelError, match="pooling.*choose another --out"):
        embed_prompts(tiny_llama, prompts, cache, pooling="last", registry=registry)


def test_not_a_model_is_one_line_error(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(TextModelError) as caught:
        load_text_model(tmp_path)
    message = str(caught.value)
    assert message.startswith(f"{tmp_path}: not a Hugging Face model folder or .gguf file (")
    assert "\n" not in message


def test_cli_embed_labels(tiny_llama, store):
    runner = CliRunner()
    result = runner.invoke(
        app, ["embed-labels", "--model", str(tiny_llama), "--store", str(store.directory), "--lang", "both"]
    )
    assert result.exit_code == 0, result.output
    cache = store.directory / "text-cache"
    metadata = json.loads((cache / "cache.json").read_text(encoding="utf-8"))
    assert metadata["hidden_size"] == 32
    again = runner.invoke(app, ["embed-labels", "--model", str(tiny_llama), "--store", str(store.directory)])
    assert again.exit_code == 0 and "0 new" in again.output
    bad = runner.invoke(app, ["embed-labels", "--model", str(store.directory), "--out", str(cache)])
    assert bad.exit_code == 1 and "not a Hugging Face model folder" in bad.output


def test_a_model_too_large_for_free_memory_is_refused_in_one_line(tiny_llama, monkeypatch):
    import os

    real_sysconf = os.sysconf
    monkeypatch.setattr(os, "sysconf", lambda name: 1 if name == "SC_AVPHYS_PAGES" else real_sysconf(name))
    with pytest.raises(TextModelError, match=r"the weights need about .* GiB in float32 .* but this machine has 0\.0 GiB free"):
        load_text_model(tiny_llama)
