"""``ecgtool train``, ``ecgtool export`` and ``ecgtool calibrate``: a model bundle from a store.

``train``'s recipe options are ``TrainConfig``'s fields, each with the field's default
(``tests/test_cli.py`` checks them against each other).
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Optional

import typer

from ecgtool.cli.common import device_option, one_line_errors, output, print_note, rate_progress
from ecgtool.errors import EcgToolError

# TrainConfig fields with no option: the compile backend is for tests and experiments only.
LIBRARY_ONLY_FIELDS = ("compile_backend",)
# TrainConfig fields whose parameter is named otherwise here (``compile`` is a Python builtin).
PARAMETER_OF_FIELD = {"compile": "compile_step"}


@one_line_errors
def train(
    ctx: typer.Context,
    store: Path = typer.Option(..., "--store", help="Store made by `ecgtool ingest`."),
    text_cache: Optional[Path] = typer.Option(None, "--text-cache", help="Cache made by `ecgtool embed-labels` (default: <store>/text-cache)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory: checkpoints/, metrics.jsonl."),
    epochs: int = typer.Option(200, "--epochs", min=1),
    batch_size: int = typer.Option(32, "--batch-size", help="Global batch, split over torchrun ranks.", min=1),
    lr: float = typer.Option(1e-3, "--lr", min=0.0),
    weight_decay: float = typer.Option(1e-3, "--weight-decay", help="AdamW decay (not on biases and norms).", min=0.0),
    beta1: float = typer.Option(0.9, "--beta1", min=0.0, max=1.0),
    beta2: float = typer.Option(0.999, "--beta2", min=0.0, max=1.0),
    eps: float = typer.Option(1e-8, "--eps", min=0.0),
    max_grad_norm: float = typer.Option(1.0, "--max-grad-norm", help="Gradient clipping norm (0: off).", min=0.0),
    warmup_steps: int = typer.Option(0, "--warmup-steps", min=0),
    schedule: str = typer.Option("linear", "--schedule", help="linear (decay to 0), cosine (half-cosine decay to 0) or constant; after --warmup-steps."),
    embed_dim: int = typer.Option(512, "--embed-dim", help="Shared ECG-text dimension.", min=1),
    lang: str = typer.Option("ja", "--lang", help="Report language trained on: ja, en, or both (each record's prompt in either, drawn per step)."),
    precision: str = typer.Option("auto", "--precision", help="auto (bf16 on CUDA, fp32 on CPU), bf16 or fp32."),
    seed: int = typer.Option(0, "--seed"),
    checkpoint_every_steps: int = typer.Option(0, "--checkpoint-every-steps", help="Also checkpoint every N steps (0: per epoch only).", min=0),
    mask_same_text: bool = typer.Option(False, "--mask-same-text", help="Remove same-report pairs from the negatives (off: the paper's loss)."),
    mask_implied_texts: bool = typer.Option(False, "--mask-implied-texts", help="Remove from the negatives every text whose findings all belong to the record (implies --mask-same-text's rule)."),
    label_prompt_prob: float = typer.Option(0.0, "--label-prompt-prob", help="Probability of pairing a record with the label prompt of one of its findings instead of its report prompt.", min=0.0, max=1.0),
    augment: bool = typer.Option(False, "--augment", help="Signal augmentation: amplitude, noise, baseline wander, time shift, lead masking (docs/train.md)."),
    input_lowpass_hz: Optional[float] = typer.Option(None, "--input-lowpass-hz", help="Fixed FIR low-pass inside the model, applied to the 500 Hz input (e.g. 40; default: none, the paper's)."),
    input_decimation: int = typer.Option(1, "--input-decimation", help="Keep every N-th sample after the low-pass (e.g. 5: the encoder runs at 100 Hz).", min=1),
    select_by: str = typer.Option("val_loss", "--select-by", help="The epoch exported as best: lowest val_loss, or highest val_macro_auroc, val_top1 or val_top5."),
    max_records: Optional[int] = typer.Option(None, "--max-records", help="Train on the first N labelled training records only.", min=1),
    device: str = device_option(),
    stream: str = typer.Option("auto", "--stream", help="auto: read batches from the shards only when the split does not fit in memory; always; never."),
    loader_workers: int = typer.Option(2, "--loader-workers", help="Processes reading batches ahead when streaming.", min=0),
    compile_step: str = typer.Option("auto", "--compile", help="torch.compile the step: auto (on for CUDA, off on CPU), on or off."),
    compile_mode: str = typer.Option("auto", "--compile-mode", help="auto (CUDA graphs on one CUDA process, else default), or a torch.compile mode: default, reduce-overhead, max-autotune-no-cudagraphs."),
    log_every_steps: int = typer.Option(0, "--log-every-steps", help="Read the loss back (progress bar, non-finite check) every N steps; 0: auto (1 on CPU, 50 on CUDA).", min=0),
    deterministic: bool = typer.Option(False, "--deterministic", help="Deterministic kernels only (cuDNN, cuBLAS, inductor), for proofs: on CUDA a resumed run equals an uninterrupted one to the bit; slower. Not part of the recipe."),
    objective: str = typer.Option("contrastive", "--objective", help="contrastive (report InfoNCE, + the label loss with --label-loss-weight) or supervised (the reference baseline: BCE of a linear finding head, no text; not exported as a bundle)."),
    label_loss_weight: float = typer.Option(0.0, "--label-loss-weight", help="Weight of the multi-positive label loss: a sigmoid per (ECG, label or superset prompt) pair, both languages (0: off, the v2 recipe).", min=0.0),
    ema_decay: float = typer.Option(0.0, "--ema-decay", help="Validate and export an exponential moving average of the weights with this decay (e.g. 0.999; 0: off).", min=0.0, max=0.999999),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
):
    """Train the ResNet1d-18 ECG encoder against the cached text vectors (symmetric InfoNCE).

    Multi-GPU: torchrun --nproc_per_node=2 -m ecgtool.cli train ...

    Example: ecgtool train --store stores/ptbxl --out runs/ptbxl --device cuda
    """
    from ecgtool.training.distributed import context_from_environment
    from ecgtool.training.train import train as run_train

    config = train_config(ctx.params)
    main_process = context_from_environment().is_main
    with rate_progress("train", "steps") as show:
        def on_step(step: int, total: int, loss: float, samples_per_second: float) -> None:
            show(step, total, f"loss {loss:.4f} · {samples_per_second:,.0f} samples/s")

        result = run_train(store, text_cache or store / "text-cache", out, config, resume=resume,
                           on_step=on_step if main_process else None,
                           on_note=print_note)
    if main_process:
        last = result.state.history[-1] if result.state.history else {}
        summary = ", ".join(f"{k} {v:.4g}" for k, v in last.items() if isinstance(v, float))
        output.print(f"epoch {result.state.epoch}/{epochs}, step {result.state.global_step}: {summary}", highlight=False, soft_wrap=True)
        output.print(f"checkpoints in {result.last_checkpoint.parent}; metrics in {result.out_dir / 'metrics.jsonl'}", highlight=False, soft_wrap=True)


def train_config(options: dict):
    """The ``TrainConfig`` of the ``train`` command's options (by parameter name)."""
    from ecgtool.training.train import TrainConfig

    return TrainConfig(**{field.name: options[PARAMETER_OF_FIELD.get(field.name, field.name)]
                          for field in fields(TrainConfig) if field.name not in LIBRARY_ONLY_FIELDS})


