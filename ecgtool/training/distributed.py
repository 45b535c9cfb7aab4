"""Rank and world size under ``torchrun``, process-group setup, and batch norm across ranks.

``torchrun`` sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; without them everything runs as a
single process. NCCL is used on CUDA, gloo on CPU. A process started by ``torchrun`` joins a
process group even alone (``--nproc_per_node=1``), so that one GPU exercises the path many take.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
from torch import nn

# torch.distributed.nn.functional (collectives with autograd) is marked deprecated in favour of a
# private module; it is the public API that does what this file needs.
warnings.filterwarnings("ignore", message="torch.distributed.nn.functional", category=FutureWarning)


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    launched: bool = False  # by torchrun, which may start a single rank

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1 or self.launched

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def context_from_environment() -> DistributedContext:
    """What ``torchrun`` says about this process (rank 0 of 1 when not launched by it)."""
    return DistributedContext(
        rank=int(os.environ.get("RANK", 0)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
        launched="TORCHELASTIC_RUN_ID" in os.environ,
    )


def init_distributed(device: torch.device) -> DistributedContext:
    """Join the process group ``torchrun`` prepared (no-op for a single process)."""
    context = context_from_environment()
    if context.is_distributed and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(context.local_rank)
        dist.init_process_group(backend=backend, rank=context.rank, world_size=context.world_size)
    return context


def gather_with_grad(tensor: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    """Concatenate every rank's ``tensor`` in rank order; gradients flow back to each source.

    Every rank then computes the same loss over the whole global batch; the backward of the
    gather sums the ranks' gradients into each local slice, and DDP's averaging of parameter
    gradients turns that back into exactly the single-process gradient.
    """
    if not context.is_distributed:
        return tensor
    return torch.cat(dist_nn.all_gather(tensor), dim=0)


def gather_ids(tensor: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    """Concatenate an integer tensor from every rank, in rank order (no gradient)."""
    if not context.is_distributed:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(context.world_size)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


class CpuSyncBatchNorm1d(nn.BatchNorm1d):
    """Batch norm whose training statistics cover the global batch, for gloo/CPU runs.

    ``torch.nn.SyncBatchNorm`` accepts only accelerator tensors; this is the same computation
    (sums and counts all-reduced with autograd) for CPU tests and CPU multi-process runs.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        channels = x.shape[1]
        dims = (0, 2)
        count = torch.full((1,), float(x.shape[0] * x.shape[2]), dtype=x.dtype, device=x.device)
        total = dist_nn.all_reduce(torch.cat([x.sum(dims), count]))
        n = total[-1]
        mean = total[:channels] / n
        centred = x - mean[None, :, None]
        var = dist_nn.all_reduce((centred * centred).sum(dims)) / n
        with torch.no_grad():
            momentum = self.momentum if self.momentum is not None else 0.1
            self.running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
            self.running_var.mul_(1 - momentum).add_(var.detach() * n / (n - 1), alpha=momentum)
            self.num_batches_tracked.add_(1)
        normalised = centred * torch.rsqrt(var + self.eps)[None, :, None]
        return normalised * self.weight[None, :, None] + self.bias[None, :, None]


def convert_batchnorm_for_ranks(module: nn.Module, device: torch.device) -> nn.Module:
    """Make every batch norm see the global batch: ``SyncBatchNorm`` on CUDA, ours on CPU."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm1d) and not isinstance(child, CpuSyncBatchNorm1d):
            replacement = CpuSyncBatchNorm1d(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            replacement.load_state_dict(child.state_dict())
            setattr(module, name, replacement)
        else:
            convert_batchnorm_for_ranks(child, device)
    return module
