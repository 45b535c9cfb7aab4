"""Training on real ingested records with a tiny random-weight LM's text vectors (CPU).

Slow by nature (a ResNet1d-18 step on 12 × 5000 inputs takes ~0.1 s per record on 2 cores), so
the runs are small: a few dozen records, batches of 4–16.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ecgtool.ingest import IngestOptions, ingest
from ecgtool.model import EcgTextModel, ModelConfig
from ecgtool.registry import load_registry
from ecgtool.store import Store
from ecgtool.text import collect_prompts, embed_prompts
from ecgtool.text_cache import load_text_cache
from ecgtool.training.data import TrainingDataError, load_split
from ecgtool.training.train import TrainConfig, TrainError, train, validate
from lm_fixtures import build_tiny_llama

# Deterministic runs: cuBLAS's workspace and the restored torch switches are set up in conftest.py.


@pytest.fixture(scope="module")
def store_and_cache(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("train")
    registry = load_registry()
    store_dir = root / "store"
    ingest(
        [shared_data / "ptb-xl" / "records500" / "00000"],
        store_dir,
        metadata=[shared_data / "ptb-xl" / "ptbxl_database.csv"],
        options=IngestOptions(workers=2),
    )
    model = build_tiny_llama(root / "tiny-llama", registry, seed=0)
    cache_dir = store_dir / "text-cache"
    embed_prompts(model, collect_prompts(registry, Store(store_dir), ("ja", "en")), cache_dir, registry=registry)
    return store_dir, cache_dir


def _config(**changes) -> TrainConfig:
    base = dict(epochs=2, batch_size=4, max_records=12, device="cpu", seed=0)
    base.update(changes)
    return TrainConfig(**base)


@pytest.mark.device
def test_tiny_run_lowers_the_loss_and_retrieves_far_above_an_untrained_model(store_and_cache, tmp_path, device):
    store_dir, cache_dir = store_and_cache
    config = _config(epochs=6, batch_size=16, max_records=48, lr=1e-3, schedule="constant", device=device)
    result = train(store_dir, cache_dir, tmp_path / "run", config)
    losses = [epoch["train_loss"] for epoch in result.state.history]
    # ln(16) is the loss of a model that cannot tell the 16 pairs of a batch apart.
    assert len(losses) == 6 and losses[-1] < 0.85 * losses[0] and losses[-1] < math.log(16), losses

    registry = load_registry()
    cache = load_text_cache(cache_dir)
    data = load_split(Store(store_dir), "train", cache, "ja", max_records=48)
    labels = torch.tensor(cache.label_rows(registry, "ja"))
    model_config = ModelConfig(text_dim=cache.vectors.shape[1])
    trained = EcgTextModel(model_config)
    trained.load_state_dict(torch.load(result.last_checkpoint, weights_only=False, map_location="cpu")["model"])
    torch.manual_seed(0)
    untrained = EcgTextModel(model_config)
    after = validate(trained, data, labels, config, torch.device("cpu"))
    before = validate(untrained, data, labels, config, torch.device("cpu"))
    print(f"same-subset retrieval: untrained top1 {before['val_top1']:.1f} top5 {before['val_top5']:.1f}; "
          f"trained top1 {after['val_top1']:.1f} top5 {after['val_top5']:.1f} over {after['val_pairs']} pairs")
    assert after["val_top5"] >= before["val_top5"] + 25
    log = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(log) == 6 and '"val_top1"' in log[0]


def _weights(checkpoint: Path) -> dict:
    return torch.load(checkpoint, weights_only=False)["model"]


def _assert_same_weights(a: dict, b: dict, atol: float = 0.0):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=atol, rtol=0 if atol == 0 else 1e-5, msg=key)


@pytest.mark.device
def test_resume_after_stop_reaches_the_uninterrupted_weights(store_and_cache, tmp_path, device):
    store_dir, cache_dir = store_and_cache
    # The resume tests run deterministic (train --deterministic), so that on CUDA too a resumed run
    # equals the uninterrupted one to the bit: any difference is a resume bug, not rounding.
    config = _config(device=device, deterministic=True)
    assert "deterministic" not in config.recipe()  # a run may be resumed with or without it
    straight = train(store_dir, cache_dir, tmp_path / "straight", config)
    assert straight.state.global_step == 6
    assert torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.benchmark
    first = train(store_dir, cache_dir, tmp_path / "resumed", config, stop_after_steps=2)
    assert (first.state.epoch, first.state.step_in_epoch) == (0, 2)  # stopped mid-epoch
    resumed = train(store_dir, cache_dir, tmp_path / "resumed", config, resume=True)
    assert resumed.state.global_step == 6
    _assert_same_weights(_weights(straight.last_checkpoint), _weights(resumed.last_checkpoint))
    with pytest.raises(TrainError, match="holds a run already"):
        train(store_dir, cache_dir, tmp_path / "resumed", config)
    with pytest.raises(TrainError, match="another recipe"):
        train(store_dir, cache_dir, tmp_path / "resumed", _config(lr=5e-4, device=device, deterministic=True), resume=True)


@pytest.mark.device
def test_resume_is_exact_with_both_languages_label_prompts_augmentation_and_band_limit(store_and_cache, tmp_path, device):
    store_dir, cache_dir = store_and_cache
    config = _config(lang="both", label_prompt_prob=0.5, mask_implied_texts=True, augment=True,
                     input_lowpass_hz=40.0, input_decimation=5, device=device, deterministic=True)
    straight = train(store_dir, cache_dir, tmp_path / "straight", config)
    first = train(store_dir, cache_dir, tmp_path / "resumed", config, stop_after_steps=2)
    assert first.state.step_in_epoch == 2
    resumed = train(store_dir, cache_dir, tmp_path / "resumed", config, resume=True)
    _assert_same_weights(_weights(straight.last_checkpoint), _weights(resumed.last_checkpoint))
    record = straight.state.history[-1]
    assert {"val_macro_auroc_ja", "val_macro_auroc_en", "val_top1_ja", "val_top1_en"} <= record.keys()
    # the band-limit is declared in the contract the checkpoint (and so the bundle) carries
    filters = torch.load(straight.last_checkpoint, weights_only=False)["metadata"]["input_contract"]["filters"]
    assert [f["cutoff_hz"] for f in filters] == [40.0] and filters[0]["decimation"] == 5


def test_streaming_from_the_shards_equals_training_in_memory(store_and_cache, tmp_path):
    store_dir, cache_dir = store_and_cache
    in_memory = train(store_dir, cache_dir, tmp_path / "memory", _config(stream="never"))
    streamed = train(store_dir, cache_dir, tmp_path / "streamed", _config(stream="always", loader_workers=2))
    _assert_same_weights(_weights(in_memory.last_checkpoint), _weights(streamed.last_checkpoint))
    assert streamed.state.history[-1]["val_top5"] == in_memory.state.history[-1]["val_top5"]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "ecgtool.cli", "train", *args]


def _kill_after_first_checkpoint(process: subprocess.Popen, progress_file: Path, timeout: float = 300) -> dict | None:
    """SIGKILL ``process`` as soon as its progress file (a small JSON rewritten after every
    checkpoint) shows one before the last step; the progress seen, or None if there was none."""
    deadline, seen = time.monotonic() + timeout, None
    while process.poll() is None and time.monotonic() < deadline:
        if progress_file.exists():
            seen = json.loads(progress_file.read_text())  # written whole, by a rename
            if seen["global_step"] < seen["total_steps"]:
                break
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    return seen


@pytest.mark.device
def test_kill_minus_9_mid_epoch_then_resume(store_and_cache, tmp_path, device):
    store_dir, cache_dir = store_and_cache
    args = ["--store", str(store_dir), "--epochs", "2", "--batch-size", "4", "--max-records", "12",
            "--device", device, "--checkpoint-every-steps", "1", "--deterministic"]
    subprocess.run(_cli(*args, "--out", str(tmp_path / "straight")), check=True, capture_output=True)
    finished = json.loads((tmp_path / "straight" / "checkpoints" / "progress.json").read_text())
    assert finished == {"epoch": 2, "step_in_epoch": 0, "global_step": 6, "total_steps": 6}
    run = tmp_path / "killed"
    process = subprocess.Popen(_cli(*args, "--out", str(run)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen = _kill_after_first_checkpoint(process, run / "checkpoints" / "progress.json")
    assert process.returncode == -signal.SIGKILL, f"the run ended (status {process.returncode}) before it could be killed"
    assert seen is not None and seen["global_step"] < 6, f"no checkpoint before the last step to kill after: {seen}"
    last = run / "checkpoints" / "last.pt"
    killed_at = torch.load(last, weights_only=False)["state"]
    assert 1 <= killed_at["global_step"] < 6, f"killed after the last checkpoint: {killed_at}"
    subprocess.run(_cli(*args, "--out", str(run), "--resume"), check=True, capture_output=True)
    _assert_same_weights(_weights(tmp_path / "straight" / "checkpoints" / "last.pt"), _weights(last))


def test_torchrun_two_ranks_match_one_process(store_and_cache, tmp_path):
    store_dir, cache_dir = store_and_cache
    # A large Adam eps keeps the update proportional to the gradient: with 1e-8, parameters whose
    # gradient is at rounding-noise level move by ±lr on a coin flip in either run.
    args = ["--store", str(store_dir), "--epochs", "1", "--batch-size", "8", "--max-records", "16", "--device", "cpu", "--eps", "0.01"]
    subprocess.run(_cli(*args, "--out", str(tmp_path / "single")), check=True, capture_output=True)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "ecgtool.cli", "train"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*torchrun, *args, "--out", str(tmp_path / "ddp")], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    single = torch.load(tmp_path / "single" / "checkpoints" / "last.pt", weights_only=False)
    ddp = torch.load(tmp_path / "ddp" / "checkpoints" / "last.pt", weights_only=False)
    assert ddp["state"]["global_step"] == single["state"]["global_step"] == 2
    assert math.isclose(ddp["state"]["last_loss"], single["state"]["last_loss"], rel_tol=1e-5)
    # Float sums in another order, over two steps: ~2e-5 measured; per-rank batch norm gives ~1e-3.
    _assert_same_weights(single["model"], ddp["model"], atol=1e-4)


def test_mismatched_inputs_fail_before_training(store_and_cache, tmp_path):
    store_dir, cache_dir = store_and_cache
    other_cache = tmp_path / "cache"
    shutil.copytree(cache_dir, other_cache)
    meta = other_cache / "cache.json"
    meta.write_text(meta.read_text().replace(load_registry().hash, "0000000000000000"))
    with pytest.raises(TrainingDataError, match="made with registry 0000000000000000"):
        train(store_dir, other_cache, tmp_path / "run", _config())
    with pytest.raises(TrainError, match="does not split evenly over"):
        os.environ["WORLD_SIZE"] = "3"
        try:
            train(store_dir, cache_dir, tmp_path / "run2", _config())
        finally:
            del os.environ["WORLD_SIZE"]


@pytest.mark.device
def test_resume_is_exact_with_the_label_loss_weight_average_and_cosine_schedule(store_and_cache, tmp_path, device):
    store_dir, cache_dir = store_and_cache
    config = _config(lang="both", label_prompt_prob=0.5, mask_implied_texts=True, label_loss_weight=1.0,
                     ema_decay=0.9, schedule="cosine", warmup_steps=2, select_by="val_macro_auroc", device=device,
                     deterministic=True)
    straight = train(store_dir, cache_dir, tmp_path / "straight", config)
    first = train(store_dir, cache_dir, tmp_path / "resumed", config, stop_after_steps=3)
    assert first.state.step_in_epoch == 3
    resumed = train(store_dir, cache_dir, tmp_path / "resumed", config, resume=True)
    atol = 0.0
    straight_payload = torch.load(straight.last_checkpoint, weights_only=False)
    resumed_payload = torch.load(resumed.last_checkpoint, weights_only=False)
    _assert_same_weights(straight_payload["model"], resumed_payload["model"], atol)
    _assert_same_weights(straight_payload["ema"], resumed_payload["ema"], atol)
    # the label sigmoid is trained (it moved from its initial values), the average lags the weights
    model = straight_payload["model"]
    assert model["label_logit_bias"].item() != -4.0
    assert any(not torch.equal(model[k], straight_payload["ema"][k]) for k in model if model[k].is_floating_point())
    # the bundle holds the averaged weights, as validated
    from safetensors.torch import load_file
    exported = load_file(str(tmp_path / "straight" / "bundle" / "model.safetensors"))
    best = torch.load(tmp_path / "straight" / "checkpoints" / "best.pt", weights_only=False)["ema"]
    key = "ecg_projection.weight"
    torch.testing.assert_close(exported[key].float(), best[key].half().float())


def test_supervised_baseline_trains_its_head_and_is_not_exported_as_a_bundle(store_and_cache, tmp_path):
    store_dir, cache_dir = store_and_cache
    config = _config(objective="supervised", epochs=4, batch_size=8, max_records=24, schedule="constant")
    result = train(store_dir, cache_dir, tmp_path / "supervised", config)
    losses = [epoch["train_loss"] for epoch in result.state.history]
    assert losses[-1] < 0.7 * losses[0], losses
    payload = torch.load(result.last_checkpoint, weights_only=False)
    assert payload["model"]["finding_head.weight"].shape == (98, 512)
    # no text side is trained: the text projection keeps its initial weights
    torch.manual_seed(0)
    assert not (tmp_path / "supervised" / "bundle").exists()
    from ecgtool.bundle import BundleError, export_bundle
    with pytest.raises(BundleError, match="supervised baseline"):
        export_bundle(result.last_checkpoint, cache_dir, tmp_path / "bundle")
    with pytest.raises(TrainError, match="objective must be"):
        train(store_dir, cache_dir, tmp_path / "other", _config(objective="regression"))