@one_line_errors
def export(
    run: Path = typer.Option(..., "--run", help="Run directory of `ecgtool train`."),
    text_cache: Path = typer.Option(..., "--text-cache", help="The text cache the run was trained with."),
    out: Path = typer.Option(..., "--out", "-o", help="Bundle directory to write."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best or last."),
    float32: bool = typer.Option(False, "--float32", help="Keep float32 weights (default: float16)."),
    calibrate_on: Optional[Path] = typer.Option(None, "--calibrate-store", help="Store whose val split calibrates the bundle (default: the run's own store, when it is there)."),
    no_calibration: bool = typer.Option(False, "--no-calibration", help="Export without calibrating (predict then shows scores only)."),
):
    """Export a trained run as a model bundle for predict and bench (no LM, no GPU needed to load it).

    Example: ecgtool export --run runs/ptbxl --text-cache stores/ptbxl/text-cache --out models/ptbxl
    """
    import torch

    from ecgtool.bundle import export_bundle
    from ecgtool.calibrate import export_calibrated_bundle

    path = run / "checkpoints" / f"{checkpoint}.pt"
    if checkpoint not in ("best", "last") or not path.exists():
        raise EcgToolError(f"{path}: no such checkpoint (--checkpoint best or last)")
    dtype = torch.float32 if float32 else torch.float16
    if no_calibration:
        export_bundle(path, text_cache, out, dtype=dtype)
        output.print(f"bundle written to {out}", highlight=False, soft_wrap=True)
        return
    exported = export_calibrated_bundle(path, text_cache, out, calibrate_on, dtype=dtype, on_note=print_note)
    output.print(f"bundle written to {out}", highlight=False, soft_wrap=True)
    if exported.calibration is not None:
        output.print(f"calibrated on {exported.calibration['fitted_on']['records']} val records of {exported.store}",
                     highlight=False, soft_wrap=True)


@one_line_errors
def calibrate(
    bundle_dir: Path = typer.Argument(..., help="Model bundle to calibrate (written in place)."),
    store: Path = typer.Option(..., "--store", "-s", help="Store whose val split the calibration is fitted on (never its test split)."),
    split: str = typer.Option("val", "--split", help="Split to fit on (val; train only if you know why)."),
    min_positives: int = typer.Option(10, "--min-positives", help="Fewer val positives (or negatives): the finding stays uncalibrated.", min=2),
    isotonic_min: int = typer.Option(100, "--isotonic-min", help="From this many val positives and negatives: isotonic regression instead of Platt scaling.", min=2),
    rule: str = typer.Option("max_f1", "--rule", help="Operating point: max_f1 (val threshold of highest F1), probability (called present when its calibrated probability is >= 50 %) or sensitivity (with --target-sensitivity)."),
    target_sensitivity: Optional[float] = typer.Option(None, "--target-sensitivity", help="With --rule sensitivity: the highest threshold reaching this val sensitivity (0-1).", min=0.0, max=1.0),
    min_f1: float = typer.Option(0.2, "--min-f1", help="A finding whose val F1 at its operating point is below this is never called present.", min=0.0, max=1.0),
    device: str = device_option(),
    force: bool = typer.Option(False, "--force", help="Replace the bundle's calibration even when the new one calibrates fewer findings."),
):
    """Fit each finding's probability of presence and operating point on a store's val split, into the bundle;
    for the findings a measurement supports, also their combination with the measurement (the val records are
    measured: docs/measurements.md).

    Example: ecgtool calibrate models/ptbxl --store stores/ptbxl
    """
    from ecgtool.calibrate import calibrate_bundle
    from ecgtool.devices import resolve_device

    entry = calibrate_bundle(bundle_dir, store, split, min_positives, isotonic_min, rule, target_sensitivity, min_f1,
                             resolve_device(device), force)
    fitted = entry["fitted_on"]
    combined = entry["combined"]
    output.print(f"{entry['calibrated_findings']} findings calibrated, {entry['findings_with_operating_point']} with an "
                 f"operating point ({entry['rules']['operating_point']}), one reading score for {' and '.join(entry['languages'])}",
                 highlight=False)
    output.print(f"{len(combined['fitted'])} of them also read with their measurements (model and measurement together; "
                 f"{len(combined['with_operating_point'])} with an operating point): "
                 f"{', '.join(combined['fitted']) or 'none (too few val positives)'}", highlight=False, soft_wrap=True)
    output.print(f"fitted on {fitted['records']} {fitted['split']} records of {store} "
                 f"({fitted['records_without_findings_left_out']} without findings left out); written to {bundle_dir}",
                 highlight=False, soft_wrap=True)
