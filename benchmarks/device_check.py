"""The measurements of ``benchmarks/device_check.sh`` that are not a CLI command of their own.

    python benchmarks/device_check.py pick-records --data DATA --count N   PTB-XL 100 Hz records of folds 1-9
    python benchmarks/device_check.py weights-diff A.pt B.pt [--kill K.json] [--exact]   largest weight difference
    python benchmarks/device_check.py kill-mid-run --run DIR --after-step N -- ecgtool train ... --out DIR
                                                                      SIGKILL a training run mid-run
    python benchmarks/device_check.py store-scores --store S --model BUNDLE --device cuda [--batch-size 1024]
    python benchmarks/device_check.py embed-rate --model LM --store S --device cuda [--batch-size 64]
    python benchmarks/device_check.py summary --out DIR --device cuda       one JSON of every part's figures

Each prints one JSON object (and ``summary`` writes ``DIR/device-check.json``); ``kill-mid-run``
and ``weights-diff --exact`` exit with status 1 when what they check did not happen.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

# The goals on one H200 (samples/s, records/s, fraction of the LM's forward-only rate).
GOALS = {
    "train_batch_32_samples_per_second": 9000,
    "train_batch_32_over_eager_loop": 3.0,
    "train_batch_32_over_typical_loop": 5.0,
    "train_batch_256_samples_per_second": 15000,
    "predict_store_to_scores_records_per_second": 50000,
    "embed_labels_over_forward_only": 0.8,
}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def pick_records(data: Path, count: int) -> list[str]:
    """The first ``count`` 100 Hz PTB-XL records (by name) of strat folds 1-9: train and val in
    the store (sorted by name alone, the first hundred are all of fold 10, the test fold)."""
    import csv

    folds = {}
    with open(data / "ptb-xl" / "ptbxl_database.csv", newline="", encoding="utf-8") as table:
        for row in csv.DictReader(table):
            folds[int(float(row["ecg_id"]))] = row["strat_fold"]
    headers = sorted((data / "ptb-xl" / "records100").glob("*/*_lr.hea"), key=lambda path: path.name)
    return [str(path) for path in headers if folds.get(int(path.name.split("_")[0])) not in (None, "10")][:count]


def weights_diff(a: Path, b: Path) -> dict:
    first = torch.load(a, weights_only=False, map_location="cpu")
    second = torch.load(b, weights_only=False, map_location="cpu")
    keys = [k for k in first["model"] if first["model"][k].is_floating_point()]
    largest = max(float((first["model"][k].double() - second["model"][k].double()).abs().max()) for k in keys)
    return {"largest_weight_difference": largest, "steps": [first["state"]["global_step"], second["state"]["global_step"]]}


def _read_progress(path: Path) -> dict | None:
    """The training run's progress file (written whole, by a rename), or None before the first."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def kill_mid_run(command: list[str], run: Path, after_step: int, timeout: float, log: Path | None) -> dict:
    """Start ``command`` (``ecgtool train ... --out RUN --checkpoint-every-steps 1``) and SIGKILL
    it, with its whole process group, as soon as ``RUN/checkpoints/progress.json`` (rewritten after
    every checkpoint) shows a checkpoint at ``after_step`` or later and before the last step.
    Polled every 5 ms in this one process: a JSON read, no ``torch.load``. ``killed`` is False
    (and the exit status 1) when the run ended, or ``timeout`` seconds passed, first."""
    progress_file = run / "checkpoints" / "progress.json"
    output = open(log, "w") if log else subprocess.DEVNULL
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    seen, killed = None, False
    while process.poll() is None and time.monotonic() - started < timeout:
        seen = _read_progress(progress_file) or seen
        if seen is not None and after_step <= seen["global_step"] < seen["total_steps"]:
            os.killpg(process.pid, signal.SIGKILL)
            killed = True
            break
        time.sleep(0.005)
    if process.poll() is None and not killed:  # out of time: no checkpoint at after_step yet
        os.killpg(process.pid, signal.SIGKILL)
    return_code = process.wait()
    if log:
        output.close()
    result = {"killed": killed, "after_step": after_step, "return_code": return_code,
              "seconds": round(time.monotonic() - started, 2), "progress_seen": seen}
    last = run / "checkpoints" / "last.pt"
    if last.exists():  # read once, after the kill: the step the resumed run starts from
        state = torch.load(last, weights_only=False, map_location="cpu")["state"]
        result.update(killed_at_step=state["global_step"], killed_at_epoch=state["epoch"],
                      killed_at_step_in_epoch=state["step_in_epoch"])
    final = _read_progress(progress_file) or {}
    result["total_steps"] = final.get("total_steps")
    mid_run = result.get("killed_at_step", math.inf) < (result["total_steps"] or 0)
    result["killed"] = killed and return_code == -signal.SIGKILL and mid_run
    if not killed and return_code != -signal.SIGKILL:
        result["error"] = (f"the run ended (exit status {return_code}) before a checkpoint from step {after_step} to "
                           f"the last but one was seen (last seen: {seen}): not killed")
    elif not killed:
        result["error"] = f"no checkpoint at step {after_step} within {timeout:g} s (last seen: {seen}): not killed"
    elif not result["killed"]:
        result["error"] = (f"the kill landed after the last checkpoint (step {result.get('killed_at_step')} "
                           f"of {result['total_steps']}): nothing left to resume")
    return result


