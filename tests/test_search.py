"""``ecgtool embed`` and ``ecgtool search`` on real records: the shipped default model over the
public store (findings, an example ECG, filters, the combination rule, the retrieval figures),
and a tiny trained bundle with its tiny LM for free-text queries and the embedding file's rules."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from ecgtool.bundle import BUNDLE_JSON, DEFAULT_BUNDLE, TEXT_PROJECTION, TEXT_VECTORS, load_bundle
from ecgtool.embeddings import (EmbeddingsError, EmbeddingWriter, bundle_fingerprint, default_embeddings_path,
                                embed_store, read_embeddings)
from ecgtool.registry import load_registry
from ecgtool.bench.retrieval import retrieval_figures, retrieval_markdown
from ecgtool.search import (Filters, SearchError, combine, finding_parts, like_file_parts, like_id_parts,
                            open_search_space, search, similarities, text_parts, top_rows)
from ecgtool.files import file_sha256
from ecgtool.store import Store, read_shard
from ecgtool.training.train import TrainConfig, train
from lm_fixtures import build_tiny_llama, small_labelled_store

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "ptb-xl" / "00299_hr.hea"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ecgtool.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, "COLUMNS": "300"})


def _one_line_error(done: subprocess.CompletedProcess, *fragments: str) -> None:
    assert done.returncode == 1, (done.returncode, done.stdout[-1000:], done.stderr[-2000:])
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr[-3000:]
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])


# --- the combination rule on hand-made similarities -------------------------------------------

def test_combination_rule_wants_every_part_high_on_its_own_scale():
    # Part 0 scores everything around 0.8 (small spread), part 1 around 0.1 (large spread).
    cosines = np.array([
        [0.80, 0.10],   # average on both
        [0.90, 0.10],   # far above on part 0 only
        [0.80, 0.50],   # far above on part 1 only
        [0.85, 0.35],   # clearly above on both: the one all parts rank high
        [0.75, -0.15],
        [0.70, 0.00],
    ])
    z = (cosines - cosines.mean(0)) / cosines.std(0)
    scores = combine(cosines)
    np.testing.assert_allclose(scores, z.min(axis=1))
    assert top_rows(scores, None, 1)[0] == 3
    # Raw cosines summed would have picked a one-sided record instead.
    assert np.argmax(cosines.sum(1)) != 3
    # One part: the ranking is the cosine's.
    assert list(top_rows(combine(cosines[:, [1]]), None, 6)) == list(np.argsort(-cosines[:, 1], kind="stable"))
    # A part on which every record scores alike does not decide.
    flat = np.column_stack([cosines[:, 0], np.full(6, 0.3)])
    assert list(top_rows(combine(flat), None, 6)) == list(top_rows(np.minimum(z[:, 0], 0.0), None, 6))
    with pytest.raises(SearchError):
        combine(np.zeros((6, 0)))


def test_chunked_similarities_equal_a_float64_product_in_every_path():
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((1000, 64)).astype(np.float32)
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float16)
    for p in (1, 3, 20):  # one float16 product per query, and the float32 cast for many queries
        queries = torch.nn.functional.normalize(torch.randn(p, 64, generator=torch.Generator().manual_seed(p)), dim=1)
        exact = vectors.astype(np.float64) @ queries.double().numpy().T
        got = similarities(vectors, queries, chunk_rows=128)
        assert got.shape == (1000, p)
        np.testing.assert_allclose(got, exact, atol=2e-3)
    mask = np.zeros(1000, bool)
    mask[::7] = True
    rows = top_rows(exact[:, 0], mask, 5)
    assert all(mask[rows]) and list(rows) == list(np.flatnonzero(mask)[np.argsort(-exact[mask, 0])][:5])


def test_commands_are_registered_on_the_app_and_refuse_an_empty_query_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from ecgtool.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["search", "--store", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == ["error: nothing to search for: give --finding, --text, --like or --like-id"]
    result = runner.invoke(app, ["embed", "--store", str(tmp_path)])
    assert result.exit_code == 1 and "not an ecgtool store" in result.output
    _one_line_error(_cli("search", "--store", tmp_path, "--finding", "AF"), "not an ecgtool store")


# --- the shipped model over the public store -------------------------------------------------

@pytest.fixture(scope="module")
def shipped(public_store, tmp_path_factory):
    """The public store embedded with the shipped default model, through the CLI."""
    if not (DEFAULT_BUNDLE / BUNDLE_JSON).is_file():
        pytest.skip("this installation ships no default model")
    path = tmp_path_factory.mktemp("search-shipped") / "embeddings.h5"
    done = _cli("embed", "--store", public_store, "--out", path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"in {path}" in done.stdout
    return public_store, path


def _search_json(store, embeddings, *args) -> dict:
    done = _cli("search", "--store", store, "--embeddings", embeddings, "--json", *args)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_embed_writes_one_unit_vector_per_record_and_a_rerun_adds_none(shipped):
    store_dir, path = shipped
    store = Store(store_dir)
    embeddings = read_embeddings(path, load_bundle(DEFAULT_BUNDLE))
    ids = [record_id for shard in store.shards(with_signal=False) for record_id in shard.record_id]
    assert sorted(embeddings.record_ids) == sorted(ids)
    norms = np.linalg.norm(embeddings.vectors.astype(np.float32), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=2e-3)
    before = file_sha256(path)
    done = _cli("embed", "--store", store_dir, "--out", path)
    assert done.returncode == 0 and done.stdout.startswith("0 records embedded"), done.stdout
    assert file_sha256(path) == before


def test_atrial_fibrillation_query_returns_mostly_atrial_fibrillation_records(shipped):
    store_dir, path = shipped
    store = Store(store_dir)
    registry = load_registry()
    index = registry.index("atrial_fibrillation")
    test_labels = np.concatenate([s.findings for s in store.shards("test", with_signal=False)])
    base_rate = test_labels[:, index].mean()
    result = _search_json(store_dir, path, "--finding", "心房細動", "--top", "20", "--split", "test")
    hits = result["hits"]
    assert len(hits) == 20 and all(h["split"] == "test" for h in hits)
    precision = np.mean(["atrial_fibrillation" in h["findings"] for h in hits])
    print(f"--finding 心房細動 --top 20 on the test split: precision {precision:.2f}, base rate {base_rate:.3f}")
    assert precision >= 0.7 and precision > 5 * base_rate
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    # The English name, a synonym and the id are the same query.
    for term in ("Atrial Fibrillation", "AFib", "atrial_fibrillation"):
        again = _search_json(store_dir, path, "--finding", term, "--top", "20", "--split", "test")
        assert [h["record_id"] for h in again["hits"]] == [h["record_id"] for h in hits], term


def test_two_findings_rank_first_the_records_that_have_both(shipped):
    store_dir, path = shipped
    registry = load_registry()
    store = Store(store_dir)
    labels = np.concatenate([s.findings for s in store.shards(with_signal=False)])
    both_rate = (labels[:, registry.index("atrial_fibrillation")] & labels[:, registry.index("complete_right_bundle_branch_block")]).mean()
    result = _search_json(store_dir, path, "--finding", "心房細動", "--finding", "完全右脚ブロック", "--top", "10")
    both = [h for h in result["hits"] if {"atrial_fibrillation", "complete_right_bundle_branch_block"} <= set(h["findings"])]
    print(f"AF + CRBBB: {len(both)} of 10 hits have both (store rate {both_rate:.4f})")
    assert len(both) >= 5 and len(both) / 10 > 20 * both_rate
    single = _search_json(store_dir, path, "--finding", "心房細動", "--top", "10")
    assert sum({"atrial_fibrillation", "complete_right_bundle_branch_block"} <= set(h["findings"]) for h in single["hits"]) < len(both)


def test_like_a_record_file_finds_its_own_stored_copy_then_other_patients(shipped, tmp_path):
    store_dir, path = shipped
    result = _search_json(store_dir, path, "--like", EXAMPLE, "--top", "20")
    first = result["hits"][0]
    assert first["record_id"] == "00299_hr" and first["cosines"][0] > 0.99
    patient = first["patient_id"]
    done = _cli("search", "--store", store_dir, "--embeddings", path, "--like", EXAMPLE, "--exclude-patient",
                "--top", "5", "--out", tmp_path / "hits.csv", "--plot", tmp_path / "plots")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = list(csv.DictReader(open(tmp_path / "hits.csv", encoding="utf-8")))
    others = [h["record_id"] for h in result["hits"] if h["patient_id"] != patient]
    assert [r["record_id"] for r in rows] == others[:5]
    pictures = sorted((tmp_path / "plots").glob("*.png"))
    assert len(pictures) == 5 and pictures[0].name == f"001-{rows[0]['record_id']}.png" and pictures[0].stat().st_size > 10_000


def test_like_id_leaves_out_the_record_and_filters_hold(shipped):
    store_dir, path = shipped
    registry = load_registry()
    bundle = load_bundle(DEFAULT_BUNDLE)
    space = open_search_space(Store(store_dir), bundle, path)
    parts = like_id_parts(space, ["00299_hr"])
    result = search(space, parts, registry, Filters(), top=5)
    assert "00299_hr" not in [h.record_id for h in result.hits]
    from_file = like_file_parts(bundle, [EXAMPLE])
    assert float(from_file[0].vector @ parts[0].vector) > 0.99
    lbbb = registry.index("complete_left_bundle_branch_block")
    filters = Filters(splits=("val", "test"), present=("left_ventricular_hypertrophy",), absent=("complete_left_bundle_branch_block",))
    result = search(space, parts, registry, filters, top=30)
    assert result.hits and result.eligible < len(space)
    for hit in result.hits:
        row = space.findings[hit.row]
        assert hit.split in ("val", "test") and row[registry.index("left_ventricular_hypertrophy")] and not row[lbbb]
    sourced = search(space, finding_parts(bundle, registry, ["AF"]), registry, Filters(sources=("cinc2020-cpsc2018/",)), top=10)
    assert sourced.hits and all(h.source.startswith("cinc2020-cpsc2018/") for h in sourced.hits)
    with pytest.raises(SearchError, match="--finding no-such-thing: not a finding id"):
        finding_parts(bundle, registry, ["no-such-thing"])
    with pytest.raises(SearchError, match="--like-id nope: no such record"):
        like_id_parts(space, ["nope"])


def test_retrieval_figures_on_the_test_split_beat_chance(shipped):
    store_dir, path = shipped
    registry = load_registry()
    bundle = load_bundle(DEFAULT_BUNDLE)
    space = open_search_space(Store(store_dir), bundle, path)
    test = np.asarray(space.splits) == "test"
    figures = retrieval_figures(space.vectors[test], space.findings[test], np.asarray(space.patient_ids)[test],
                                bundle, registry, ("ja", "en"))
    json.dumps(figures, allow_nan=False)
    counts = space.findings[test].sum(axis=0)
    for lang in ("ja", "en", "both"):
        queries = figures["finding_queries"][lang]
        assert queries["findings"] == int((counts >= 10).sum())
        assert queries["mean_precision_at_10"] > 3 * queries["mean_base_rate"]
    af = next(r for r in figures["finding_queries"]["both"]["per_finding"] if r["id"] == "atrial_fibrillation")
    assert af["positives"] == counts[registry.index("atrial_fibrillation")] and af["precision_at_10"] >= 70
    ecg = figures["ecg_queries"]
    assert ecg["queries"] == int(space.findings[test].any(axis=1).sum())
    assert ecg["share_sharing_a_finding"] > 1.5 * ecg["chance"]
    markdown = retrieval_markdown(figures)
    assert "| Atrial Fibrillation | 心房細動 |" in markdown


def test_retrieval_figures_on_hand_made_embeddings():
    registry = load_registry()
    bundle = load_bundle(DEFAULT_BUNDLE) if (DEFAULT_BUNDLE / BUNDLE_JSON).is_file() else pytest.skip("no default model")
    label = bundle.text["label/ja"].float().numpy()
    af = registry.index("atrial_fibrillation")
    # 100 records: 20 with AF embedded at its label vector, the rest random; two records per patient.
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((100, label.shape[1])).astype(np.float32)
    vectors[:20] = label[af] + 0.01 * vectors[:20]
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    findings = np.zeros((100, 98), np.uint8)
    findings[:20, af] = 1
    findings[20:, registry.index("normal")] = 1
    patients = [f"p{i // 2}" for i in range(100)]
    figures = retrieval_figures(vectors, findings, patients, bundle, registry, ("ja",))
    row = next(r for r in figures["finding_queries"]["ja"]["per_finding"] if r["id"] == "atrial_fibrillation")
    assert (row["positives"], row["base_rate"], row["precision_at_10"], row["precision_at_50"]) == (20, 20.0, 100.0, 40.0)
    ecg = figures["ecg_queries"]
    # An AF query's candidates: 18 other-patient AF records of 98; a normal one's: 78 of 98.
    assert ecg["chance"] == pytest.approx(100 * (20 * 18 / 98 + 80 * 78 / 98) / 100)
    assert ecg["share_sharing_a_finding"] > ecg["chance"]


# --- a tiny trained bundle: free text, the embedding file's rules ---------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory, shared_data):
    """40 PTB-XL records, a tiny LM's text cache and a bundle trained on them for one epoch."""
    root = tmp_path_factory.mktemp("search-tiny")
    store, lm = small_labelled_store(root, shared_data)
    train(store, store / "text-cache", root / "run", TrainConfig(epochs=1, batch_size=4, max_records=8, device="cpu"))
    return store, root / "run" / "bundle", lm


