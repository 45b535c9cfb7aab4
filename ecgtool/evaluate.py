"""Held-out accuracy of a bundle on a store split (the paper's Table 9 protocol).

Shared by ``bench`` (which adds the superset tests, AUROC and the paper's figures) and the tests.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from ecgtool.bundle import Bundle, bundle_scores
from ecgtool.errors import EcgToolError
from ecgtool.metrics import per_label_topk
from ecgtool.store import Store


class SplitEmbeddings(NamedTuple):
    embeddings: np.ndarray  # (n, d) unit vectors
    findings: np.ndarray  # (n, n_findings) multi-hot
    record_ids: list[str]
    patient_ids: list[str]


def embed_split(bundle: Bundle, store: Store, split: str, batch_size: int | None = None,
                device: torch.device = torch.device("cpu")) -> SplitEmbeddings:
    """ECG embeddings, multi-hot findings, record and patient ids of every record of ``split``.

    Through :class:`ecgtool.inference.FastEncoder`: on CUDA batches of 1024 (default) read ahead
    into pinned memory and a compiled bfloat16 encoder; on the CPU batches of 256 through the
    bundle's float32 encoder, as before."""
    from ecgtool.inference import FastEncoder, store_batches

    if store.registry_hash != bundle.description["registry"]["hash"]:
        raise EcgToolError(f"{store.directory}: built with registry {store.registry_hash}, the bundle with {bundle.description['registry']['hash']}")
    findings, record_ids, patient_ids = [], [], []
    for shard in store.shards(split, with_signal=False):
        findings.append(shard.findings)
        record_ids.extend(shard.record_id)
        patient_ids.extend(shard.patient_id)
    if not record_ids:
        raise EcgToolError(f"{store.directory}: the {split} split is empty")
    batch_size = batch_size or (1024 if device.type == "cuda" else 256)
    encoder = FastEncoder(bundle, device, batch_size)
    embeddings = encoder.encode(store_batches(store.shard_paths(split), batch_size))
    return SplitEmbeddings(embeddings, np.concatenate(findings), record_ids, patient_ids)


def per_label_accuracy(bundle: Bundle, store: Store, split: str = "test", lang: str = "ja",
                       device: torch.device = torch.device("cpu")) -> dict:
    """Per-label and overall top-1/top-5 over the split's (record, finding) pairs."""
    embeddings, findings, _, _ = embed_split(bundle, store, split, device=device)
    similarity, _ = bundle_scores(bundle, torch.from_numpy(embeddings).to(device), lang)
    return per_label_topk(similarity, findings)
