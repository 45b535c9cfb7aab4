"""An exponential moving average of a model's weights (Polyak averaging), as timm's ModelEmaV2.

Validated and exported in place of the raw weights when ``ecgtool train --ema-decay`` is set:
the average of the last ~1/(1 - decay) steps' weights generalises better than the last step's
alone, and costs one extra copy of the model. Its decay warms up as ``(1 + step) / (10 + step)``
so that the first steps' random weights do not linger. Batch-norm statistics are copied from the
trained model, not averaged.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class WeightAverage:
    """``model``: the averaged copy (eval mode, no gradients)."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be between 0 and 1, got {decay}")
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Move the average towards ``model`` after optimizer step ``step`` (0-based)."""
        decay = min(self.decay, (1 + step) / (10 + step))
        for averaged, current in zip(self.model.parameters(), model.parameters()):
            averaged.lerp_(current.detach(), 1.0 - decay)
        for averaged, current in zip(self.model.buffers(), model.buffers()):
            averaged.copy_(current)

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state)