def test_bundle_carries_the_text_projection_and_free_text_goes_through_it(tiny):
    store, bundle_dir, lm = tiny
    description = json.loads((bundle_dir / BUNDLE_JSON).read_text())
    assert description["files"][TEXT_PROJECTION]["tensors"] == {"text_projection.weight": [512, 32]}
    bundle = load_bundle(bundle_dir)
    registry = load_registry()
    # The label prompt as free text lands on the bundle's label vector (same LM, pooling, projection).
    texts = [registry.prompt(["atrial_fibrillation"], "ja"), registry.prompt(["complete_left_bundle_branch_block"], "en")]
    parts = text_parts(bundle, lm, texts)
    np.testing.assert_allclose(parts[0].vector.numpy(), bundle.text["label/ja"][registry.index("atrial_fibrillation")].numpy(), atol=2e-3)
    np.testing.assert_allclose(parts[1].vector.numpy(), bundle.text["label/en"][registry.index("complete_left_bundle_branch_block")].numpy(), atol=2e-3)
    # Another LM (other weights, same shapes) is refused by its fingerprint.
    other = build_tiny_llama(store.parent / "other-llama", registry, seed=1)
    with pytest.raises(SearchError, match="language model fingerprint .* the bundle was trained with"):
        text_parts(bundle, other, texts)


