"""The training fast path (``--compile``, losses read every N steps) and the fast encoder, on the
``--device`` of the pytest run (CPU by default; ``pytest --device cuda tests/test_compile.py``
on a GPU, as ``benchmarks/device_check.sh`` does).

torch.compile here is the default backend, inductor, which generates C++ (CPU) or Triton (CUDA)
kernels: on 2 CPU cores this file takes ~40 s with a warm inductor cache and 2-3.5 min without
one (the first compile of the encoder's forward and backward), so the compiled training runs
share one small store and one test.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

import ecgtool.training.train as train_module
from ecgtool.bundle import resolve_bundle
from ecgtool.fast_encoder import FastEncoder
from ecgtool.ingest import IngestOptions, ingest
from ecgtool.registry import load_registry
from ecgtool.store import Store
from ecgtool.text import collect_prompts, embed_prompts
from ecgtool.training.train import TrainConfig, TrainError, train
from lm_fixtures import build_tiny_llama

pytestmark = pytest.mark.device

# Deterministic runs: cuBLAS's workspace and the restored torch switches are set up in conftest.py.

# Compiled against eager, after 2 optimizer steps on 4 records: two different sets of kernels, so
# never bit-equal. Inductor fuses the batch norms, the convolutions' epilogues and the loss, so
# sums run in another order: on the CPU the weights differ by ~1e-5 after one step and ~5e-5 after
# two (batch-norm running variances; measured 2026-12-01), growing from there as any two roundings
# of a run on 4 records do (~4e-3 after 6). On CUDA the fp32 convolutions run on TF32 tensor cores
# (cuDNN's default: 10-bit mantissa, ~5e-4 relative per product) with other algorithms in the
# eager and the compiled graph: 1.11e-3 measured after 2 steps on an H200 (2026-12-04, torch 2.11,
# cudnn.benchmark on); 5e-3 leaves 4.5x for the deterministic algorithms' other choices. (With
# Adam's eps at 0.01 a step moves a weight by at most ~lr = 1e-3, so a sign-level disagreement
# over two steps would still show above it in the running statistics.)
COMPILED_ATOL = {"cpu": 2e-4, "cuda": 5e-3}


@pytest.fixture(scope="module")
def small_store(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("compile")
    registry = load_registry()
    records = sorted((shared_data / "ptb-xl" / "records500" / "00000").glob("*.hea"))[:40]
    ingest(records, root / "store", metadata=[shared_data / "ptb-xl" / "ptbxl_database.csv"], options=IngestOptions(workers=1))
    model = build_tiny_llama(root / "tiny-llama", registry, seed=0)
    cache_dir = root / "store" / "text-cache"
    embed_prompts(model, collect_prompts(registry, Store(root / "store"), ("ja", "en")), cache_dir, registry=registry)
    return root / "store", cache_dir


def _config(device: str, **changes) -> TrainConfig:
    # fp32 on every device (bf16 would dominate the compiled-vs-eager difference); a large Adam
    # eps keeps the update proportional to the gradient (with 1e-8 a parameter whose gradient is
    # rounding noise moves by ±lr on a coin flip), as in tests/test_train.py's torchrun test.
    # Deterministic on CUDA, where cuDNN's timed algorithm choices and atomic reductions make two
    # runs of the same steps differ (6e-3 after 6 steps, measured): every same-kernel comparison
    # below is then bit-exact there too. The CPU is deterministic already (and a compile in this
    # mode would miss the inductor cache: another 2-3 minutes on 2 cores).
    base = dict(epochs=2, batch_size=4, max_records=12, device=device, seed=0, eps=0.01, precision="fp32",
                deterministic=torch.device(device).type == "cuda")
    base.update(changes)
    return TrainConfig(**base)


def _weights(checkpoint: Path) -> dict:
    return torch.load(checkpoint, weights_only=False, map_location="cpu")["model"]


def _largest_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())


def test_compiled_training_equals_eager_and_resumes_exactly(small_store, tmp_path, device):
    store_dir, cache_dir = small_store
    device_type = torch.device(device).type
    eager = train(store_dir, cache_dir, tmp_path / "eager", _config(device, compile="off"), stop_after_steps=2)
    first = train(store_dir, cache_dir, tmp_path / "resumed", _config(device, compile="on"), stop_after_steps=2)
    assert (first.state.epoch, first.state.step_in_epoch) == (0, 2)
    difference = _largest_difference(_weights(eager.last_checkpoint), _weights(first.last_checkpoint))
    print(f"compiled vs eager ({device}): largest weight difference after 2 steps {difference:.2e}")
    assert difference < COMPILED_ATOL[device_type]
    assert first.state.last_loss == pytest.approx(eager.state.last_loss, rel=1e-4)

    resumed = train(store_dir, cache_dir, tmp_path / "resumed", _config(device, compile="on"), resume=True)
    straight = train(store_dir, cache_dir, tmp_path / "straight", _config(device, compile="on"))
    assert resumed.state.global_step == straight.state.global_step == 6
    difference = _largest_difference(_weights(straight.last_checkpoint), _weights(resumed.last_checkpoint))
    print(f"compiled, resumed vs straight ({device}): largest weight difference {difference:.2e}")
    # Bit-exact on every device (deterministic on CUDA): anything else is a resume bug, not rounding.
    assert difference == 0.0
    # epoch 2's logged loss too (epoch 1's covers only the resumed call's steps)
    assert resumed.state.history[1]["train_loss"] == straight.state.history[1]["train_loss"]


def test_reading_losses_every_few_steps_changes_no_weight_or_figure(small_store, tmp_path, device):
    store_dir, cache_dir = small_store
    reports: list[tuple[int, float]] = []
    every_step = train(store_dir, cache_dir, tmp_path / "every", _config(device, log_every_steps=1))
    # 4 does not divide the 3 steps of an epoch: the window is read at each epoch's end too.
    batched = train(store_dir, cache_dir, tmp_path / "batched", _config(device, log_every_steps=4),
                    on_step=lambda step, total, loss, rate: reports.append((step, loss)))
    assert _largest_difference(_weights(every_step.last_checkpoint), _weights(batched.last_checkpoint)) == 0.0
    assert [h["train_loss"] for h in every_step.state.history] == [h["train_loss"] for h in batched.state.history]
    assert batched.state.last_loss == every_step.state.last_loss
    assert [step for step, _ in reports] == [3, 6]  # one report per read, not one per step
    assert reports[-1][1] == batched.state.last_loss


def test_a_non_finite_loss_read_late_still_names_its_step_and_is_never_saved(small_store, tmp_path, device, monkeypatch):
    store_dir, cache_dir = small_store
    made: list = []

    class PoisonedLoss(train_module.ClipLoss):
        """The training loss (the first one made; validation makes its own) turns NaN at its 5th step."""

        calls = 0

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

        def forward(self, *args, **kwargs):
            loss = super().forward(*args, **kwargs)
            if self is not made[0]:
                return loss
            self.calls += 1
            return loss * float("nan") if self.calls == 5 else loss  # step 2 of epoch 2

    monkeypatch.setattr(train_module, "ClipLoss", PoisonedLoss)
    run = tmp_path / "run"
    with pytest.raises(TrainError, match=r"loss is nan at epoch 2, step 2 \(records "):
        train(store_dir, cache_dir, run, _config(device, log_every_steps=50))
    saved = torch.load(run / "checkpoints" / "last.pt", weights_only=False)["state"]
    assert saved["global_step"] == 3  # the end of epoch 1: nothing after the poisoned step's window began


@contextmanager
def _without_tf32():
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_fast_encoder_equals_the_bundle_and_its_compiled_form_is_close(device):
    bundle = resolve_bundle(None)
    rng = np.random.default_rng(0)
    signals = (0.3 * rng.standard_normal((10, 12, 5000))).astype(np.float16)  # 10: not a multiple of the batch
    reference = bundle.to(torch.device(device)).embed(torch.from_numpy(signals).to(device).float()).cpu().numpy()
    if torch.device(device).type == "cpu":
        plain = FastEncoder(bundle, device, batch_size=4, compile="off", bf16="off").encode(signals)
        # The CPU path is Bundle.embed itself, batch by batch: equal to the bit over the same
        # batches (oneDNN may block a batch of 4 and one of 10 differently: 4e-8 at one thread).
        by_batch = np.concatenate([bundle.embed(torch.from_numpy(signals[i:i + 4]).float()).numpy() for i in range(0, 10, 4)])
        assert np.array_equal(plain, by_batch)
        np.testing.assert_allclose(plain, reference, atol=1e-6)
    else:
        # Batches of 4 against one of 10: cuDNN may run other algorithms, and with TF32 (its
        # default for fp32 convolutions, 10-bit mantissa) they differ by 3.0e-5 (H200, measured).
        # In true fp32 (13 more bits: ~8,000x finer products) the same comparison must hold to 1e-5.
        with _without_tf32():
            reference = bundle.embed(torch.from_numpy(signals).to(device).float()).cpu().numpy()
            plain = FastEncoder(bundle, device, batch_size=4, compile="off", bf16="off").encode(signals)
        np.testing.assert_allclose(plain, reference, atol=1e-5)
    assert plain.shape == (10, reference.shape[1]) and plain.dtype == np.float32
    # As predict and bench run it on the device: compiled (a padded last batch), bf16 on CUDA.
    fast = FastEncoder(bundle, device, batch_size=4, compile="on").encode(iter([signals[:4], signals[4:8], signals[8:]]))
    cosine = (fast * reference).sum(axis=1)
    print(f"fast encoder ({device}, bf16 {torch.device(device).type == 'cuda'}): smallest cosine to the reference {cosine.min():.6f}")
    assert cosine.min() > (0.999 if torch.device(device).type == "cuda" else 0.99999)


def test_store_rows_read_by_offset_equal_hdf5s_own_read(small_store, tmp_path, device):
    import h5py

    from ecgtool.store import ShardRows, store_batches

    store = Store(small_store[0])
    paths = store.shard_paths("train") + store.shard_paths("val")
    batches = list(store_batches(paths, 7))  # 7: batches end inside shards and at their ends
    assert all(batch.offsets is not None for batch in batches)  # ingest's layout: read with os.preadv
    expected = np.concatenate([h5py.File(path, "r")["signal"][()] for path in paths])
    assert np.array_equal(np.concatenate([np.asarray(batch) for batch in batches]), expected)
    into = np.full(batches[1].shape, np.nan, dtype=np.float16)
    batches[1].read_into(into)
    assert np.array_equal(into, expected[7:14])
    # Another layout (compressed, several rows per chunk) is read through h5py.
    with h5py.File(tmp_path / "other.h5", "w") as other:
        other.create_dataset("signal", data=expected[:10], chunks=(4, 12, 5000), compression="gzip")
    (rows,) = store_batches([tmp_path / "other.h5"], 16)
    assert rows.offsets is None and np.array_equal(np.asarray(rows), expected[:10])
    # The fast encoder reads them so on the device (into pinned buffers on CUDA).
    bundle = resolve_bundle(None)
    from_store = FastEncoder(bundle, device, batch_size=7).encode(store_batches(paths, 7))
    from_arrays = FastEncoder(bundle, device, batch_size=7).encode(iter([np.asarray(batch) for batch in batches]))
    assert np.array_equal(from_store, from_arrays) and isinstance(batches[0], ShardRows)
