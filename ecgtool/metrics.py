"""Retrieval metrics shared by training validation and ``bench``."""

from __future__ import annotations

import numpy as np


def per_label_topk(similarity: np.ndarray, findings: np.ndarray, ks: tuple[int, ...] = (1, 5)) -> dict:
    """The paper's Table 9 protocol: for every (record, finding in its report) pair, is that
    finding within the top-k of the label prompts ranked by similarity?

    Parameters
    ----------
    similarity : (n_records, n_findings) array
        Similarity of each record's ECG embedding to each label prompt embedding.
    findings : (n_records, n_findings) multi-hot array
        The findings of each record's report.

    Returns
    -------
    dict
        ``{"pairs": n, "top1": %, "top5": %, "per_label": {index: {"count", "top1", "top5"}}}``
        with percentages over pairs (``nan`` where a label has no pair).
    """
    similarity = np.asarray(similarity, dtype=np.float64)
    present = np.asarray(findings).astype(bool)
    # rank[i, j]: how many labels score strictly higher than label j for record i.
    order = np.argsort(-similarity, axis=1, kind="stable")
    rank = np.empty_like(order)
    rows = np.arange(similarity.shape[0])[:, None]
    rank[rows, order] = np.arange(similarity.shape[1])[None, :]
    result: dict = {"pairs": int(present.sum()), "per_label": {}}
    for k in ks:
        hits = (rank < k) & present
        result[f"top{k}"] = 100.0 * hits.sum() / present.sum() if present.any() else float("nan")
    for label in range(similarity.shape[1]):
        count = int(present[:, label].sum())
        entry = {"count": count}
        for k in ks:
            entry[f"top{k}"] = 100.0 * float((rank[present[:, label], label] < k).mean()) if count else float("nan")
        result["per_label"][label] = entry
    return result
