"""Retrieval metrics shared by training validation and ``bench``."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


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


def auroc(scores: np.ndarray, positives: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for the boolean ``positives`` (ties count half).

    The Mann–Whitney form: the probability that a random positive scores above a random negative.
    ``nan`` when there is no positive or no negative.
    """
    positives = np.asarray(positives, dtype=bool)
    n_positive = int(positives.sum())
    n_negative = positives.size - n_positive
    if n_positive == 0 or n_negative == 0:
        return float("nan")
    ranks = rankdata(np.asarray(scores, dtype=np.float64))
    return float((ranks[positives].sum() - n_positive * (n_positive + 1) / 2) / (n_positive * n_negative))


def macro_auroc(similarity: np.ndarray, truth: np.ndarray) -> tuple[float, list[float]]:
    """One-vs-rest AUROC of every column, and their mean over the columns where it is defined."""
    per_column = [auroc(similarity[:, j], truth[:, j]) for j in range(similarity.shape[1])]
    defined = [value for value in per_column if not np.isnan(value)]
    return (float(np.mean(defined)) if defined else float("nan")), per_column


def top1_confusions(similarity: np.ndarray, findings: np.ndarray, most: int = 3) -> dict[int, list[tuple[int, int]]]:
    """For each label, the labels ranked first instead of it that are not in the record's report.

    Over the (record, label) pairs where ``label`` is in the report but another label, absent from
    the report, has the highest similarity: ``{label: [(mistaken_for, count), …]}``, most frequent
    first (ties by label index), at most ``most`` entries.
    """
    present = np.asarray(findings).astype(bool)
    top1 = np.argmax(similarity, axis=1)
    wrong = ~present[np.arange(len(top1)), top1]  # the top-1 label is not in the report at all
    confusions: dict[int, list[tuple[int, int]]] = {}
    for label in range(similarity.shape[1]):
        mistaken = top1[present[:, label] & wrong]
        if mistaken.size:
            counts = np.bincount(mistaken, minlength=similarity.shape[1])
            order = np.lexsort((np.arange(counts.size), -counts))[:most]
            confusions[label] = [(int(j), int(counts[j])) for j in order if counts[j]]
    return confusions


def superset_accuracy(similarity: np.ndarray, truth: np.ndarray) -> dict:
    """Zero-shot superset accuracy under the any-of rule.

    A record counts when it has at least one true class; it is right when its top-1 class is one
    of its true classes. The per-class row covers the records that have that class (a record with
    two classes is in both rows, judged by the same rule).

    Returns
    -------
    dict
        ``{"records", "correct", "accuracy", "left_out", "multi_class", "single_class_accuracy",
        "per_class": {index: {"count", "correct", "accuracy"}}}``, percentages.
    """
    truth = np.asarray(truth).astype(bool)
    counted = truth.any(axis=1)
    top1 = np.argmax(similarity, axis=1)
    right = truth[np.arange(len(top1)), top1] & counted
    single = counted & (truth.sum(axis=1) == 1)
    result = {
        "records": int(counted.sum()),
        "correct": int(right.sum()),
        "accuracy": _percent(right.sum(), counted.sum()),
        "left_out": int((~counted).sum()),
        "multi_class": int((truth.sum(axis=1) > 1).sum()),
        "single_class_accuracy": _percent((right & single).sum(), single.sum()),
        "per_class": {},
    }
    for index in range(truth.shape[1]):
        members = truth[:, index]
        result["per_class"][index] = {
            "count": int(members.sum()),
            "correct": int((right & members).sum()),
            "accuracy": _percent((right & members).sum(), members.sum()),
        }
    return result


def _percent(part, whole) -> float:
    return 100.0 * float(part) / float(whole) if whole else float("nan")
