"""The ECG–text model: a ResNet1d-18 ECG encoder and linear projections into one shared space.

The text side is frozen and cached (``ecgtool embed-labels``), so the model only holds the
text *projection*: a cached language-model vector goes in, a unit vector in the shared space
comes out. The exact layer-by-layer definition is in ``docs/model.md``.

Optionally the encoder begins with a fixed band-limit (``input_lowpass_hz``): a linear-phase FIR
low-pass on every lead of the canonical 500 Hz input, then every ``input_decimation``-th sample.
It has no trained parameter and is rebuilt from the config, so it travels with the weights and
the bundle declares it in its input contract: a model trained on 100 Hz records resampled to
500 Hz sees the same band in a 500 Hz record it is given later.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# CLIP's initial temperature and its clamp (logit scale at most 100).
INITIAL_TEMPERATURE = 0.07
MAX_LOGIT_SCALE = 100.0
# The label loss's sigmoid (SigLIP, Zhai et al. 2023): logit = scale * cosine + bias, both learnt.
# Initial scale 10 as SigLIP's; initial bias near the log-odds of a finding's prior (about 1 in 50).
INITIAL_LABEL_LOGIT_SCALE = 10.0
INITIAL_LABEL_LOGIT_BIAS = -4.0
# Parameters added after bundles and checkpoints of earlier versions were written: absent from
# those, they keep their initial values when such a checkpoint is loaded.
LATER_PARAMETERS = ("label_logit_scale", "label_logit_bias")


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
    input_lowpass_hz: float | None = None
    input_decimation: int = 1
    # The supervised baseline's linear head (pooled encoder features → one logit per finding);
    # 0 for the contrastive model, which scores findings by their label prompts instead.
    finding_head: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "ModelConfig":
        values = dict(values)
        for key in ("widths", "blocks_per_stage"):
            values[key] = tuple(values[key])
        return cls(**values)


# The band-limit's design: Kaiser-window FIR, 60 dB stopband, 10 Hz transition centred on the cutoff.
BAND_LIMIT_ATTENUATION_DB = 60.0
BAND_LIMIT_TRANSITION_HZ = 10.0


def kaiser_lowpass(cutoff_hz: float, sampling_rate: float) -> np.ndarray:
    """The band-limit's taps: a windowed-sinc low-pass with Kaiser's window, sized and shaped by
    Kaiser's formulas for BAND_LIMIT_ATTENUATION_DB and BAND_LIMIT_TRANSITION_HZ, unit gain at DC.
    The same design as ``scipy.signal.firwin(kaiserord(...))`` (tested equal), in NumPy so that
    loading a model does not import scipy.signal (about a second)."""
    attenuation = BAND_LIMIT_ATTENUATION_DB
    width = BAND_LIMIT_TRANSITION_HZ / (sampling_rate / 2)
    n_taps = int(np.ceil((attenuation - 7.95) / 2.285 / (np.pi * width) + 1)) | 1  # odd: centred, linear phase
    beta = 0.1102 * (attenuation - 8.7)  # Kaiser's beta for attenuation above 50 dB
    relative_cutoff = cutoff_hz / (sampling_rate / 2)
    offsets = np.arange(n_taps) - (n_taps - 1) / 2
    taps = relative_cutoff * np.sinc(relative_cutoff * offsets) * np.kaiser(n_taps, beta)
    return taps / taps.sum()


class BandLimit(nn.Module):
    """Fixed (untrained) linear-phase low-pass on every lead, then every ``decimation``-th sample.

    ``(B, leads, n)`` at ``sampling_rate`` → ``(B, leads, ceil(n / decimation))``; the edges are
    extended by reflection, and the filter is centred, so the output is not delayed.
    """

    def __init__(self, n_leads: int, sampling_rate: float, cutoff_hz: float, decimation: int):
        super().__init__()
        nyquist = sampling_rate / 2
        if not 0 < cutoff_hz + BAND_LIMIT_TRANSITION_HZ / 2 <= nyquist:
            raise ValueError(f"low-pass cutoff {cutoff_hz} Hz does not fit below {nyquist} Hz")
        if decimation < 1 or cutoff_hz + BAND_LIMIT_TRANSITION_HZ / 2 > sampling_rate / decimation / 2 + 1e-9:
            raise ValueError(f"decimation by {decimation} would alias a {cutoff_hz} Hz band")
        taps = kaiser_lowpass(cutoff_hz, sampling_rate)
        self.decimation = decimation
        self.register_buffer("taps", torch.tensor(taps, dtype=torch.float32).repeat(n_leads, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = self.taps.shape[-1] // 2
        padded = F.pad(x, (half, half), mode="reflect")
        return F.conv1d(padded, self.taps.to(x.dtype), stride=self.decimation, groups=x.shape[1])


def input_filters(config: ModelConfig, sampling_rate: float) -> list[dict]:
    """What the encoder does to its input before the first trained layer, for the input contract."""
    if config.input_lowpass_hz is None:
        return []
    band = BandLimit(config.n_leads, sampling_rate, config.input_lowpass_hz, config.input_decimation)
    return [{
        "type": "lowpass",
        "applied_by": "the model (first layer of the ECG encoder, fixed, not trained)",
        "design": f"FIR, Kaiser window, {BAND_LIMIT_ATTENUATION_DB:g} dB stopband, linear phase, centred",
        "cutoff_hz": config.input_lowpass_hz,
        "passband_edge_hz": config.input_lowpass_hz - BAND_LIMIT_TRANSITION_HZ / 2,
        "stopband_edge_hz": config.input_lowpass_hz + BAND_LIMIT_TRANSITION_HZ / 2,
        "taps": int(band.taps.shape[-1]),
        "edges": "reflected",
        "decimation": config.input_decimation,
        "encoder_rate_hz": sampling_rate / config.input_decimation,
    }]


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

    def __init__(self, config: ModelConfig, sampling_rate: float = 500.0):
        super().__init__()
        self.band_limit = None
        if config.input_lowpass_hz is not None:
            self.band_limit = BandLimit(config.n_leads, sampling_rate, config.input_lowpass_hz, config.input_decimation)
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
        if self.band_limit is not None:
            x = self.band_limit(x)
        return self.stages(self.stem(x)).mean(dim=-1)


class StepOutputs(NamedTuple):
    """What one training forward pass gives (``None`` where not asked for)."""

    ecg: torch.Tensor
    text: torch.Tensor | None
    logit_scale: torch.Tensor
    labels: torch.Tensor | None = None
    label_logit_scale: torch.Tensor | None = None
    label_logit_bias: torch.Tensor | None = None
    finding_logits: torch.Tensor | None = None


class EcgTextModel(nn.Module):
    """ECG encoder + ECG and text projections + learnable temperature (as CLIP's logit scale),
    the label loss's sigmoid scale and bias, and for the supervised baseline a finding head."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.ecg_encoder = ResNet1d(config)
        self.ecg_projection = nn.Linear(self.ecg_encoder.out_features, config.embed_dim, bias=False)
        self.text_projection = nn.Linear(config.text_dim, config.embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / config.initial_temperature)))
        self.label_logit_scale = nn.Parameter(torch.tensor(math.log(INITIAL_LABEL_LOGIT_SCALE)))
        self.label_logit_bias = nn.Parameter(torch.tensor(INITIAL_LABEL_LOGIT_BIAS))
        self.finding_head = nn.Linear(self.ecg_encoder.out_features, config.finding_head) if config.finding_head else None

    def encode_ecg(self, signal: torch.Tensor) -> torch.Tensor:
        """``(B, 12, 5000)`` mV → unit vectors ``(B, embed_dim)``."""
        return F.normalize(self.ecg_projection(self.ecg_encoder(signal)), dim=-1)

    def encode_text(self, text_vectors: torch.Tensor) -> torch.Tensor:
        """Cached LM vectors ``(..., text_dim)`` → unit vectors ``(..., embed_dim)``."""
        return F.normalize(self.text_projection(text_vectors), dim=-1)

    def clamped_logit_scale(self) -> torch.Tensor:
        return self.logit_scale.clamp(max=math.log(MAX_LOGIT_SCALE)).exp()

    def clamped_label_logit_scale(self) -> torch.Tensor:
        return self.label_logit_scale.clamp(max=math.log(MAX_LOGIT_SCALE)).exp()

    def forward(self, signal: torch.Tensor, text_vectors: torch.Tensor | None,
                label_vectors: torch.Tensor | None = None) -> StepOutputs:
        """One training pass: the ECG embeddings, the paired texts' (``text_vectors``), the label
        prompts' (``label_vectors``, any leading shape) and, with a finding head, its logits."""
        features = self.ecg_encoder(signal)
        ecg = F.normalize(self.ecg_projection(features), dim=-1)
        text = self.encode_text(text_vectors) if text_vectors is not None else None
        labels = self.encode_text(label_vectors) if label_vectors is not None else None
        return StepOutputs(
            ecg, text, self.clamped_logit_scale(), labels,
            self.clamped_label_logit_scale() if labels is not None else None,
            self.label_logit_bias if labels is not None else None,
            self.finding_head(features) if self.finding_head is not None else None,
        )

    def load_checkpoint_state(self, state_dict: dict) -> None:
        """``load_state_dict``, also of checkpoints written before ``LATER_PARAMETERS`` existed."""
        missing, unexpected = self.load_state_dict(state_dict, strict=False)
        missing = [key for key in missing if key not in LATER_PARAMETERS]
        if missing or unexpected:
            raise RuntimeError(f"checkpoint does not fit the model: missing {missing}, unexpected {unexpected}")


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def encoder_flops(config: ModelConfig = ModelConfig(), n_samples: int = 5000) -> int:
    """Floating-point operations of one ECG encoder forward pass (a multiply-add counts as 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    encoder = ResNet1d(config).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        encoder(torch.zeros(1, config.n_leads, n_samples))
    return int(counter.get_total_flops())
