"""Symmetric InfoNCE (CLIP's loss) over the global batch, with an optional false-negative mask."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ecgtool.distributed import DistributedContext, gather_ids, gather_with_grad


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
