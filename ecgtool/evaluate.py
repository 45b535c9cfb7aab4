"""Held-out accuracy of a bundle on a store split (the paper's Table 9 protocol).

Shared by ``bench`` (which adds the superset tests, AUROC and the paper's figures) and the tests.
"""

from __future__ import annotations

import numpy as np
import torch

from ecgtool.bundle import Bundle, bundle_scores
from ecgtool.errors import EcgToolError
from ecgtool.metrics import per_label_topk
from ecgtool.store import Store


def embed_split(bundle: Bundle, store: Store, split: str, batch_size: int = 256,
                device: torch.device = torch.device("cpu")) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """ECG embeddings, multi-hot findings and record ids of every record of ``split``."""
    if store.registry_hash != bundle.description["registry"]["hash"]:
        raise EcgToolError(f"{store.directory}: built with registry {store.registry_hash}, the bundle with {bundle.description['registry']['hash']}")
    embeddings, findings, record_ids = [], [], []
    for shard in store.shards(split):
        for start in range(0, len(shard), batch_size):
            signals = torch.from_numpy(shard.signal[start : start + batch_size]).to(device, torch.float32)
            embeddings.append(bundle.embed(signals).cpu())
        findings.append(shard.findings)
        record_ids.extend(shard.record_id)
    if not record_ids:
        raise EcgToolError(f"{store.directory}: the {split} split is empty")
    return torch.cat(embeddings).numpy(), np.concatenate(findings), record_ids


def per_label_accuracy(bundle: Bundle, store: Store, split: str = "test", lang: str = "ja",
                       device: torch.device = torch.device("cpu")) -> dict:
    """Per-label and overall top-1/top-5 over the split's (record, finding) pairs."""
    embeddings, findings, _ = embed_split(bundle, store, split, device=device)
    similarity, _ = bundle_scores(bundle, torch.from_numpy(embeddings).to(device), lang)
    return per_label_topk(similarity, findings)
