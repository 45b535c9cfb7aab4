"""``ecgtool train``: contrastive training of the ECG encoder against cached text vectors.

The recipe is the reference paper's (AdamW lr 1e-3, weight decay 1e-3, global batch 32, 200
epochs) with the Hugging Face Trainer defaults it names for everything else (linear decay to 0,
no warm-up, betas (0.9, 0.999), eps 1e-8, gradient clipping at norm 1.0). Under ``torchrun`` the
global batch is split across ranks and the loss is computed over the gathered global batch, with
batch norm synchronised, so a multi-process step equals a single-process step.

The data order of epoch ``e`` is a permutation drawn from ``seed + e`` alone, so a run resumed
from a checkpoint taken mid-epoch continues exactly where the interrupted one was.

The fast path (``--compile``, on by default on CUDA): the forward pass and the loss are compiled
with ``torch.compile`` for the one static shape every step has (the last incomplete batch of an
epoch is always dropped), with CUDA graphs on a single CUDA process; AdamW is fused on CUDA; the
per-step losses stay on the device and are read back every ``log_every_steps`` steps and before
every checkpoint, so a step queues its work without waiting for the GPU.

``--deterministic`` (for proofs, not for speed): deterministic algorithms only (cuDNN's, cuBLAS's
with a fixed workspace, inductor's without autotuning), so that on CUDA a resumed run, or one that
reads its losses less often, equals an uninterrupted one to the bit, as it does on the CPU.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from ecgtool import __version__
from ecgtool.calibrate import export_calibrated_bundle
from ecgtool.checkpoint_file import load_checkpoint
from ecgtool.errors import EcgToolError
from ecgtool.files import write_json_atomic, written_whole
from ecgtool.metrics import auroc, per_label_topk
from ecgtool.model import MAX_LOGIT_SCALE, EcgTextModel, ModelConfig, input_filters
from ecgtool.output_lock import writes_output
from ecgtool.registry import Registry, load_registry, parse_languages
from ecgtool.signal import SAMPLING_RATE
from ecgtool.store import Store
from ecgtool.text_cache import TextCache, load_text_cache
from ecgtool.training.augment import SignalAugment, augment_signals, step_generator
from ecgtool.training.data import SplitData, StreamedSignals, check_compatible, load_split, split_fits_in_memory
from ecgtool.training.distributed import DistributedContext, context_from_environment, convert_batchnorm_for_ranks, init_distributed
from ecgtool.training.label_targets import label_prompts
from ecgtool.training.loss import ClipLoss, finding_bce_loss, label_sigmoid_loss
from ecgtool.training.text_choice import choose_texts
from ecgtool.training.weight_average import WeightAverage

CHECKPOINTS = "checkpoints"
LAST = "last.pt"
BEST = "best.pt"
# Beside last.pt, rewritten after it: where the run stands, for a watcher (a kill-and-resume
# check) that must not load a checkpoint to learn it.
PROGRESS = "progress.json"
METRICS_LOG = "metrics.jsonl"
BUNDLE = "bundle"
# What --select-by may name: the epoch kept as best.pt (and exported) is the one that minimises
# val_loss, or maximises one of the others.
SELECTION_FIGURES = ("val_loss", "val_macro_auroc", "val_top1", "val_top5")
# contrastive: report InfoNCE (+ the label loss with --label-loss-weight); supervised: the honest
# reference, binary cross-entropy of a linear finding head on the same encoder, no text at all.
OBJECTIVES = ("contrastive", "supervised")
SCHEDULES = ("linear", "cosine", "constant")
HIGHER_IS_BETTER = ("val_macro_auroc", "val_top1", "val_top5")
COMPILE_MODES = ("auto", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class TrainError(EcgToolError):
    """Training cannot start or resume."""


@dataclass(frozen=True)
class TrainConfig:
    """The recipe; every field is a CLI option with this default."""

    epochs: int = 200
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    max_grad_norm: float = 1.0
    warmup_steps: int = 0
    schedule: str = "linear"
    embed_dim: int = 512
    lang: str = "ja"
    precision: str = "auto"
    seed: int = 0
    checkpoint_every_steps: int = 0
    mask_same_text: bool = False
    mask_implied_texts: bool = False
    label_prompt_prob: float = 0.0
    augment: bool = False
    input_lowpass_hz: float | None = None
    input_decimation: int = 1
    select_by: str = "val_loss"
    max_records: int | None = None
    device: str = "auto"
    stream: str = "auto"
    loader_workers: int = 2
    compile: str = "auto"
    compile_mode: str = "auto"
    compile_backend: str = "inductor"
    log_every_steps: int = 0
    deterministic: bool = False
    objective: str = "contrastive"
    label_loss_weight: float = 0.0
    ema_decay: float = 0.0

    def resolved_device(self) -> torch.device:
        from ecgtool.devices import resolve_device

        return resolve_device(self.device)

    def autocast_dtype(self, device: torch.device) -> torch.dtype | None:
        precision = self.precision if self.precision != "auto" else ("bf16" if device.type == "cuda" else "fp32")
        if precision not in ("bf16", "fp32"):
            raise TrainError(f"precision must be auto, bf16 or fp32, got {self.precision!r}")
        return torch.bfloat16 if precision == "bf16" else None

    def compiles(self, device: torch.device) -> bool:
        """``auto``: compiled on CUDA, eager on the CPU (where compiling buys nothing measurable)."""
        if self.compile not in ("auto", "on", "off"):
            raise TrainError(f"compile must be auto, on or off, got {self.compile!r}")
        return self.compile == "on" or (self.compile == "auto" and device.type == "cuda")

    def resolved_compile_mode(self, device: torch.device, distributed: bool) -> str:
        """``auto``: CUDA graphs (``reduce-overhead``) on one CUDA process; under DDP, whose
        gradient hooks run between the graph's pieces, and on the CPU, inductor's default."""
        if self.compile_mode not in COMPILE_MODES:
            raise TrainError(f"compile-mode must be one of {', '.join(COMPILE_MODES)}, got {self.compile_mode!r}")
        if self.compile_mode != "auto":
            return self.compile_mode
        return "reduce-overhead" if device.type == "cuda" and not distributed else "default"

    def resolved_log_every(self, device: torch.device) -> int:
        """How many steps between reading the losses back (``0``: every step on the CPU, where
        reading costs nothing, every 50 on CUDA, where each read waits for the GPU)."""
        if self.log_every_steps < 0:
            raise TrainError(f"log-every-steps must be 0 or more, got {self.log_every_steps}")
        return self.log_every_steps or (50 if device.type == "cuda" else 1)

    def recipe(self) -> dict:
        """The fields a resumed run must share with the run it resumes."""
        values = asdict(self)
        for how_not_what in ("device", "checkpoint_every_steps", "stream", "loader_workers",
                             "compile", "compile_mode", "compile_backend", "log_every_steps", "deterministic"):
            values.pop(how_not_what)
        return values


@dataclass
class TrainState:
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    last_loss: float = math.nan
    best_val_loss: float = math.inf
    history: list[dict] = field(default_factory=list)


@dataclass
class TrainResult:
    out_dir: Path
    state: TrainState
    last_checkpoint: Path
    best_checkpoint: Path | None


StepCallback = Callable[[int, int, float, float], None]


@writes_output("out_dir", is_directory=True, when=lambda: context_from_environment().is_main)
def train(
    store_dir: str | Path,
    text_cache_dir: str | Path,
    out_dir: str | Path,
    config: TrainConfig = TrainConfig(),
    resume: bool = False,
    registry: Registry | None = None,
    on_step: StepCallback | None = None,
    stop_after_steps: int | None = None,
    on_note: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train (or resume training) and write checkpoints and a metrics log into ``out_dir``.

    The main process holds ``out_dir``'s lock throughout: a second run into the same directory
    is refused (``ecgtool.output_lock``).

    Parameters
    ----------
    resume : bool
        Continue from ``out_dir/checkpoints/last.pt``; its recipe must equal ``config``'s.
    on_step : callable, optional
        ``on_step(global_step, total_steps, loss, samples_per_second)`` after each step (rank 0).
    stop_after_steps : int, optional
        Return after this many optimizer steps of this call (tests, time-boxed runs).
    on_note : callable, optional
        Receives one-line notes for the user (e.g. ``resume`` with no checkpoint yet: a new run).
    """
    if config.deterministic:
        # cuBLAS reads it when CUDA makes its first handle: a caller that has touched CUDA already
        # must set it in the environment before that (docs/train.md).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    registry = registry or load_registry()
    device = config.resolved_device()
    # A bad --compile, --compile-mode or --log-every-steps fails here, before any data is read.
    config.compiles(device)
    config.resolved_compile_mode(device, distributed=False)
    config.resolved_log_every(device)
    world_size = context_from_environment().world_size
    if config.batch_size % world_size:
        raise TrainError(f"global batch {config.batch_size} does not split evenly over {world_size} ranks")
    context = init_distributed(device)
    out_dir = Path(out_dir)
    store = Store(store_dir)
    cache = load_text_cache(text_cache_dir)
    check_compatible(store, cache, registry)
    store.verify("train")
    store.verify("val")
    if config.stream not in ("auto", "always", "never"):
        raise TrainError(f"stream must be auto, always or never, got {config.stream!r}")
    streamed = config.stream == "always" or (config.stream == "auto" and not split_fits_in_memory(store, "train"))
    train_data = load_split(store, "train", cache, config.lang, config.max_records, with_signals=not streamed)
    val_data = _load_val(store, cache, config, with_signals=not streamed)
    if len(train_data) < config.batch_size:
        raise TrainError(f"{store.directory}: {len(train_data)} training records, fewer than one batch of {config.batch_size}")
    train_data = train_data.to(device) if _fits_on(device, train_data) else train_data
    # Validation indexes it where it lies: on the GPU, no per-batch copy (and wait) from the host.
    val_data = val_data.to(device) if val_data is not None and _fits_on(device, val_data) else val_data
    label_rows = torch.tensor([cache.label_rows(registry, lang) for lang in parse_languages(config.lang)])
    if config.select_by not in SELECTION_FIGURES:
        raise TrainError(f"select-by must be one of {', '.join(SELECTION_FIGURES)}, got {config.select_by!r}")
    if not 0.0 <= config.label_prompt_prob <= 1.0:
        raise TrainError(f"label prompt probability must be between 0 and 1, got {config.label_prompt_prob}")
    if config.objective not in OBJECTIVES:
        raise TrainError(f"objective must be one of {', '.join(OBJECTIVES)}, got {config.objective!r}")
    if config.label_loss_weight < 0:
        raise TrainError(f"label loss weight must be 0 or more, got {config.label_loss_weight}")
    if not 0.0 <= config.ema_decay < 1.0:
        raise TrainError(f"EMA decay must be in [0, 1), got {config.ema_decay}")
    prompts = label_prompts(registry, cache, parse_languages(config.lang)) if config.label_loss_weight else None
    label_targets = prompts.targets(train_data.findings) if prompts is not None else None

    _seed_everything(config.seed)
    if config.deterministic:
        _use_deterministic_algorithms()
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # every step has the same shape: pick the fastest convolutions once
    model_config = ModelConfig(text_dim=int(cache.vectors.shape[1]), embed_dim=config.embed_dim,
                               input_lowpass_hz=config.input_lowpass_hz, input_decimation=config.input_decimation,
                               finding_head=len(registry.findings) if config.objective == "supervised" else 0)
    try:
        model = EcgTextModel(model_config).to(device)
    except ValueError as error:
        raise TrainError(f"input band-limit: {error}") from None
    if context.is_distributed:
        model = convert_batchnorm_for_ranks(model, device).to(device)
    _freeze_unused(model, config)
    average = WeightAverage(model, config.ema_decay) if config.ema_decay else None
    optimizer = _optimizer(model, config, device)
    steps_per_epoch = len(train_data) // config.batch_size
    total_steps = steps_per_epoch * config.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(config, total_steps))
    state = TrainState()
    checkpoint_dir = out_dir / CHECKPOINTS
    metadata = _metadata(config, model_config, store, cache, registry)
    if resume and not (checkpoint_dir / LAST).exists():
        # Killed before its first checkpoint: nothing to continue (open_clip's --resume latest does the same).
        if on_note is not None and context.is_main:
            on_note(f"{checkpoint_dir / LAST}: no checkpoint to resume from yet; starting a new run")
        resume = False
    if resume:
        state = _restore(checkpoint_dir / LAST, model, optimizer, scheduler, metadata, device, average)
    elif (checkpoint_dir / LAST).exists():
        raise TrainError(f"{out_dir}: holds a run already; pass --resume to continue it or choose another --out")
    if context.is_main:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
    trained = DistributedDataParallel(model) if context.is_distributed else model
    loss_fn = ClipLoss(mask_same_text=config.mask_same_text, mask_implied_texts=config.mask_implied_texts)
    augment = SignalAugment() if config.augment else None
    autocast_dtype = config.autocast_dtype(device)
    forward_loss = _forward_loss(trained, loss_fn, context, config, device, autocast_dtype)
    label_vectors = train_data.text_vectors[prompts.rows.to(train_data.text_vectors.device)].to(device) if prompts is not None else None
    losses = _StepLosses(config.resolved_log_every(device), device)
    # Text choice and record names are drawn on the CPU: host copies of the small index tensors
    # keep the per-step reads of them off the GPU.
    findings_on_host, text_index_on_host = train_data.findings.cpu(), train_data.text_index.cpu()
    index_device = train_data.findings.device
    board = _tensorboard(out_dir) if context.is_main else None

    def save_last() -> None:
        _save(checkpoint_dir / LAST, model, optimizer, scheduler, state, metadata, context, average)
        if context.is_main:
            write_json_atomic(checkpoint_dir / PROGRESS, {
                "epoch": state.epoch, "step_in_epoch": state.step_in_epoch,
                "global_step": state.global_step, "total_steps": total_steps})

    def read_losses(epoch_losses: list[float], order: torch.Tensor) -> None:
        """One host sync: the window's losses, checked, logged and reported."""
        first_step, values = losses.read()
        for offset, loss in enumerate(values):
            if not math.isfinite(loss):
                step = first_step + offset
                ids = [train_data.record_ids[i] for i in order[step * config.batch_size:(step + 1) * config.batch_size].tolist()]
                shown = ", ".join(ids[:8]) + (f" and {len(ids) - 8} more" if len(ids) > 8 else "")
                raise TrainError(f"{out_dir}: loss is {loss} at epoch {state.epoch + 1}, step {step + 1} "
                                 f"(records {shown}); nothing of this step was saved: check those records, "
                                 "lower --lr, or resume from the last checkpoint")
        if not values:
            return
        epoch_losses.extend(values)
        state.last_loss = values[-1]
        if context.is_main and on_step:
            on_step(state.global_step, total_steps, state.last_loss, losses.samples_per_second(config.batch_size))

    steps_this_call = 0
    while state.epoch < config.epochs:
        order = _epoch_order(config.seed, state.epoch, len(train_data))
        order_on_device = order.to(index_device)  # one copy per epoch; each step slices it there
        epoch_losses: list[float] = []
        epoch_started = time.perf_counter()
        trained.train()
        losses.start(state.step_in_epoch)
        host_batches = _local_batches(order, state.step_in_epoch, steps_per_epoch, config.batch_size, context)
        batches = _local_batches(order_on_device, state.step_in_epoch, steps_per_epoch, config.batch_size, context)
        for local, signals in zip(batches, _batch_signals(train_data, batches, host_batches, config, device)):
            step = state.step_in_epoch
            global_batch = order[step * config.batch_size:(step + 1) * config.batch_size]
            mine = slice(context.rank * len(local), (context.rank + 1) * len(local))
            # Drawn for the whole global batch on every rank, then sliced: one step of N ranks
            # draws what one process would.
            text_rows, text_findings = choose_texts(
                findings_on_host[global_batch], text_index_on_host[global_batch],
                label_rows, config.label_prompt_prob, step_generator(config.seed, state.epoch, step, 1))
            text_rows = text_rows[mine].to(index_device, non_blocking=True)
            text_findings = text_findings[mine].to(device, non_blocking=True)
            if augment is not None:
                signals = augment_signals(signals, augment, step_generator(config.seed, state.epoch, step, 2),
                                          SAMPLING_RATE, global_batch=len(global_batch), offset=mine.start)
            record_findings = train_data.findings[local]
            targets = None
            if label_targets is not None:
                targets = tuple(t[global_batch[mine]].to(device, non_blocking=True) for t in label_targets)
            loss = _train_step(trained, forward_loss, optimizer, scheduler, signals,
                               train_data.text_vectors[text_rows], text_rows, config, device,
                               record_findings, text_findings, label_vectors, targets)
            if average is not None:
                average.update(model, state.global_step)
            losses.add(loss)
            state.step_in_epoch += 1
            state.global_step += 1
            steps_this_call += 1
            checkpoint_now = bool(config.checkpoint_every_steps and state.global_step % config.checkpoint_every_steps == 0)
            stop_now = stop_after_steps is not None and steps_this_call >= stop_after_steps
            if losses.full() or checkpoint_now or stop_now:
                read_losses(epoch_losses, order)  # before any save: a non-finite step is never saved
            if checkpoint_now or stop_now:
                save_last()
            if stop_now:
                return TrainResult(out_dir, state, checkpoint_dir / LAST, _existing(checkpoint_dir / BEST))
        read_losses(epoch_losses, order)
        record = {
            "epoch": state.epoch + 1,
            "step": state.global_step,
            "train_loss": float(np.mean(epoch_losses)) if epoch_losses else float("nan"),
            "lr": scheduler.get_last_lr()[0],
            "temperature": float(1.0 / model.clamped_logit_scale().item()),
            "epoch_seconds": time.perf_counter() - epoch_started,
        }
        if val_data is not None:
            validated = average.model if average is not None else model
            record.update(validate(validated, val_data, label_rows, config, device, autocast_dtype))
        state.epoch += 1
        state.step_in_epoch = 0
        state.history.append(record)
        if context.is_main:
            _append_metrics(out_dir, record)
            if board is not None:
                for key, value in record.items():
                    board.add_scalar(key, value, state.global_step)
                board.flush()
        # best_val_loss holds the selection figure, negated when higher is better
        figure = record.get(config.select_by, math.nan) if val_data is not None else math.nan
        figure = -figure if config.select_by in HIGHER_IS_BETTER else figure
        improved = val_data is not None and figure < state.best_val_loss
        if improved:
            state.best_val_loss = figure
        save_last()
        if (improved or val_data is None) and context.is_main:
            with written_whole(checkpoint_dir / BEST) as tmp:  # the same payload: copied, not serialised again
                shutil.copyfile(checkpoint_dir / LAST, tmp)
    if context.is_main and config.objective == "contrastive":
        export_calibrated_bundle(_existing(checkpoint_dir / BEST) or checkpoint_dir / LAST, text_cache_dir, out_dir / BUNDLE,
                                 store.directory, registry, device=device, on_note=on_note)
    return TrainResult(out_dir, state, checkpoint_dir / LAST, _existing(checkpoint_dir / BEST))


