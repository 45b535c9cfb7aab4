"""Every record of a store split through a bundle's ECG encoder: the embeddings, with the
records' stored findings, ids and patients in the same order.

What ``bench`` scores, ``calibrate`` fits on and the tests measure held-out accuracy with.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from ecgtool.bundle import Bundle, check_store_matches
from ecgtool.errors import EcgToolError
from ecgtool.fast_encoder import FastEncoder
from ecgtool.store import Store, store_batches


class SplitEmbeddings(NamedTuple):
    embeddings: np.ndarray  # (n, d) unit vectors
    findings: np.ndarray  # (n, n_findings) multi-hot
    record_ids: list[str]
    patient_ids: list[str]


def embed_split(bundle: Bundle, store: Store, split: str, batch_size: int | None = None,
                device: torch.device = torch.device("cpu")) -> SplitEmbeddings:
    """ECG embeddings, multi-hot findings, record and patient ids of every record of ``split``.

    Through :class:`ecgtool.fast_encoder.FastEncoder`: on CUDA batches of 1024 (default) read
    ahead into pinned memory and a compiled bfloat16 encoder; on the CPU batches of 256 through
    the bundle's float32 encoder, as before."""
    check_store_matches(bundle, store)
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
