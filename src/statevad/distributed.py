"""Distributed training support: torchrun detection, process group, a CPU-capable SyncBatchNorm.

``torchrun --nproc_per_node N -m statevad train ...`` starts N copies of the CLI with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set. :func:`session` turns that
environment into a :class:`DistContext` (gloo on CPU, NCCL on CUDA, one GPU per local rank) and always
destroys the process group on the way out, so a failing rank exits instead of leaving the others waiting.

:func:`training.train <statevad.training.train>` keeps the *global* batch what a 1-process run uses: each
rank takes its share of every global batch, scales its loss so that the DDP gradient average equals the
gradient of the global-batch mean, and the training statistics (spec 6.4) are gathered over all cubes.

BatchNorm: PyTorch's ``nn.SyncBatchNorm`` refuses CPU tensors, and per-rank BatchNorm statistics would
make an N-rank run differ from the 1-process run it stands for. :class:`SyncBatchNorm2d` computes the
batch statistics over the global batch with a differentiable all-reduce on any backend, so an N-rank run
matches the 1-process run up to floating-point summation order.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from statevad.errors import UserError
from statevad.model.kernels import update_running_stats

_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a distributed run; ``world == 1`` is an ordinary run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def is_main(self) -> bool:
        """Rank 0 alone logs, shows progress and writes files (the others would race it)."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over ranks in place (no-op for one process); returns it."""
        if self.active:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def broadcast_int(self, value: int) -> int:
        """Rank 0's ``value`` on every rank (e.g. the epoch a resume starts from)."""
        if not self.active:
            return value
        t = torch.tensor([value], dtype=torch.int64, device=self.comm_device)
        dist.broadcast(t, src=0)
        return int(t.item())

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    @property
    def comm_device(self) -> torch.device:
        """Where collective tensors live: the rank's GPU for NCCL, the CPU for gloo."""
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")


SINGLE = DistContext()


def env_world() -> tuple[int, int, int] | None:
    """(rank, world, local_rank) from torchrun's environment, or None outside torchrun."""
    if not all(k in os.environ for k in _ENV):
        return None
    try:
        rank, world, local = (int(os.environ[k]) for k in _ENV)
    except ValueError:
        raise UserError(f"RANK/WORLD_SIZE/LOCAL_RANK must be integers, got "
                        f"{[os.environ[k] for k in _ENV]}") from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise UserError(f"inconsistent torchrun environment: RANK={rank} WORLD_SIZE={world} "
                        f"LOCAL_RANK={local}")
    return rank, world, local


def resolve_rank_device(device: torch.device, ctx: DistContext) -> torch.device:
    """One GPU per local rank (``cuda`` -> ``cuda:LOCAL_RANK``); CPU ranks share the CPU."""
    if device.type == "cuda" and ctx.active:
        if ctx.local_rank >= torch.cuda.device_count():
            raise UserError(f"local rank {ctx.local_rank} has no GPU: this node has "
                            f"{torch.cuda.device_count()}; lower --nproc_per_node")
        return torch.device("cuda", ctx.local_rank)
    return device


@contextmanager
def session(device: torch.device, timeout_s: float = 1800.0) -> Iterator[DistContext]:
    """Initialise the process group when run under torchrun (world > 1); always tear it down."""
    world = env_world()
    if world is None or world[1] == 1:
        yield SINGLE
        return
    rank, size, local = world
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(local)
    dist.init_process_group(backend=backend, rank=rank, world_size=size,
                            timeout=datetime.timedelta(seconds=timeout_s))
    try:
        yield DistContext(rank, size, local, backend)
    finally:
        dist.destroy_process_group()


# ------------------------------------------------------------------------------------ sync batchnorm
class _AllReduceSum(torch.autograd.Function):
    """Differentiable sum over ranks: the gradient of a sum is the sum of the gradients."""

    @staticmethod
    def forward(ctx: object, tensor: torch.Tensor) -> torch.Tensor:  # noqa: ARG004 - autograd signature
        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:  # noqa: ARG004 - autograd signature
        out = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out


class SyncBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover the batch of all ranks, on CPU (gloo) or GPU.

    The per-channel count, sum and sum of squares are all-reduced with a differentiable all-reduce (its
    backward all-reduces the gradients), in float64 so that the
    one-pass variance loses nothing against BatchNorm's own. Outside a process group, or in eval mode,
    it is plain BatchNorm; parameters and buffers are those of ``nn.BatchNorm2d`` (same state_dict keys).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()
                and dist.get_world_size() > 1):
            return F.batch_norm(x.contiguous(), self.running_mean, self.running_var, self.weight, self.bias,
                                self.training, self.momentum if self.momentum is not None else 0.1, self.eps)
        c = x.shape[1]
        xd = x.double()
        count = torch.full((1,), float(x.numel() // max(c, 1)), dtype=torch.float64, device=x.device)
        packed = torch.cat([xd.sum(dim=(0, 2, 3)), (xd * xd).sum(dim=(0, 2, 3)), count])
        packed = _AllReduceSum.apply(packed)
        n = packed[-1]
        mean = packed[:c] / n
        var = (packed[c:2 * c] / n - mean * mean).clamp_min(0.0)
        update_running_stats(self, mean.detach(), var.detach(), float(n.item()))
        shape = (1, c, 1, 1)
        inv = torch.rsqrt(var + self.eps)
        out = (xd - mean.view(shape)) * inv.view(shape)
        if self.affine:
            out = out * self.weight.double().view(shape) + self.bias.double().view(shape)
        return out.to(x.dtype)

    def relu(self, x: torch.Tensor) -> torch.Tensor:
        """ReLU(self(x)): the norm-slot interface of the network's double convs (``bn.relu(x)``)."""
        return F.relu(self(x), inplace=True)


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d (in place) by :class:`SyncBatchNorm2d` carrying the same state."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, SyncBatchNorm2d):
            sync = SyncBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                   child.track_running_stats)
            sync.load_state_dict(child.state_dict())
            sync.to(next(iter(child.state_dict().values())).device)
            setattr(module, name, sync)
        else:
            convert_sync_batchnorm(child)
    return module