def _local_batches(order: torch.Tensor, first_step: int, steps: int, batch_size: int, context: DistributedContext) -> list[torch.Tensor]:
    # Each rank takes its contiguous slice, so the gathered features are in global-batch order.
    per_rank = batch_size // context.world_size
    return [
        order[step * batch_size + context.rank * per_rank : step * batch_size + (context.rank + 1) * per_rank]
        for step in range(first_step, steps)
    ]


def _batch_signals(data: SplitData, batches: list[torch.Tensor], host_batches: list[torch.Tensor],
                   config: TrainConfig, device: torch.device):
    """Each batch's samples as float32 on ``device``: indexed in memory (``batches``, on the
    split's device), or read ahead by workers (``host_batches``)."""
    if not data.streamed:
        for local in batches:
            yield data.signals[local].to(device, torch.float32, non_blocking=True)
        return
    loader = torch.utils.data.DataLoader(
        StreamedSignals(data.locations),
        sampler=[local.tolist() for local in host_batches],
        batch_size=None,
        num_workers=config.loader_workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if config.loader_workers else None,
        persistent_workers=False,
    )
    for signals in loader:
        yield signals.to(device, torch.float32, non_blocking=True)


def _forward_loss(trained, loss_fn: ClipLoss, context: DistributedContext, config: TrainConfig,
                  device: torch.device, autocast_dtype):
    """``forward_loss(signals, text_vectors, text_rows, record_findings, text_findings,
    label_vectors, label_targets, label_mask)``: the step's forward pass and loss, compiled when
    ``config.compiles(device)``. The loss is the objective's: report InfoNCE plus
    ``label_loss_weight`` times the label loss (``label_vectors`` not None), or the supervised
    baseline's finding cross-entropy.

    One process compiles forward and loss as one graph. Under DDP only the DDP module is compiled
    (its optimizer splits the graph at the gradient buckets) and the loss, whose feature gather is
    a collective with autograd, runs eagerly after it.
    """
    model_call = trained

    supervised = config.objective == "supervised"

    def forward_loss(signals, text_vectors, text_rows, record_findings, text_findings,
                     label_vectors=None, label_targets=None, label_mask=None):
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            if supervised:
                return finding_bce_loss(model_call(signals, None).finding_logits, record_findings)
            out = model_call(signals, text_vectors, label_vectors)
            loss = loss_fn(out.ecg, out.text, out.logit_scale, context, text_rows, record_findings, text_findings)
            if label_vectors is not None:
                loss = loss + config.label_loss_weight * label_sigmoid_loss(
                    out.ecg, out.labels, out.label_logit_scale, out.label_logit_bias, label_targets, label_mask)
            return loss

    if not config.compiles(device):
        return forward_loss
    mode = config.resolved_compile_mode(device, context.is_distributed)
    options = {"backend": config.compile_backend, "dynamic": False}
    if config.compile_backend == "inductor":
        options["mode"] = None if mode == "default" else mode
    if context.is_distributed:
        model_call = torch.compile(trained, **options)
        return forward_loss
    compiled = torch.compile(forward_loss, **options)
    if device.type != "cuda" or "cudagraphs" in mode or mode not in ("reduce-overhead", "max-autotune"):
        return compiled

    def graphed_forward_loss(*args):
        # Each step is a new CUDA-graph generation: the last step's outputs may be overwritten.
        torch.compiler.cudagraph_mark_step_begin()
        return compiled(*args)

    return graphed_forward_loss


