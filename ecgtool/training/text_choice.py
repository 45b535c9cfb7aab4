"""Which text each training record is paired with at one step.

The paper pairs every record with its whole report. Two documented options move the training
text closer to what inference compares an ECG with, one label prompt per finding:

* ``lang="both"``: the record's prompt in Japanese or in English, drawn per record and step, so
  that the label prompts of both languages are aligned with the same ECG space;
* ``label_prompt_prob=p``: with probability ``p``, instead of its report prompt, the label prompt
  of one of the record's findings (drawn uniformly), i.e. the exact text ``predict`` scores.

The draws come from a generator seeded by (seed, epoch, step) alone (see
``ecgtool.training.augment``), so a resumed run draws what the interrupted one would have drawn.
"""

from __future__ import annotations

import torch


def choose_texts(findings: torch.Tensor, text_index: torch.Tensor, label_rows: torch.Tensor,
                 label_prompt_prob: float, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The text-cache row paired with each record of a batch, and the findings that text states.

    Parameters
    ----------
    findings : (B, n_findings) bool or 0/1
        The records' findings (multi-hot, registry order).
    text_index : (B, n_langs) long
        Each record's report-prompt row in each training language.
    label_rows : (n_langs, n_findings) long
        The label prompts' rows, per language.
    generator : torch.Generator or None
        None draws nothing: the first language's report prompt (validation).
    """
    findings = findings.cpu().bool()
    text_index = text_index.cpu()
    batch, n_langs = text_index.shape
    if generator is None:
        return text_index[:, 0], findings
    lang = torch.randint(0, n_langs, (batch,), generator=generator) if n_langs > 1 else torch.zeros(batch, dtype=torch.long)
    rows = text_index[torch.arange(batch), lang]
    text_findings = findings.clone()
    if label_prompt_prob > 0:
        use_label = torch.rand(batch, generator=generator) < label_prompt_prob
        use_label &= findings.any(dim=1)
        chosen = torch.multinomial(findings.float() + (~findings.any(dim=1, keepdim=True)).float(), 1,
                                   generator=generator).squeeze(1)
        label = label_rows.cpu()[lang, chosen]
        rows = torch.where(use_label, label, rows)
        single = torch.zeros_like(findings)
        single[torch.arange(batch), chosen] = True
        text_findings = torch.where(use_label[:, None], single, findings)
    return rows, text_findings
