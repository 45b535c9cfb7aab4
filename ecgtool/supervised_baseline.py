"""Scores of the supervised baseline (``ecgtool train --objective supervised``) on a store split.

The baseline is the honest reference for the zero-shot model: the same encoder trained with
binary cross-entropy on the registry findings of the same store, with the same budget, read
through a linear head (one logit per finding) instead of label prompts. It has no text side, so
it is not a bundle: ``bench --supervised CHECKPOINT`` scores it beside the bundle on the same
records with the same figures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ecgtool.checkpoint_file import CheckpointError, load_checkpoint
from ecgtool.model import EcgTextModel, ModelConfig
from ecgtool.store import Store


def load_supervised(checkpoint: str | Path, registry_hash: str, device: torch.device = torch.device("cpu")) -> EcgTextModel:
    """The baseline's model (its weight average when trained with one), in eval mode.

    Raises ``CheckpointError`` for a contrastive checkpoint or one made for another registry."""
    payload = load_checkpoint(checkpoint)
    metadata = payload["metadata"]
    config = ModelConfig.from_dict(metadata["model"])
    if not config.finding_head:
        raise CheckpointError(f"{checkpoint}: not a supervised baseline (no finding head; train with --objective supervised)")
    if metadata["registry"]["hash"] != registry_hash:
        raise CheckpointError(f"{checkpoint}: trained with registry {metadata['registry']['hash']}, the store has {registry_hash}")
    model = EcgTextModel(config)
    model.load_checkpoint_state(payload.get("ema") or payload["model"])
    return model.to(device).eval()


@torch.no_grad()
def supervised_scores(model: EcgTextModel, store: Store, split: str, batch_size: int = 256,
                      device: torch.device = torch.device("cpu")) -> np.ndarray:
    """The head's logits ``(n, n_findings)`` for every record of ``split``, in store order (the
    order of ``embed_split``)."""
    scores = []
    for shard in store.shards(split, with_signal=True):
        for start in range(0, len(shard.record_id), batch_size):
            signals = torch.from_numpy(np.asarray(shard.signal[start:start + batch_size], dtype=np.float32)).to(device)
            scores.append(model(signals, None).finding_logits.float().cpu().numpy())
    return np.concatenate(scores)


def supervised_figures(checkpoint: str | Path, store: Store, split: str, min_positives: int,
                       device: torch.device = torch.device("cpu")) -> dict:
    """The baseline's per-label AUROC on ``split`` and their mean over the findings with at least
    ``min_positives`` positives there: bench's macro AUROC rule, on the same records."""
    from ecgtool.metrics import macro_auroc

    model = load_supervised(checkpoint, store.registry_hash, device)
    scores = supervised_scores(model, store, split, device=device)
    findings = np.concatenate([shard.findings for shard in store.shards(split, with_signal=False)]).astype(bool)
    _, per_label = macro_auroc(scores, findings)
    counts = findings.sum(axis=0)
    counted = [value for value, count in zip(per_label, counts) if count >= min_positives and not np.isnan(value)]
    return {"checkpoint": str(checkpoint), "macro_auroc": float(np.mean(counted)) if counted else float("nan"),
            "auroc_labels": len(counted), "per_label_auroc": [None if np.isnan(v) else float(v) for v in per_label]}
