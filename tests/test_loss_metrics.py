"""The contrastive loss and the retrieval metric on small hand-made inputs."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ecgtool.training.loss import ClipLoss
from ecgtool.metrics import per_label_topk


def _unit(rows: int, dim: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_loss_is_symmetric_cross_entropy_and_near_ln_batch_for_random_pairs():
    ecg, text = _unit(64, 32, 0), _unit(64, 32, 1)
    scale = torch.tensor(1.0)
    logits = ecg @ text.T
    expected = (F.cross_entropy(logits, torch.arange(64)) + F.cross_entropy(logits.T, torch.arange(64))) / 2
    assert torch.isclose(ClipLoss()(ecg, text, scale), expected)
    assert abs(float(expected) - math.log(64)) < 0.1
    assert float(ClipLoss()(ecg, ecg, torch.tensor(100.0))) < 0.01  # perfectly matched pairs


def test_masking_same_text_removes_false_negatives_only():
    ecg = _unit(6, 16, 2)
    text = _unit(6, 16, 3)
    text[3] = text[1]  # records 1 and 3 share a report
    ids = torch.tensor([0, 1, 2, 1, 4, 5])
    scale = torch.tensor(10.0)
    plain = ClipLoss()(ecg, text, scale)
    masked = ClipLoss(mask_same_text=True)(ecg, text, scale, text_ids=ids)
    assert masked < plain  # the duplicate no longer counts as a negative
    # By hand: rows and columns 1 and 3 lose each other's off-diagonal logit.
    logits = scale * ecg @ text.T
    blocked = logits.clone()
    blocked[1, 3] = blocked[3, 1] = float("-inf")
    targets = torch.arange(6)
    expected = (F.cross_entropy(blocked, targets) + F.cross_entropy(blocked.T, targets)) / 2
    assert torch.isclose(masked, expected)
    # With all texts distinct the mask changes nothing.
    other = _unit(6, 16, 3)
    assert torch.isclose(ClipLoss(mask_same_text=True)(ecg, other, scale, text_ids=torch.arange(6)), ClipLoss()(ecg, other, scale))


def test_per_label_topk_counts_pairs_as_the_paper_does():
    # 3 records, 4 labels. Record 0 has labels {0, 2}: label 0 ranks 1st, label 2 ranks 3rd.
    similarity = np.array([[0.9, 0.8, 0.7, 0.1], [0.1, 0.2, 0.3, 0.4], [0.5, 0.9, 0.1, 0.2]])
    findings = np.array([[1, 0, 1, 0], [0, 0, 0, 1], [1, 0, 0, 0]])
    result = per_label_topk(similarity, findings, ks=(1, 2))
    assert result["pairs"] == 4
    # top-1 hits: (0, label 0) and (1, label 3); (0, label 2) is 3rd; (2, label 0) is 2nd.
    assert result["top1"] == 50.0 and result["top2"] == 75.0
    assert result["per_label"][0] == {"count": 2, "top1": 50.0, "top2": 100.0}
    assert result["per_label"][2] == {"count": 1, "top1": 0.0, "top2": 0.0}
    assert result["per_label"][1]["count"] == 0 and math.isnan(result["per_label"][1]["top1"])


def test_masking_implied_texts_removes_exactly_the_texts_true_of_another_record():
    ecg, text = _unit(4, 16, 4), _unit(4, 16, 5)
    # record findings (multi-hot over 3 findings) and the findings each record's text states
    records = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 1], [1, 0, 1]], dtype=torch.bool)
    texts = torch.tensor([[1, 0, 0], [1, 0, 0], [0, 0, 1], [0, 1, 0]], dtype=torch.bool)
    scale = torch.tensor(10.0)
    masked = ClipLoss(mask_implied_texts=True)(ecg, text, scale, record_findings=records, text_findings=texts)
    # text j is true of record i (i != j) when texts[j] <= records[i]:
    # texts 0 and 1 ({0}) are true of records 0, 1, 3; text 2 ({2}) of records 2, 3; text 3 ({1}) of record 0.
    blocked = scale * ecg @ text.T
    for i, j in [(0, 1), (1, 0), (3, 0), (3, 1), (3, 2), (0, 3)]:
        blocked[i, j] = float("-inf")
    targets = torch.arange(4)
    expected = (F.cross_entropy(blocked, targets) + F.cross_entropy(blocked.T, targets)) / 2
    assert torch.isclose(masked, expected)
    # Disjoint finding sets: nothing is implied, the plain loss.
    eye = torch.eye(4, dtype=torch.bool)
    assert torch.isclose(ClipLoss(mask_implied_texts=True)(ecg, text, scale, record_findings=eye, text_findings=eye),
                         ClipLoss()(ecg, text, scale))