def store_scores(store: Path, model: Path | None, device: torch.device, batch_size: int, min_records: int, split: str) -> dict:
    """Store → scores: shards read into pinned memory, the fast encoder, cosine scores and
    probabilities against the 98 label prompts on the device, scores back on the host."""
    from ecgtool.bundle import bundle_scores, resolve_bundle
    from ecgtool.fast_encoder import FastEncoder
    from ecgtool.store import Store, store_batches

    bundle = resolve_bundle(model)
    encoder = FastEncoder(bundle, device, batch_size)
    paths = Store(store).shard_paths(split)

    def one_pass() -> int:
        done = 0
        for embeddings in encoder.encode_batches(store_batches(paths, batch_size)):
            similarity, probabilities = bundle_scores(bundle, embeddings, "ja")
            done += len(similarity)
        return done

    one_pass()  # warm-up: compilation, cuDNN's choices, the page cache
    _synchronize(device)
    started, records, passes = time.perf_counter(), 0, 0
    while records < min_records or passes < 1:
        records += one_pass()
        passes += 1
    _synchronize(device)
    seconds = time.perf_counter() - started
    return {"records_per_second": records / seconds, "records": records, "passes": passes, "batch_size": batch_size,
            "compiled": encoder.compiled, "bf16": encoder.bf16}


def embed_rate(model_path: str, store: Path, device: str, batch_size: int, repeats: int) -> dict:
    """embed_texts (what ``embed-labels`` runs per batch: tokenise, forward, pool, copy back)
    against the language model's forward pass alone on the same length-sorted batches, already
    tokenised and on the device; the same prompts, model and process."""
    import numpy as np

    from ecgtool.registry import load_registry
    from ecgtool.store import Store
    from ecgtool.text import collect_prompts, embed_texts, load_text_model

    registry = load_registry()
    texts = list(dict.fromkeys(p.text for p in collect_prompts(registry, Store(store), ("ja", "en"))))
    texts = (texts * repeats)[: max(len(texts), 512)] if repeats > 1 else texts
    started = time.perf_counter()
    model, tokenizer = load_text_model(model_path, device)
    loaded = time.perf_counter() - started
    torch_device = torch.device(device)
    lengths = [len(ids) for ids in tokenizer(texts)["input_ids"]]
    order = np.argsort(lengths, kind="stable")
    batches = [tokenizer([texts[i] for i in order[start:start + batch_size]], padding=True, return_tensors="pt").to(torch_device)
               for start in range(0, len(texts), batch_size)]

    def forward_only() -> float:
        with torch.inference_mode():
            _synchronize(torch_device)
            started = time.perf_counter()
            for batch in batches:
                model(**batch, output_hidden_states=True)
            _synchronize(torch_device)
        return time.perf_counter() - started

    forward_only()  # warm-up over every batch shape (oneDNN / cuBLAS pick their kernels per shape)
    _synchronize(torch_device)
    started = time.perf_counter()
    vectors = embed_texts(model, tokenizer, texts, batch_size=batch_size)
    _synchronize(torch_device)
    embed_seconds = time.perf_counter() - started
    forward_seconds = forward_only()
    return {
        "model": str(model_path), "device": device, "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "prompts": len(texts), "batch_size": batch_size, "model_load_seconds": loaded,
        "embed_prompts_per_second": len(texts) / embed_seconds,
        "forward_only_prompts_per_second": len(texts) / forward_seconds,
        "embed_over_forward_only": forward_seconds / embed_seconds,
        "vectors_finite": bool(np.isfinite(vectors).all()),
    }


