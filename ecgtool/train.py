"""``ecgtool train``: contrastive training of the ECG encoder against cached text vectors.

The recipe is the reference paper's (AdamW lr 1e-3, weight decay 1e-3, global batch 32, 200
epochs) with the Hugging Face Trainer defaults it names for everything else (linear decay to 0,
no warm-up, betas (0.9, 0.999), eps 1e-8, gradient clipping at norm 1.0). Under ``torchrun`` the
global batch is split across ranks and the loss is computed over the gathered global batch, with
batch norm synchronised, so a multi-process step equals a single-process step.

The data order of epoch ``e`` is a permutation drawn from ``seed + e`` alone, so a run resumed
from a checkpoint taken mid-epoch continues exactly where the interrupted one was.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from ecgtool import __version__
from ecgtool.distributed import DistributedContext, context_from_environment, convert_batchnorm_for_ranks, init_distributed
from ecgtool.errors import EcgToolError
from ecgtool.checkpoint_file import load_checkpoint
from ecgtool.augment import SignalAugment, augment_signals, step_generator
from ecgtool.loss import ClipLoss
from ecgtool.metrics import auroc, per_label_topk
from ecgtool.output_lock import writes_output
from ecgtool.model import MAX_LOGIT_SCALE, EcgTextModel, ModelConfig, input_filters
from ecgtool.registry import Registry, load_registry
from ecgtool.signal import SAMPLING_RATE
from ecgtool.store import Store
from ecgtool.training_data import (
    SplitData,
    StreamedSignals,
    TextCache,
    check_compatible,
    load_split,
    load_text_cache,
    split_fits_in_memory,
    training_languages,
)
from ecgtool.training_text import choose_texts

CHECKPOINTS = "checkpoints"
LAST = "last.pt"
BEST = "best.pt"
METRICS_LOG = "metrics.jsonl"
BUNDLE = "bundle"
# What --select-by may name: the epoch kept as best.pt (and exported) is the one that minimises
# val_loss, or maximises one of the others.
SELECTION_FIGURES = ("val_loss", "val_macro_auroc", "val_top1", "val_top5")
HIGHER_IS_BETTER = ("val_macro_auroc", "val_top1", "val_top5")


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

    def resolved_device(self) -> torch.device:
        from ecgtool.devices import resolve_device

        return resolve_device(self.device)

    def autocast_dtype(self, device: torch.device) -> torch.dtype | None:
        precision = self.precision if self.precision != "auto" else ("bf16" if device.type == "cuda" else "fp32")
        if precision not in ("bf16", "fp32"):
            raise TrainError(f"precision must be auto, bf16 or fp32, got {self.precision!r}")
        return torch.bfloat16 if precision == "bf16" else None

    def recipe(self) -> dict:
        """The fields a resumed run must share with the run it resumes."""
        values = asdict(self)
        for how_not_what in ("device", "checkpoint_every_steps", "stream", "loader_workers"):
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
    registry = registry or load_registry()
    device = config.resolved_device()
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
    label_rows = torch.tensor([cache.label_rows(registry, lang) for lang in training_languages(config.lang)])
    if config.select_by not in SELECTION_FIGURES:
        raise TrainError(f"select-by must be one of {', '.join(SELECTION_FIGURES)}, got {config.select_by!r}")
    if not 0.0 <= config.label_prompt_prob <= 1.0:
        raise TrainError(f"label prompt probability must be between 0 and 1, got {config.label_prompt_prob}")

    _seed_everything(config.seed)
    model_config = ModelConfig(text_dim=int(cache.vectors.shape[1]), embed_dim=config.embed_dim,
                               input_lowpass_hz=config.input_lowpass_hz, input_decimation=config.input_decimation)
    try:
        model = EcgTextModel(model_config).to(device)
    except ValueError as error:
        raise TrainError(f"input band-limit: {error}") from None
    if context.is_distributed:
        model = convert_batchnorm_for_ranks(model, device).to(device)
    optimizer = _optimizer(model, config)
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
        state = _restore(checkpoint_dir / LAST, model, optimizer, scheduler, metadata, device)
    elif (checkpoint_dir / LAST).exists():
        raise TrainError(f"{out_dir}: holds a run already; pass --resume to continue it or choose another --out")
    if context.is_main:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
    trained = DistributedDataParallel(model) if context.is_distributed else model
    loss_fn = ClipLoss(mask_same_text=config.mask_same_text, mask_implied_texts=config.mask_implied_texts)
    augment = SignalAugment() if config.augment else None
    autocast_dtype = config.autocast_dtype(device)
    board = _tensorboard(out_dir) if context.is_main else None

    steps_this_call = 0
    while state.epoch < config.epochs:
        order = _epoch_order(config.seed, state.epoch, len(train_data))
        epoch_losses: list[float] = []
        epoch_started = time.perf_counter()
        trained.train()
        batches = _local_batches(order, state.step_in_epoch, steps_per_epoch, config.batch_size, context)
        for local, signals in zip(batches, _batch_signals(train_data, batches, config, device)):
            started = time.perf_counter()
            step = state.step_in_epoch
            global_batch = order[step * config.batch_size:(step + 1) * config.batch_size]
            mine = slice(context.rank * len(local), (context.rank + 1) * len(local))
            # Drawn for the whole global batch on every rank, then sliced: one step of N ranks
            # draws what one process would.
            text_rows, text_findings = choose_texts(
                train_data.findings[global_batch.to(train_data.findings.device)],
                train_data.text_index[global_batch.to(train_data.text_index.device)],
                label_rows, config.label_prompt_prob, step_generator(config.seed, state.epoch, step, 1))
            text_rows, text_findings = text_rows[mine], text_findings[mine]
            if augment is not None:
                signals = augment_signals(signals, augment, step_generator(config.seed, state.epoch, step, 2),
                                          SAMPLING_RATE, global_batch=len(global_batch), offset=mine.start)
            record_findings = train_data.findings[local.to(train_data.findings.device)]
            loss = _train_step(trained, loss_fn, optimizer, scheduler, signals,
                               train_data.text_vectors[text_rows.to(train_data.text_vectors.device)],
                               text_rows, context, config, device, autocast_dtype, record_findings, text_findings)
            if not math.isfinite(loss):
                ids = [train_data.record_ids[i] for i in global_batch.tolist()]
                shown = ", ".join(ids[:8]) + (f" and {len(ids) - 8} more" if len(ids) > 8 else "")
                raise TrainError(f"{out_dir}: loss is {loss} at epoch {state.epoch + 1}, step {step + 1} "
                                 f"(records {shown}); nothing of this step was saved: check those records, "
                                 "lower --lr, or resume from the last checkpoint")
            epoch_losses.append(loss)
            state.last_loss = loss
            state.step_in_epoch += 1
            state.global_step += 1
            steps_this_call += 1
            if context.is_main and on_step:
                on_step(state.global_step, total_steps, loss, config.batch_size / (time.perf_counter() - started))
            if config.checkpoint_every_steps and state.global_step % config.checkpoint_every_steps == 0:
                _save(checkpoint_dir / LAST, model, optimizer, scheduler, state, metadata, context)
            if stop_after_steps is not None and steps_this_call >= stop_after_steps:
                _save(checkpoint_dir / LAST, model, optimizer, scheduler, state, metadata, context)
                return TrainResult(out_dir, state, checkpoint_dir / LAST, _existing(checkpoint_dir / BEST))
        record = {
            "epoch": state.epoch + 1,
            "step": state.global_step,
            "train_loss": float(np.mean(epoch_losses)) if epoch_losses else float("nan"),
            "lr": scheduler.get_last_lr()[0],
            "temperature": float(1.0 / model.clamped_logit_scale().item()),
            "epoch_seconds": time.perf_counter() - epoch_started,
        }
        if val_data is not None:
            record.update(evaluate(model, val_data, label_rows, config, device, autocast_dtype))
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
        _save(checkpoint_dir / LAST, model, optimizer, scheduler, state, metadata, context)
        if improved or val_data is None:
            _save(checkpoint_dir / BEST, model, optimizer, scheduler, state, metadata, context)
    if context.is_main:
        from ecgtool.bundle import export_bundle

        export_bundle(_existing(checkpoint_dir / BEST) or checkpoint_dir / LAST, text_cache_dir, out_dir / BUNDLE, registry)
    return TrainResult(out_dir, state, checkpoint_dir / LAST, _existing(checkpoint_dir / BEST))


def _local_batches(order: torch.Tensor, first_step: int, steps: int, batch_size: int, context: DistributedContext) -> list[torch.Tensor]:
    # Each rank takes its contiguous slice, so the gathered features are in global-batch order.
    per_rank = batch_size // context.world_size
    return [
        order[step * batch_size + context.rank * per_rank : step * batch_size + (context.rank + 1) * per_rank]
        for step in range(first_step, steps)
    ]


def _batch_signals(data: SplitData, batches: list[torch.Tensor], config: TrainConfig, device: torch.device):
    """Each batch's samples as float32 on ``device``: indexed in memory, or read ahead by workers."""
    if not data.streamed:
        for local in batches:
            yield data.signals[local.to(data.signals.device)].to(device, torch.float32, non_blocking=True)
        return
    loader = torch.utils.data.DataLoader(
        StreamedSignals(data.locations),
        sampler=[local.tolist() for local in batches],
        batch_size=None,
        num_workers=config.loader_workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if config.loader_workers else None,
        persistent_workers=False,
    )
    for signals in loader:
        yield signals.to(device, torch.float32, non_blocking=True)


