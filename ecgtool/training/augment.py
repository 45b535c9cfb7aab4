"""Signal augmentation for training: random but reproducible changes an ECG can undergo in life.

Each batch is changed by draws from a generator seeded by (seed, epoch, step) alone, so a run
resumed mid-epoch makes exactly the draws the interrupted one would have made. Every change is
one a real recording shows without changing its findings:

* amplitude: the whole record scaled by a factor in ``[1 - scale, 1 + scale]`` (electrode
  contact, body habitus);
* noise: white noise of a standard deviation drawn in ``[0, noise_mv]`` mV (muscle, electronics);
* baseline wander: a sinusoid per lead, 0.05–0.5 Hz, amplitude up to ``wander_mv`` mV
  (respiration);
* time shift: the record rolled by up to ``shift_s`` seconds (another start of the same rhythm);
* lead masking: each lead zeroed with probability ``lead_mask`` (a lead off; never all twelve).

Augmentation is off by default (the paper's recipe); ``ecgtool train --augment`` turns it on.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class SignalAugment:
    """Magnitudes of each change (0 turns it off); documented in docs/train.md."""

    scale: float = 0.2
    noise_mv: float = 0.05
    wander_mv: float = 0.2
    shift_s: float = 1.0
    lead_mask: float = 0.1

    def to_dict(self) -> dict:
        return asdict(self)


def step_generator(seed: int, epoch: int, step: int, stream: int) -> torch.Generator:
    """A CPU generator for one step's draws of one kind (``stream``), independent of the others."""
    return torch.Generator().manual_seed(((seed * 1_000_003 + epoch) * 1_000_033 + step) * 16 + stream)


def augment_signals(signals: torch.Tensor, augment: SignalAugment, generator: torch.Generator,
                    sampling_rate: float = 500.0, global_batch: int | None = None, offset: int = 0) -> torch.Tensor:
    """A changed copy of ``signals`` ``(B, leads, n)`` in mV; the draws are made on the CPU.

    Under several ranks, ``signals`` is rows ``offset …`` of a ``global_batch``: the draws are
    made for the whole global batch and sliced, so that N ranks change each record as one
    process would.
    """
    batch, leads, n = signals.shape
    total = global_batch or batch
    mine = slice(offset, offset + batch)
    device = signals.device

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(total, *shape, generator=generator)[mine]

    out = signals
    if augment.shift_s:
        max_shift = int(augment.shift_s * sampling_rate)
        shifts = torch.randint(-max_shift, max_shift + 1, (total,), generator=generator)[mine]
        index = (torch.arange(n)[None, :] - shifts[:, None]) % n
        out = torch.gather(out, 2, index[:, None, :].expand(batch, leads, n).to(device))
    if augment.scale:
        out = out * (1 + augment.scale * (2 * uniform(1, 1) - 1)).to(device)
    if augment.wander_mv:
        frequency = 0.05 + 0.45 * uniform(leads, 1)
        phase = 2 * math.pi * uniform(leads, 1)
        amplitude = augment.wander_mv * uniform(leads, 1)
        t = torch.arange(n, dtype=torch.float32) / sampling_rate
        out = out + (amplitude * torch.sin(2 * math.pi * frequency * t + phase)).to(device)
    if augment.noise_mv:
        sigma = augment.noise_mv * uniform(1, 1)
        # Noise for this slice only, from a generator forked per record: the same for any world size.
        seeds = torch.randint(0, 2**62, (total,), generator=generator)[mine]
        noise = torch.stack([torch.randn(leads, n, generator=torch.Generator().manual_seed(int(s))) for s in seeds])
        out = out + (sigma * noise).to(device)
    if augment.lead_mask:
        keep = uniform(leads, 1) >= augment.lead_mask
        keep[keep.sum(dim=1).squeeze(-1) == 0] = True  # never every lead of a record
        out = out * keep.to(device, out.dtype)
    return out
