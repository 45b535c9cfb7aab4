"""Training throughput: ``ecgtool train`` end to end against a plain eager loop and a typical
DataLoader loop, on the same records, in the same run.

All three run the same model, loss and optimizer on the train split of an ingested store with a
text cache (``ecgtool ingest`` + ``ecgtool embed-labels``):

* ``ecgtool train``: the library call, from the HDF5 store, full steps (AdamW, clipping,
  scheduler, the fast path of ``--compile``), timed over ``--steps`` steps after ``--warmup``
  steps (compilation and CUDA-graph recording happen in the warm-up). Losses are read back every
  ``--log-every`` steps as the CLI does; the figure counts the steps' time only, not the
  validation and checkpoint at an epoch's end (``wall_samples_per_second`` includes them);
* eager loop: forward, loss, backward, ``optimizer.step()`` in fp32 on one batch already in
  device memory, no compile (the fastest a plain loop gets: no data loading at all);
* typical loop: what a PyTorch user writes first: a ``Dataset`` reading one record per
  ``__getitem__`` from the HDF5 shards, a shuffling ``DataLoader`` with ``--loader-workers``
  processes (pinned memory on CUDA), fp16 autocast with a ``GradScaler`` on CUDA (fp32 on the
  CPU), ``loss.item()`` every step.

Usage: python benchmarks/train_throughput.py --store STORE [--text-cache DIR] [--batch-sizes 32 256]
       [--steps 20] [--warmup 3] [--device cuda] [--compile auto] [--log-every 10]
       [--loader-workers 8] [--loops ecgtool eager typical] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from ecgtool.training.loss import ClipLoss
from ecgtool.model import EcgTextModel, ModelConfig
from ecgtool.store import Store
from ecgtool.training.train import TrainConfig, train
from ecgtool.text_cache import load_text_cache
from ecgtool.training.data import load_split

LOOPS = ("ecgtool", "eager", "typical")


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def eager_baseline(store: Path, cache_dir: Path, batch_size: int, steps: int, warmup: int, device: torch.device) -> float:
    cache = load_text_cache(cache_dir)
    data = load_split(Store(store), "train", cache, "ja")
    model = EcgTextModel(ModelConfig(text_dim=cache.vectors.shape[1])).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-3)
    loss_fn = ClipLoss()
    index = torch.arange(batch_size) % len(data)
    signals = data.signals[index].float().to(device)
    texts = data.text_vectors[data.text_index[index, 0]].to(device)
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


class _RecordDataset(torch.utils.data.Dataset):
    """One record per item, read from its shard on demand (each worker opens its own files)."""

    def __init__(self, locations: list[tuple[str, int]], text_vectors: torch.Tensor, text_rows: torch.Tensor):
        self.locations, self.text_vectors, self.text_rows = locations, text_vectors, text_rows
        self._files: dict = {}

    def __len__(self) -> int:
        return len(self.locations)

    def __getitem__(self, index: int):
        import h5py

        path, row = self.locations[index]
        if path not in self._files:
            self._files[path] = h5py.File(path, "r")
        signal = torch.from_numpy(self._files[path]["signal"][row].astype("float32"))
        return signal, self.text_vectors[self.text_rows[index]]


def typical_loop(store: Path, cache_dir: Path, batch_size: int, steps: int, warmup: int, device: torch.device,
                 workers: int) -> float:
    cache = load_text_cache(cache_dir)
    data = load_split(Store(store), "train", cache, "ja", with_signals=False)
    dataset = _RecordDataset(data.locations, data.text_vectors, data.text_index[:, 0])
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True,
                                         num_workers=workers, pin_memory=device.type == "cuda",
                                         persistent_workers=workers > 0)
    model = EcgTextModel(ModelConfig(text_dim=cache.vectors.shape[1])).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-3)
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    loss_fn = ClipLoss()
    step = 0
    while step < warmup + steps:
        for signals, texts in loader:
            if step == warmup:
                _synchronize(device)
                started = time.perf_counter()
            signals, texts = signals.to(device, non_blocking=True), texts.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                loss = loss_fn(*model(signals, texts))
            optimizer.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            loss.item()  # the usual per-step log line
            step += 1
            if step == warmup + steps:
                break
    _synchronize(device)
    return batch_size * steps / (time.perf_counter() - started)


def ecgtool_train(store: Path, cache_dir: Path, batch_size: int, steps: int, warmup: int, device: torch.device,
                  compile: str = "auto", log_every: int = 0) -> dict:
    """Steps' samples/s (windows after the warm-up) and wall-clock samples/s of ``train``."""
    config = TrainConfig(batch_size=batch_size, epochs=1000, device=str(device), compile=compile, log_every_steps=log_every)
    every = config.resolved_log_every(device)
    reports: list[tuple[int, float, float]] = []  # (global step, window samples/s, clock)

    def on_step(step, total, loss, samples_per_second):
        reports.append((step, samples_per_second, time.perf_counter()))

    warmup = -(-warmup // every) * every  # whole windows
    steps = max(every, -(-steps // every) * every)
    with tempfile.TemporaryDirectory() as out:
        train(store, cache_dir, out, config, on_step=on_step, stop_after_steps=warmup + steps)
    timed = [(step, rate) for step, rate, _ in reports if step > warmup]
    seconds = 0.0
    previous = warmup
    for step, rate in timed:
        seconds += (step - previous) * batch_size / rate
        previous = step
    before = [clock for step, _, clock in reports if step <= warmup]
    wall = (reports[-1][2] - before[-1]) if before else float("nan")
    return {
        "samples_per_second": (previous - warmup) * batch_size / seconds,
        "wall_samples_per_second": (previous - warmup) * batch_size / wall,
        "steps": previous - warmup,
        "warmup_steps": warmup,
        "log_every_steps": every,
        "compiled": config.compiles(device),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--text-cache", type=Path)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compile", default="auto", help="ecgtool train's --compile: auto, on or off")
    parser.add_argument("--log-every", type=int, default=0, help="ecgtool train's --log-every-steps (0: its default)")
    parser.add_argument("--loader-workers", type=int, default=8, help="DataLoader processes of the typical loop")
    parser.add_argument("--loops", nargs="+", choices=LOOPS, default=list(LOOPS))
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    device = torch.device(args.device)
    cache_dir = args.text_cache or args.store / "text-cache"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}", flush=True)
    results = {"device": name, "batches": {}}
    for batch_size in args.batch_sizes:
        row: dict = {}
        if "ecgtool" in args.loops:
            row["ecgtool_train"] = ecgtool_train(args.store, cache_dir, batch_size, args.steps, args.warmup, device,
                                                 args.compile, args.log_every)
        if "eager" in args.loops:
            row["eager_loop"] = eager_baseline(args.store, cache_dir, batch_size, args.steps, args.warmup, device)
        if "typical" in args.loops:
            row["typical_loop"] = typical_loop(args.store, cache_dir, batch_size, args.steps, args.warmup, device,
                                               args.loader_workers)
        results["batches"][str(batch_size)] = row
        shown = []
        if "ecgtool_train" in row:
            ours = row["ecgtool_train"]
            shown.append(f"ecgtool train {ours['samples_per_second']:9.1f} samples/s "
                         f"({'compiled' if ours['compiled'] else 'eager'}; {ours['wall_samples_per_second']:.1f} with epoch ends)")
        if "eager_loop" in row:
            shown.append(f"plain eager fp32 loop {row['eager_loop']:9.1f}")
        if "typical_loop" in row:
            shown.append(f"typical DataLoader loop ({args.loader_workers} workers) {row['typical_loop']:9.1f}")
        print(f"batch {batch_size:4d}: " + " | ".join(shown), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