def _train_step(trained, loss_fn, optimizer, scheduler, signals: torch.Tensor, text_vectors: torch.Tensor,
                text_rows: torch.Tensor, context: DistributedContext, config: TrainConfig, device: torch.device,
                autocast_dtype, record_findings: torch.Tensor, text_findings: torch.Tensor) -> float:
    text_vectors = text_vectors.to(device, non_blocking=True)
    with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
        ecg, text, scale = trained(signals, text_vectors)
        loss = loss_fn(ecg, text, scale, context, text_rows.to(device), record_findings.to(device), text_findings.to(device))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.max_grad_norm:
        torch.nn.utils.clip_grad_norm_(trained.parameters(), config.max_grad_norm)
    optimizer.step()
    scheduler.step()
    model = trained.module if isinstance(trained, DistributedDataParallel) else trained
    with torch.no_grad():
        model.logit_scale.clamp_(0, math.log(MAX_LOGIT_SCALE))
    return float(loss.detach())


@torch.no_grad()
def evaluate(model: EcgTextModel, data: SplitData, label_rows: torch.Tensor, config: TrainConfig,
             device: torch.device, autocast_dtype=None) -> dict:
    """Validation loss (plain, batches of the training batch size), per-label top-1/top-5 and
    macro AUROC over the findings with at least 10 positives, in each training language
    (``val_loss_ja`` …) and averaged over them (``val_loss`` …, which picks the best epoch)."""
    was_training = model.training
    model.eval()
    langs = data.langs
    label_rows = label_rows.reshape(len(langs), -1)  # one row of 98 label-prompt rows per language
    losses = {lang: [] for lang in langs}
    weights, embeddings = [], []
    loss_fn = ClipLoss()
    reader = StreamedSignals(data.locations) if data.streamed else None
    for start in range(0, len(data), config.batch_size):
        index = torch.arange(start, min(start + config.batch_size, len(data)))
        samples = reader[index.tolist()] if reader is not None else data.signals[index.to(data.signals.device)]
        signals = samples.to(device, torch.float32)
        rows = data.text_index[index.to(data.text_index.device)]
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            ecg = model.encode_ecg(signals)
            if len(index) > 1:
                for j, lang in enumerate(langs):
                    text = model.encode_text(data.text_vectors[rows[:, j]].to(device))
                    losses[lang].append(float(loss_fn(ecg, text, model.clamped_logit_scale())))
                weights.append(len(index))
        embeddings.append(ecg.float())
    ecg = torch.cat(embeddings)
    truth = data.findings.cpu().numpy().astype(bool)
    record: dict = {}
    for j, lang in enumerate(langs):
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


