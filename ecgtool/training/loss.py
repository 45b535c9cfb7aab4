"""Symmetric InfoNCE (CLIP's loss) over the global batch, with an optional false-negative mask."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ecgtool.training.distributed import DistributedContext, gather_ids, gather_with_grad


class ClipLoss(nn.Module):
    """Mean of the ECG→text and text→ECG cross-entropies over cosine-similarity logits.

    Parameters
    ----------
    mask_same_text : bool
        Records whose report text is identical are false negatives for each other: with this
        option their off-diagonal logits are removed from both softmaxes (the paper's plain loss
        is the default). Needs ``text_ids``, one integer per distinct text.
    mask_implied_texts : bool
        More general: a text whose findings all belong to another record of the batch is true of
        that record's ECG, so it is not a negative for it (e.g. the label prompt 「左室肥大」 and a
        record with LVH and LAE). Removes those logits from both softmaxes; identical texts are a
        special case. Needs ``record_findings`` and ``text_findings`` (multi-hot).
    """

    def __init__(self, mask_same_text: bool = False, mask_implied_texts: bool = False):
        super().__init__()
        self.mask_same_text = mask_same_text
        self.mask_implied_texts = mask_implied_texts

    def forward(
        self,
        ecg_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor,
        context: DistributedContext = DistributedContext(),
        text_ids: torch.Tensor | None = None,
        record_findings: torch.Tensor | None = None,
        text_findings: torch.Tensor | None = None,
    ) -> torch.Tensor:
        all_ecg = gather_with_grad(ecg_features, context)
        all_text = gather_with_grad(text_features, context)
        logits = logit_scale * all_ecg.float() @ all_text.float().T
        if self.mask_same_text:
            if text_ids is None:
                raise ValueError("mask_same_text needs text_ids")
            ids = gather_ids(text_ids, context)
            same = ids[:, None] == ids[None, :]
            same.fill_diagonal_(False)
            logits = logits.masked_fill(same, float("-inf"))
        if self.mask_implied_texts:
            if record_findings is None or text_findings is None:
                raise ValueError("mask_implied_texts needs record_findings and text_findings")
            records = gather_ids(record_findings.to(torch.uint8), context).float()
            texts = gather_ids(text_findings.to(torch.uint8), context).float()
            # implied[i, j]: every finding of text j is a finding of record i
            implied = ((1 - records) @ texts.T) == 0
            implied.fill_diagonal_(False)
            logits = logits.masked_fill(implied, float("-inf"))
        targets = torch.arange(logits.shape[0], device=logits.device)
        return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def label_sigmoid_loss(ecg_features: torch.Tensor, label_features: torch.Tensor, scale: torch.Tensor,
                       bias: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Multi-positive loss between each ECG and every label prompt (SigLIP's sigmoid loss, Zhai et
    al. 2023, with the prompts as the text side): every (ECG, prompt) pair is one binary example,
    ``logit = scale * cosine + bias``, positive where the record has the finding (or belongs to the
    superset class). Summed over prompts, averaged over records and over the prompt languages.

    Parameters
    ----------
    ecg_features : (B, d) unit vectors
    label_features : (L, K, d) unit vectors, the K prompts in each of L languages
    targets, mask : (B, K) 0/1; pairs with mask 0 (a superset test none of the record's findings
        belongs to: unknown, not negative) add nothing
    """
    logits = scale * torch.einsum("bd,lkd->lbk", ecg_features.float(), label_features.float()) + bias
    losses = F.binary_cross_entropy_with_logits(logits, targets.float().expand_as(logits), reduction="none")
    return (losses * mask.float()).sum() / (ecg_features.shape[0] * label_features.shape[0])


def finding_bce_loss(finding_logits: torch.Tensor, findings: torch.Tensor) -> torch.Tensor:
    """The supervised baseline's loss: binary cross-entropy per finding, summed over findings and
    averaged over records (the same reduction as ``label_sigmoid_loss``)."""
    losses = F.binary_cross_entropy_with_logits(finding_logits.float(), findings.float(), reduction="none")
    return losses.sum() / finding_logits.shape[0]
