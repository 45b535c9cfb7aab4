"""Reading a training checkpoint, refusing one that is truncated, damaged or not ecgtool's."""

from __future__ import annotations

from pathlib import Path

from ecgtool.errors import EcgToolError

CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "state", "rng", "metadata")


class CheckpointError(EcgToolError):
    """A checkpoint file that cannot be used."""


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """The payload ``ecgtool train`` saved at ``path``, or a one-line ``CheckpointError``."""
    import torch

    path = Path(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=False)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except Exception as error:  # torch reports a cut file as RuntimeError, a foreign one as pickle errors
        reason = str(error).splitlines()[0][:160] if str(error) else type(error).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or damaged: {reason})") from None
    missing = [key for key in CHECKPOINT_KEYS if not isinstance(payload, dict) or key not in payload]
    if missing:
        raise CheckpointError(f"{path}: not an ecgtool training checkpoint (lacks {', '.join(missing)})")
    return payload
