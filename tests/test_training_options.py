"""The training options for small public data (docs/train.md): text choice per step, signal
augmentation, both languages; each reproducible from (seed, epoch, step) so that resume is exact
(tests/test_train.py resumes a run that uses them all)."""

from __future__ import annotations

import torch

from ecgtool.training.augment import SignalAugment, augment_signals, step_generator
from ecgtool.training.text_choice import choose_texts


def test_label_prompt_choice_takes_one_of_the_records_own_findings():
    findings = torch.zeros(200, 98, dtype=torch.bool)
    findings[:, 3] = True
    findings[::2, 40] = True
    text_index = torch.stack([torch.arange(200), 1000 + torch.arange(200)], dim=1)  # ja, en report rows
    label_rows = torch.stack([5000 + torch.arange(98), 6000 + torch.arange(98)])
    rows, stated = choose_texts(findings, text_index, label_rows, 0.5, step_generator(0, 0, 0, 1))
    is_label = rows >= 5000
    assert 0.35 < is_label.float().mean() < 0.65
    label_findings = (rows[is_label] % 1000)
    assert set(label_findings.tolist()) <= {3, 40}
    for i in torch.nonzero(is_label).flatten().tolist():
        assert findings[i, rows[i] % 1000] and stated[i].sum() == 1 and stated[i, rows[i] % 1000]
    reports = ~is_label
    assert torch.equal(stated[reports], findings[reports])
    english = ((rows >= 1000) & (rows < 5000)) | (rows >= 6000)
    assert 0.35 < english.float().mean() < 0.65  # both languages drawn
    again, _ = choose_texts(findings, text_index, label_rows, 0.5, step_generator(0, 0, 0, 1))
    assert torch.equal(rows, again)
    plain, plain_stated = choose_texts(findings, text_index, label_rows, 0.5, None)
    assert torch.equal(plain, text_index[:, 0]) and torch.equal(plain_stated, findings)


def test_augmentation_is_reproducible_keeps_shape_and_slices_like_one_process():
    signals = torch.randn(8, 12, 5000)
    augment = SignalAugment()
    one = augment_signals(signals, augment, step_generator(1, 2, 3, 2))
    two = augment_signals(signals, augment, step_generator(1, 2, 3, 2))
    assert torch.equal(one, two) and one.shape == signals.shape and not torch.equal(one, signals)
    # rank 1 of 2 changes its four records as one process changes records 4-7
    half = augment_signals(signals[4:], augment, step_generator(1, 2, 3, 2), global_batch=8, offset=4)
    torch.testing.assert_close(half, one[4:])
    off = augment_signals(signals, SignalAugment(0, 0, 0, 0, 0), step_generator(1, 2, 3, 2))
    assert torch.equal(off, signals)
