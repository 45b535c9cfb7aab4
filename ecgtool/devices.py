"""``--device`` values, checked once for every command: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""

from __future__ import annotations

import re

from ecgtool.errors import EcgToolError

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


class DeviceError(EcgToolError):
    """A device name that is not one of ours, or a GPU this machine does not have."""


def resolve_device(name: str) -> "torch.device":
    """``auto`` is CUDA when present, else the CPU; anything else must exist on this machine."""
    import torch  # here, so that importing the CLI stays fast

    name = name.strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", name)
    if not match:
        raise DeviceError(f"--device {name}: expected {DEVICE_CHOICES}")
    if not torch.cuda.is_available():
        raise DeviceError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    index = int(match.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise DeviceError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device("cuda", index)