class _StepLosses:
    """The losses of the steps since the last read, kept on the device: reading them (``read``)
    is the loop's only wait for the GPU, once every ``every`` steps."""

    def __init__(self, every: int, device: torch.device):
        self.every = every
        self.buffer = torch.zeros(every, device=device)
        self.count = 0
        self.first_step = 0
        self.since = time.perf_counter()

    def start(self, step_in_epoch: int) -> None:
        self.count, self.first_step, self.since = 0, step_in_epoch, time.perf_counter()

    def add(self, loss: torch.Tensor) -> None:
        self.buffer[self.count].copy_(loss.detach())  # a copy: under CUDA graphs the next step overwrites loss
        self.count += 1

    def full(self) -> bool:
        return self.count == self.every

    def read(self) -> tuple[int, list[float]]:
        """(step in epoch of the first loss, the losses); starts the next window."""
        first, values = self.first_step, self.buffer[:self.count].tolist()
        self._rate = len(values) / max(time.perf_counter() - self.since, 1e-9)
        self.start(first + len(values))
        return first, values

    def samples_per_second(self, batch_size: int) -> float:
        return batch_size * self._rate


def _train_step(trained, forward_loss, optimizer, scheduler, signals: torch.Tensor, text_vectors: torch.Tensor,
                text_rows: torch.Tensor, config: TrainConfig, device: torch.device,
                record_findings: torch.Tensor, text_findings: torch.Tensor,
                label_vectors: torch.Tensor | None = None, label_targets: tuple | None = None) -> torch.Tensor:
    """One optimizer step; returns the loss as a device tensor (reading it would wait for the GPU)."""
    loss = forward_loss(signals, text_vectors.to(device, non_blocking=True), text_rows.to(device, non_blocking=True),
                        record_findings.to(device, non_blocking=True), text_findings,
                        label_vectors, *(label_targets or (None, None)))
    loss.backward()
    if config.max_grad_norm:
        torch.nn.utils.clip_grad_norm_(trained.parameters(), config.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()
    model = trained.module if isinstance(trained, DistributedDataParallel) else trained
    with torch.no_grad():
        model.logit_scale.clamp_(0, math.log(MAX_LOGIT_SCALE))
        model.label_logit_scale.clamp_(0, math.log(MAX_LOGIT_SCALE))
    return loss


def _freeze_unused(model: EcgTextModel, config: TrainConfig) -> None:
    """Parameters the objective never uses get no gradient and no optimizer state (DDP would
    wait for their gradients): the label sigmoid without the label loss; every text-side
    parameter for the supervised baseline."""
    unused = []
    if not config.label_loss_weight or config.objective == "supervised":
        unused += [model.label_logit_scale, model.label_logit_bias]
    if config.objective == "supervised":
        unused += [model.logit_scale, *model.text_projection.parameters(), *model.ecg_projection.parameters()]
    for parameter in unused:
        parameter.requires_grad_(False)


@torch.no_grad()
def validate(model: EcgTextModel, data: SplitData, label_rows: torch.Tensor, config: TrainConfig,
             device: torch.device, autocast_dtype=None) -> dict:
    """Validation loss (plain, batches of the training batch size), per-label top-1/top-5 and
    macro AUROC over the findings with at least 10 positives, in each training language
    (``val_loss_ja`` …) and averaged over them (``val_loss`` …, which picks the best epoch)."""
    was_training = model.training
    model.eval()
    langs = data.langs
    label_rows = label_rows.reshape(len(langs), -1)  # one row of 98 label-prompt rows per language
    losses = {lang: [] for lang in langs}
    weights, embeddings, head_logits = [], [], []
    loss_fn = ClipLoss()
    reader = StreamedSignals(data.locations) if data.streamed else None
    for start in range(0, len(data), config.batch_size):
        stop = min(start + config.batch_size, len(data))
        # Slices, not index tensors: on a split that lies on the GPU nothing is copied from the host.
        samples = reader[list(range(start, stop))] if reader is not None else data.signals[start:stop]
        signals = samples.to(device, torch.float32)
        rows = data.text_index[start:stop]
        count = stop - start
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            if model.finding_head is not None:
                out = model(signals, None)
                ecg = out.ecg
                head_logits.append(out.finding_logits.float())
            else:
                ecg = model.encode_ecg(signals)
            if count > 1:
                for j, lang in enumerate(langs):
                    text = model.encode_text(data.text_vectors[rows[:, j]].to(device))
                    losses[lang].append(loss_fn(ecg, text, model.clamped_logit_scale()).float())  # read once, below
                weights.append(count)
        embeddings.append(ecg.float())
    ecg = torch.cat(embeddings)
    losses = {lang: torch.stack(values).tolist() if values else [] for lang, values in losses.items()}
    truth = data.findings.cpu().numpy().astype(bool)
    record: dict = {}
    head_scores = torch.cat(head_logits).cpu().numpy() if head_logits else None
    for j, lang in enumerate(langs):
        if head_scores is not None:  # the supervised baseline: its head's logits, whatever the language
            similarity = head_scores
        else:
            labels = model.encode_text(data.text_vectors[label_rows[j].to(data.text_vectors.device)].to(device)).float()
            similarity = (ecg @ labels.T).cpu().numpy()
        topk = per_label_topk(similarity, truth)
        aurocs = [auroc(similarity[:, k], truth[:, k]) for k in range(truth.shape[1]) if truth[:, k].sum() >= 10]
        record.update({
            f"val_loss_{lang}": float(np.average(losses[lang], weights=weights)) if losses[lang] else float("nan"),
            f"val_top1_{lang}": topk["top1"],
            f"val_top5_{lang}": topk["top5"],
            f"val_macro_auroc_{lang}": float(np.nanmean(aurocs)) if aurocs else float("nan"),
        })
        record["val_pairs"] = topk["pairs"]
    for key in ("val_loss", "val_top1", "val_top5", "val_macro_auroc"):
        record[key] = float(np.mean([record[f"{key}_{lang}"] for lang in langs]))
    model.train(was_training)
    return record


def _load_val(store: Store, cache: TextCache, config: TrainConfig, with_signals: bool) -> SplitData | None:
    if not store.counts()["val"]["records"]:
        return None
    try:
        return load_split(store, "val", cache, config.lang, with_signals=with_signals)
    except EcgToolError:
        return None  # a val split with no labelled record: train without validation


def _tensorboard(out_dir: Path):
    """A TensorBoard writer when the tensorboard package is installed (optional), else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out_dir / "tensorboard"))


def _fits_on(device: torch.device, data: SplitData) -> bool:
    """Whether to move the split to ``device`` (streamed splits: only their small tensors)."""
    if device.type != "cuda" or data.streamed:
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return data.signals.numel() * data.signals.element_size() < 0.5 * free


def _optimizer(model: EcgTextModel, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    # As the Hugging Face Trainer does: no weight decay on biases and normalisation weights.
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim < 2 else decay).append(parameter)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
        betas=(config.beta1, config.beta2),
        eps=config.eps,
        fused=device.type == "cuda" or None,  # one kernel for every parameter on CUDA
    )


def _match_optimizer_implementation(optimizer: torch.optim.Optimizer, fused: bool | None) -> None:
    """A checkpoint's optimizer state carries the implementation it was saved with; keep ours
    (a CPU run resumed on CUDA becomes fused, a CUDA run resumed on the CPU stops being)."""
    for group in optimizer.param_groups:
        group["fused"] = fused
        for parameter in group["params"]:
            state = optimizer.state.get(parameter, {})
            if "step" in state:
                step = state["step"]
                state["step"] = step.to(parameter.device, torch.float32) if fused else step.cpu().float()


def _schedule(config: TrainConfig, total_steps: int) -> Callable[[int], float]:
    if config.schedule not in SCHEDULES:
        raise TrainError(f"schedule must be one of {', '.join(SCHEDULES)}, got {config.schedule!r}")

    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        if config.schedule == "constant":
            return 1.0
        remaining = max(0.0, (total_steps - step) / max(1, total_steps - config.warmup_steps))
        if config.schedule == "cosine":
            return 0.5 * (1.0 - math.cos(math.pi * remaining))
        return remaining

    return factor


def _epoch_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator)


def _use_deterministic_algorithms() -> None:
    """Process-wide, as torch's own switches are (it stays on after ``train`` returns): every
    kernel deterministic (an operation with no deterministic kernel raises, naming itself), cuDNN
    without its per-process timing of algorithms, and inductor without autotuning (torch turns its
    deterministic mode on with this switch)."""
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _metadata(config: TrainConfig, model_config: ModelConfig, store: Store, cache: TextCache, registry: Registry) -> dict:
    return {
        "ecgtool_version": __version__,
        "recipe": config.recipe(),
        "model": model_config.to_dict(),
        "input_contract": {
            **store.contract,
            "language_model": {
                key: cache.metadata.get(key)
                for key in ("model_path", "model_fingerprint", "pooling", "layer", "dtype")
            },
            "text_language": config.lang,
            "filters": list(store.contract.get("filters", [])) + input_filters(model_config, SAMPLING_RATE),
        },
        "registry": {"version": registry.version, "hash": registry.hash},
        "text_cache_fingerprint": cache.metadata.get("model_fingerprint"),
        "store": str(store.directory.resolve()),
    }


def _save(path: Path, model: EcgTextModel, optimizer, scheduler, state: TrainState, metadata: dict,
          context: DistributedContext, average: WeightAverage | None = None) -> None:
    """Atomic checkpoint (rank 0 writes; the others wait so that nobody reads a half file)."""
    if context.is_main:
        payload = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "state": asdict(state),
            "rng": {
                "python": random.getstate(),
                "numpy": np.random.get_state(),
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            },
            "metadata": metadata,
        }
        if average is not None:
            payload["ema"] = average.state_dict()
        with written_whole(path) as tmp:
            torch.save(payload, tmp)
    if context.is_distributed:
        torch.distributed.barrier()


def _restore(path: Path, model: EcgTextModel, optimizer, scheduler, metadata: dict, device: torch.device,
             average: WeightAverage | None = None) -> TrainState:
    payload = load_checkpoint(path, map_location=device)
    saved = payload["metadata"]
    for key in ("recipe", "model", "registry", "text_cache_fingerprint"):
        if saved.get(key) != metadata.get(key):
            raise TrainError(f"{path}: was trained with another {key.replace('_', ' ')}; resume with the same settings")
    model.load_state_dict(_matching_state(payload["model"], model))
    if average is not None:
        average.load_state_dict(_matching_state(payload["ema"], average.model))
    optimizer.load_state_dict(payload["optimizer"])
    _match_optimizer_implementation(optimizer, optimizer.defaults.get("fused"))
    scheduler.load_state_dict(payload["scheduler"])
    rng = payload["rng"]
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"].cpu())
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([state.cpu() for state in rng["cuda"]])
    return TrainState(**payload["state"])


def _matching_state(state_dict: dict, model: EcgTextModel) -> dict:
    # Checkpoints are written from the unwrapped model, whatever its batch-norm class.
    return {key: value for key, value in state_dict.items() if key in model.state_dict()}


def _append_metrics(out_dir: Path, record: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / METRICS_LOG, "a", encoding="utf-8") as log:
        log.write(json.dumps(record) + "\n")
        log.flush()
        os.fsync(log.fileno())


def _existing(path: Path) -> Path | None:
    return path if path.exists() else None
