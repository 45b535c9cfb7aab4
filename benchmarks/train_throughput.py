"""Training throughput: ``ecgtool train`` end to end against a plain eager PyTorch loop.

Both run the same model, loss and optimizer on the same records of an ingested store with a text
cache (``ecgtool ingest`` + ``ecgtool embed-labels``), in the same run:

* ``ecgtool train``: the library call, from the HDF5 store, full steps (AdamW, clipping,
  scheduler), timed over ``--steps`` steps after ``--warmup`` steps;
* baseline: a plain loop of forward, loss, backward, ``optimizer.step()`` in fp32 on batches
  already in memory on the device.

Usage: python benchmarks/train_throughput.py --store STORE [--text-cache DIR] [--batch-sizes 32 256]
                                             [--steps 20] [--warmup 3] [--device cuda]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from ecgtool.loss import ClipLoss
from ecgtool.model import EcgTextModel, ModelConfig
from ecgtool.store import Store
from ecgtool.train import TrainConfig, train
from ecgtool.training_data import load_split, load_text_cache


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def eager_baseline(store: Path, cache_dir: Path, batch_size: int, steps: int, warmup: int, device: torch.device) -> float:
    cache = load_text_cache(cache_dir)
    data = load_split(Store(store), "train", cache, "ja")
    model = EcgTextModel(ModelConfig(text_dim=cache.vectors.shape[1])).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-3)
    loss_fn = ClipLoss()
    index = torch.arange(batch_size) % len(data)
    signals = data.signals[index].float().to(device)
    texts = data.text_vectors[data.text_index[index]].to(device)
    for step in range(warmup + steps):
        if step == warmup:
            _synchronize(device)
            started = time.perf_counter()
        loss = loss_fn(*model(signals, texts))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    _synchronize(device)
    return batch_size * steps / (time.perf_counter() - started)


def ecgtool_train(store: Path, cache_dir: Path, batch_size: int, steps: int, warmup: int, device: torch.device) -> float:
    config = TrainConfig(batch_size=batch_size, epochs=1000, device=str(device))
    times: list[float] = []

    def on_step(step, total, loss, samples_per_second):
        _synchronize(device)
        times.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as out:
        train(store, cache_dir, out, config, on_step=on_step, stop_after_steps=warmup + steps)
    return batch_size * steps / (times[-1] - times[warmup - 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--text-cache", type=Path)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    cache_dir = args.text_cache or args.store / "text-cache"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}")
    for batch_size in args.batch_sizes:
        baseline = eager_baseline(args.store, cache_dir, batch_size, args.steps, args.warmup, device)
        ours = ecgtool_train(args.store, cache_dir, batch_size, args.steps, args.warmup, device)
        print(f"batch {batch_size:4d}: ecgtool train {ours:9.1f} samples/s | plain eager fp32 loop {baseline:9.1f} samples/s")


if __name__ == "__main__":
    main()