def _optimizer(model: EcgTextModel, config: TrainConfig) -> torch.optim.Optimizer:
    # As the Hugging Face Trainer does: no weight decay on biases and normalisation weights.
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        (no_decay if parameter.ndim < 2 else decay).append(parameter)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
        betas=(config.beta1, config.beta2),
        eps=config.eps,
    )


def _schedule(config: TrainConfig, total_steps: int) -> Callable[[int], float]:
    if config.schedule not in ("linear", "constant"):
        raise TrainError(f"schedule must be linear or constant, got {config.schedule!r}")

    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        if config.schedule == "constant":
            return 1.0
        return max(0.0, (total_steps - step) / max(1, total_steps - config.warmup_steps))

    return factor


def _epoch_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator)


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
          context: DistributedContext) -> None:
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
        tmp = path.with_name(path.name + ".tmp")
        torch.save(payload, tmp)
        os.replace(tmp, path)
    if context.is_distributed:
        torch.distributed.barrier()


def _restore(path: Path, model: EcgTextModel, optimizer, scheduler, metadata: dict, device: torch.device) -> TrainState:
    payload = load_checkpoint(path, map_location=device)
    saved = payload["metadata"]
    for key in ("recipe", "model", "registry", "text_cache_fingerprint"):
        if saved.get(key) != metadata.get(key):
            raise TrainError(f"{path}: was trained with another {key.replace('_', ' ')}; resume with the same settings")
    model.load_state_dict(_matching_state(payload["model"], model))
    optimizer.load_state_dict(payload["optimizer"])
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