def test_search_text_end_to_end_and_refused_for_a_bundle_without_text_projection(tiny, tmp_path):
    store, bundle_dir, lm = tiny
    done = _cli("embed", "--store", store, "--model", bundle_dir)
    assert done.returncode == 0, done.stderr[-2000:]
    bundle = load_bundle(bundle_dir)
    assert default_embeddings_path(store, bundle).is_file()
    done = _cli("search", "--store", store, "--model", bundle_dir, "--text", "洞調律、正常心電図", "--lm", lm, "--top", "3", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["query"] == [{"kind": "text", "what": "洞調律、正常心電図"}] and len(result["hits"]) == 3
    _one_line_error(_cli("search", "--store", store, "--model", bundle_dir, "--text", "x"), "--text needs --lm")
    old = tmp_path / "old-bundle"
    shutil.copytree(bundle_dir, old)
    description = json.loads((old / BUNDLE_JSON).read_text())
    del description["files"][TEXT_PROJECTION]
    (old / BUNDLE_JSON).write_text(json.dumps(description))
    (old / TEXT_PROJECTION).unlink()
    assert load_bundle(old).text_projection is None
    _one_line_error(_cli("search", "--store", store, "--model", old, "--text", "x", "--lm", lm),
                    "predates free-text search", "re-export")


def _foreign_copy(bundle_dir: Path, out: Path) -> Path:
    """The same bundle with one label vector changed: another fingerprint, still a valid bundle."""
    shutil.copytree(bundle_dir, out)
    vectors = load_file(str(out / TEXT_VECTORS))
    vectors["label/ja"][0] = torch.nn.functional.normalize(vectors["label/ja"][0] + 0.1 * vectors["label/ja"][1], dim=0)
    save_file(vectors, str(out / TEXT_VECTORS))
    description = json.loads((out / BUNDLE_JSON).read_text())
    description["files"][TEXT_VECTORS]["sha256"] = file_sha256(out / TEXT_VECTORS)
    description.pop("calibration", None)  # fitted for the original weights
    for calibration in out.glob("calibration-*.json"):
        calibration.unlink()
    (out / BUNDLE_JSON).write_text(json.dumps(description))
    return out


def test_a_foreign_bundle_is_refused_by_the_embedding_file(tiny, tmp_path):
    store, bundle_dir, _ = tiny
    path = tmp_path / "embeddings.h5"
    bundle = load_bundle(bundle_dir)
    embed_store(Store(store), bundle, path)
    foreign = load_bundle(_foreign_copy(bundle_dir, tmp_path / "foreign"))
    assert bundle_fingerprint(foreign) != bundle_fingerprint(bundle)
    before = file_sha256(path)
    with pytest.raises(EmbeddingsError, match="holds the embeddings of another bundle"):
        embed_store(Store(store), foreign, path)
    assert file_sha256(path) == before and not path.with_name(path.name + ".tmp").exists()
    _one_line_error(_cli("embed", "--store", store, "--model", tmp_path / "foreign", "--out", path),
                    str(path), "another bundle", bundle_fingerprint(bundle))
    _one_line_error(_cli("search", "--store", store, "--model", tmp_path / "foreign", "--embeddings", path, "--finding", "AF"),
                    "another bundle")
    # Without --embeddings the foreign bundle looks for its own file, which does not exist yet.
    _one_line_error(_cli("search", "--store", store, "--model", tmp_path / "foreign", "--finding", "AF"),
                    "run `ecgtool embed")


def test_embedding_is_incremental_and_keeps_what_was_there(tiny, tmp_path):
    store_dir, bundle_dir, _ = tiny
    store = Store(store_dir)
    bundle = load_bundle(bundle_dir)
    full = embed_store(store, bundle, tmp_path / "full.h5")
    reference = read_embeddings(full.path, bundle)
    assert full.embedded == len(reference) == sum(s["records"] for s in store.manifest["shards"])
    # A file holding every record but those of one shard: a re-run embeds exactly that shard.
    left_out = read_shard(store.shard_paths()[-1], with_signal=False).record_id
    keep = [i for i, r in enumerate(reference.record_ids) if r not in set(left_out)]
    partial = tmp_path / "partial.h5"
    with EmbeddingWriter(partial, bundle) as writer:
        for shard_sha256 in dict.fromkeys(reference.shard_sha256[keep]):  # each vector keyed to its shard
            rows = [i for i in keep if reference.shard_sha256[i] == shard_sha256]
            writer.append([reference.record_ids[i] for i in rows], reference.vectors[rows].astype(np.float32),
                          [reference.patient_ids[i] for i in rows], shard_sha256.decode("ascii"))
    kept_before = read_embeddings(partial, bundle)
    result = embed_store(store, bundle, partial)
    assert (result.embedded, result.already) == (len(left_out), len(keep))
    after = read_embeddings(partial, bundle)
    assert after.record_ids[: len(keep)] == kept_before.record_ids
    np.testing.assert_array_equal(after.vectors[: len(keep)], kept_before.vectors)
    assert sorted(after.record_ids[len(keep):]) == sorted(left_out)
    row = {r: i for i, r in enumerate(reference.record_ids)}
    np.testing.assert_allclose(after.vectors[len(keep):].astype(np.float32),
                               reference.vectors[[row[r] for r in after.record_ids[len(keep):]]].astype(np.float32), atol=2e-3)
    assert embed_store(store, bundle, partial).embedded == 0
    # Ids already in the file are skipped; a batch of the wrong width is refused, file untouched.
    with EmbeddingWriter(partial, bundle) as writer:
        assert writer.append(after.record_ids[:2], after.vectors[:2].astype(np.float32)) == 0
    before = file_sha256(partial)
    with pytest.raises(EmbeddingsError, match="expected"):
        with EmbeddingWriter(partial, bundle) as writer:
            writer.append(["new"], np.zeros((1, 7), np.float32))
    assert file_sha256(partial) == before
    with h5py.File(partial, "r") as handle:
        assert handle.attrs["bundle_fingerprint"] == bundle_fingerprint(bundle)


def test_search_refuses_a_store_not_wholly_embedded(tiny, tmp_path):
    store_dir, bundle_dir, _ = tiny
    bundle = load_bundle(bundle_dir)
    path = tmp_path / "two.h5"
    reference = read_embeddings(embed_store(Store(store_dir), bundle, tmp_path / "all.h5").path, bundle)
    with EmbeddingWriter(path, bundle) as writer:
        writer.append(reference.record_ids[:2], reference.vectors[:2].astype(np.float32))
    with pytest.raises(SearchError, match=f"lacks the embeddings of {len(reference) - 2} records"):
        open_search_space(Store(store_dir), bundle, path)
