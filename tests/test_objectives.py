"""The v3 objectives' pieces on the real registry: which prompts a record is positive for, the
label loss against a brute-force binary cross-entropy, the learning-rate schedules and the
weight average."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ecgtool.training.label_targets import label_prompts
from ecgtool.training.loss import finding_bce_loss, label_sigmoid_loss
from ecgtool.registry import load_registry
from ecgtool.text_cache import Prompt, TextCache
from ecgtool.training.data import TrainingDataError
from ecgtool.training.train import TrainConfig, _schedule
from ecgtool.training.weight_average import WeightAverage


def _cache_of_every_prompt(registry, langs=("ja", "en")) -> TextCache:
    prompts = []
    for lang in langs:
        prompts += [Prompt(registry.prompt([f.id], lang), "label", lang, (f.id,), f.id) for f in registry.findings]
        for test, classes in registry.supersets.items():
            prompts += [Prompt(registry.superset_prompt(test, c.id, lang), "superset", lang, (), f"{test}/{c.id}") for c in classes]
    return TextCache(None, np.zeros((len(prompts), 4), np.float32), prompts, {})


def test_a_record_is_positive_for_its_findings_and_their_superset_classes_and_unknown_elsewhere():
    registry = load_registry()
    prompts = label_prompts(registry, _cache_of_every_prompt(registry), ("ja", "en"))
    n = len(registry.findings)
    assert prompts.rows.shape == (2, len(prompts.names)) and prompts.names[:n] == registry.ids()
    af = next(f for f in registry.findings if "rhythm" in f.supersets and f.en.lower() == "atrial fibrillation")
    findings = torch.zeros(2, n, dtype=torch.bool)
    findings[0, registry.index(af.id)] = True
    targets, mask = prompts.targets(findings)
    positive = {prompts.names[k] for k in np.flatnonzero(targets[0].numpy())}
    assert af.id in positive
    for cls in af.supersets["rhythm"]:
        assert f"rhythm/{cls}" in positive
    rhythm_columns = [k for k, name in enumerate(prompts.names) if name.startswith("rhythm/")]
    assert mask[0, rhythm_columns].all()          # AF says what the rhythm is: the other rhythms are negatives
    assert not mask[1, rhythm_columns].any()      # no finding at all: the rhythm is unknown, not negative
    assert mask[:, :n].all() and targets[1].sum() == 0


def test_a_missing_prompt_vector_is_a_one_line_error_naming_the_prompt():
    registry = load_registry()
    with pytest.raises(TrainingDataError, match="no vector for the en prompt"):
        label_prompts(registry, _cache_of_every_prompt(registry, ("ja",)), ("ja", "en"))


def test_label_loss_equals_binary_cross_entropy_summed_over_prompts_and_masked():
    torch.manual_seed(0)
    ecg = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    labels = torch.nn.functional.normalize(torch.randn(2, 5, 8), dim=-1)
    targets = torch.randint(0, 2, (3, 5))
    mask = torch.ones(3, 5, dtype=torch.uint8)
    mask[1, 3:] = 0
    scale, bias = torch.tensor(10.0), torch.tensor(-4.0)
    expected = 0.0
    for lang in range(2):
        for b in range(3):
            for k in range(5):
                if mask[b, k]:
                    p = torch.sigmoid(scale * ecg[b] @ labels[lang, k] + bias)
                    expected += -(targets[b, k] * torch.log(p) + (1 - targets[b, k]) * torch.log(1 - p))
    torch.testing.assert_close(label_sigmoid_loss(ecg, labels, scale, bias, targets, mask), expected / 6)
    logits = torch.tensor([[0.0, 2.0]])
    assert finding_bce_loss(logits, torch.tensor([[1, 0]])).item() == pytest.approx(math.log(2) + math.log(1 + math.e ** 2))


def test_cosine_schedule_warms_up_then_decays_to_zero():
    factor = _schedule(TrainConfig(schedule="cosine", warmup_steps=10), 110)
    assert factor(0) == pytest.approx(0.1) and factor(9) == pytest.approx(1.0)
    assert factor(10) == pytest.approx(1.0) and factor(60) == pytest.approx(0.5) and factor(110) == pytest.approx(0.0)
    linear = _schedule(TrainConfig(schedule="linear", warmup_steps=10), 110)
    assert linear(60) == pytest.approx(0.5) and factor(35) > linear(35)


def test_weight_average_follows_the_weights_with_its_warmed_up_decay():
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    average = WeightAverage(model, 0.9)
    with torch.no_grad():
        model.weight.fill_(1.0)
    average.update(model, 0)   # decay min(0.9, 1/10) = 0.1
    torch.testing.assert_close(average.model.weight, torch.full((1, 2), 0.9))
    average.update(model, 1000)  # decay 0.9
    torch.testing.assert_close(average.model.weight, torch.full((1, 2), 0.91))
    assert not average.model.weight.requires_grad
