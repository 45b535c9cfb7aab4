"""The ECG–text model: a ResNet1d-18 ECG encoder and linear projections into one shared space.

The text side is frozen and cached (``ecgtool embed-labels``), so the model only holds the
text *projection*: a cached language-model vector goes in, a unit vector in the shared space
comes out. The exact layer-by-layer definition is in ``docs/model.md``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

# CLIP's initial temperature and its clamp (logit scale at most 100).
INITIAL_TEMPERATURE = 0.07
MAX_LOGIT_SCALE = 100.0


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the model's shapes."""

    n_leads: int = 12
    text_dim: int = 640
    embed_dim: int = 512
    widths: tuple[int, ...] = (64, 128, 256, 512)
    blocks_per_stage: tuple[int, ...] = (2, 2, 2, 2)
    stem_kernel: int = 7
    kernel: int = 3
    initial_temperature: float = INITIAL_TEMPERATURE

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "ModelConfig":
        values = dict(values)
        for key in ("widths", "blocks_per_stage"):
            values[key] = tuple(values[key])
        return cls(**values)


class BasicBlock1d(nn.Module):
    """Two ``kernel``-wide convolutions with batch norm and a residual connection."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, kernel: int):
        super().__init__()
        padding = kernel // 2
        self.conv1 = nn.Conv1d(in_channels, out_channels, kernel, stride, padding, bias=False)
        self.bn1 = nn.BatchNorm1d(out_channels)
        self.conv2 = nn.Conv1d(out_channels, out_channels, kernel, 1, padding, bias=False)
        self.bn2 = nn.BatchNorm1d(out_channels)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv1d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm1d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        return F.relu(out + identity, inplace=True)


class ResNet1d(nn.Module):
    """ResNet1d-18 by default: a stride-2 stem and max pool, four stages of two basic blocks
    (the last three halve the length), global average pooling. ``(B, 12, 5000)`` → ``(B, 512)``."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv1d(config.n_leads, config.widths[0], config.stem_kernel, 2, config.stem_kernel // 2, bias=False),
            nn.BatchNorm1d(config.widths[0]),
            nn.ReLU(inplace=True),
            nn.MaxPool1d(3, 2, 1),
        )
        stages = []
        in_channels = config.widths[0]
        for index, (width, n_blocks) in enumerate(zip(config.widths, config.blocks_per_stage)):
            blocks = []
            for block in range(n_blocks):
                stride = 2 if index > 0 and block == 0 else 1
                blocks.append(BasicBlock1d(in_channels, width, stride, config.kernel))
                in_channels = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.out_features = in_channels
        for module in self.modules():
            if isinstance(module, nn.Conv1d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x)).mean(dim=-1)


class EcgTextModel(nn.Module):
    """ECG encoder + ECG and text projections + learnable temperature (as CLIP's logit scale)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.ecg_encoder = ResNet1d(config)
        self.ecg_projection = nn.Linear(self.ecg_encoder.out_features, config.embed_dim, bias=False)
        self.text_projection = nn.Linear(config.text_dim, config.embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / config.initial_temperature)))

    def encode_ecg(self, signal: torch.Tensor) -> torch.Tensor:
        """``(B, 12, 5000)`` mV → unit vectors ``(B, embed_dim)``."""
        return F.normalize(self.ecg_projection(self.ecg_encoder(signal)), dim=-1)

    def encode_text(self, text_vectors: torch.Tensor) -> torch.Tensor:
        """Cached LM vectors ``(B, text_dim)`` → unit vectors ``(B, embed_dim)``."""
        return F.normalize(self.text_projection(text_vectors), dim=-1)

    def clamped_logit_scale(self) -> torch.Tensor:
        return self.logit_scale.clamp(max=math.log(MAX_LOGIT_SCALE)).exp()

    def forward(self, signal: torch.Tensor, text_vectors: torch.Tensor):
        return self.encode_ecg(signal), self.encode_text(text_vectors), self.clamped_logit_scale()


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def encoder_flops(config: ModelConfig = ModelConfig(), n_samples: int = 5000) -> int:
    """Floating-point operations of one ECG encoder forward pass (a multiply-add counts as 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    encoder = ResNet1d(config).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        encoder(torch.zeros(1, config.n_leads, n_samples))
    return int(counter.get_total_flops())