def summary(out: Path, parts_dir: Path, device: str) -> dict:
    """Every part's JSON (``parts_dir/part-*.json``) in one object, with the goals beside the
    figures, written to ``out/device-check.json``."""
    parts = {}
    for path in sorted(parts_dir.glob("part-*.json")):
        try:
            parts[path.stem.removeprefix("part-")] = json.loads(path.read_text())
        except ValueError as error:
            parts[path.stem.removeprefix("part-")] = {"error": f"unreadable: {error}"}
    figures = {}
    batches = parts.get("train-throughput", {}).get("batches", {})
    for batch, row in batches.items():
        ours = row.get("ecgtool_train", {}).get("samples_per_second")
        figures[f"train_batch_{batch}_samples_per_second"] = ours
        for loop in ("eager_loop", "typical_loop"):
            if ours and row.get(loop):
                figures[f"train_batch_{batch}_over_{loop}"] = ours / row[loop]
    if "store-scores" in parts:
        figures["predict_store_to_scores_records_per_second"] = parts["store-scores"].get("records_per_second")
    if "embed-rate" in parts:
        figures["embed_labels_over_forward_only"] = parts["embed-rate"].get("embed_over_forward_only")
        figures["embed_labels_prompts_per_second"] = parts["embed-rate"].get("embed_prompts_per_second")
    goals = {}
    if device.startswith("cuda"):
        for key, goal in GOALS.items():
            value = figures.get(key)
            goals[key] = {"goal": goal, "measured": value, "met": value is not None and value >= goal}
    result = {
        "device": device,
        "device_name": torch.cuda.get_device_name(0) if device.startswith("cuda") and torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "figures": figures,
        "goals": goals or "the goals are for one H200; this run is not on CUDA",
        "parts": parts,
    }
    (out / "device-check.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    pick = commands.add_parser("pick-records")
    pick.add_argument("--data", type=Path, required=True)
    pick.add_argument("--count", type=int, required=True)
    diff = commands.add_parser("weights-diff")
    diff.add_argument("a", type=Path)
    diff.add_argument("b", type=Path)
    diff.add_argument("--kill", type=Path, help="kill-mid-run's JSON, merged into the result")
    diff.add_argument("--exact", action="store_true", help="exit status 1 unless the weights are equal to the bit")
    kill = commands.add_parser("kill-mid-run")
    kill.add_argument("--run", type=Path, required=True, help="the run's --out directory")
    kill.add_argument("--after-step", type=int, default=2)
    kill.add_argument("--timeout", type=float, default=300)
    kill.add_argument("--log", type=Path, help="the run's output")
    kill.add_argument("train_command", nargs=argparse.REMAINDER, help="-- ecgtool train ...")
    scores = commands.add_parser("store-scores")
    scores.add_argument("--store", type=Path, required=True)
    scores.add_argument("--model", type=Path)
    scores.add_argument("--device", default="cuda")
    scores.add_argument("--batch-size", type=int, default=1024)
    scores.add_argument("--min-records", type=int, default=50_000)
    scores.add_argument("--split", default="train")
    embed = commands.add_parser("embed-rate")
    embed.add_argument("--model", required=True)
    embed.add_argument("--store", type=Path, required=True)
    embed.add_argument("--device", default="cuda")
    embed.add_argument("--batch-size", type=int, default=64)
    embed.add_argument("--repeats", type=int, default=1, help="repeat the prompt list (a small store has few)")
    total = commands.add_parser("summary")
    total.add_argument("--out", type=Path, required=True)
    total.add_argument("--parts", type=Path, required=True)
    total.add_argument("--device", default="cuda")
    args = parser.parse_args()
    if args.command == "pick-records":
        print("\n".join(pick_records(args.data, args.count)))
        return
    failed = False
    if args.command == "weights-diff":
        result = weights_diff(args.a, args.b)
        if args.kill:
            result.update(json.loads(args.kill.read_text()))
        if args.exact:
            result["exact"] = result["largest_weight_difference"] == 0.0 and result.get("killed", True)
            failed = not result["exact"]
    elif args.command == "kill-mid-run":
        command = args.train_command[1:] if args.train_command[:1] == ["--"] else args.train_command
        result = kill_mid_run(command, args.run, args.after_step, args.timeout, args.log)
        failed = not result["killed"]
    elif args.command == "store-scores":
        result = store_scores(args.store, args.model, torch.device(args.device), args.batch_size, args.min_records, args.split)
    elif args.command == "embed-rate":
        result = embed_rate(args.model, args.store, args.device, args.batch_size, args.repeats)
    else:
        result = summary(args.out, args.parts, args.device)
    json.dump(result, sys.stdout, indent=2)
    print()
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
