"""Cube arrays → model tensors, per-cube errors and speeds, devices and autocast (docs/ARCHITECTURE.md).

The conventions every stage shares: raw cubes ``(N, T, P, P, 3) uint8`` become the model input
``(N, T, 3, P, P) float32 in [0, 1]``; flow cubes ``(N, T, P, P, 2)`` become the flow target
``(N, T, 2, P, P) float32``, unscaled (spec 4.5). Training, the training statistics and scoring all go through
these functions, so they can never disagree about a layout.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch
from torch import nn

from statevad.errors import UserError


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; an unavailable explicit device is a user error."""
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise UserError(f"--device {name!r} is not a device name: use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return device


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def autocast_context(device: torch.device | str, bf16: bool) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CPU or CUDA when asked (an opt-in approximation), otherwise a no-op context."""
    if not bf16:
        return contextlib.nullcontext()
    dev = torch.device(device)
    return torch.autocast(device_type=dev.type, dtype=torch.bfloat16)


def _as_tensor(a: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Wrap without copying when possible; read-only memory-map slices are copied (torch needs writable)."""
    if isinstance(a, torch.Tensor):
        return a
    a = np.asarray(a)
    return torch.from_numpy(a if a.flags.writeable else a.copy())


def to_model_input(raw_u8: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """Raw cubes (B, T, P, P, 3) uint8 -> model input (B, T, 3, P, P) float32 in [0, 1] (spec 4.5)."""
    t = _as_tensor(raw_u8)
    if t.dtype != torch.uint8 or t.ndim != 5 or t.shape[-1] != 3:
        raise UserError(f"raw cubes must be uint8 (N, T, P, P, 3), got {tuple(t.shape)} {t.dtype}")
    # (B, T, P, P, 3) -> (B, T, 3, P, P)
    return t.to(device, non_blocking=True).permute(0, 1, 4, 2, 3).float().div_(255.0).contiguous()


def to_flow_target(flow: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """Flow cubes (B, T, P, P, 2) float16/32 -> target (B, T, 2, P, P) float32, unscaled (spec 4.5)."""
    t = _as_tensor(flow)
    if t.ndim != 5 or t.shape[-1] != 2:
        raise UserError(f"flow cubes must be (N, T, P, P, 2), got {tuple(t.shape)}")
    # (B, T, P, P, 2) -> (B, T, 2, P, P)
    return t.to(device, non_blocking=True).permute(0, 1, 4, 2, 3).float().contiguous()


def load_batch(raw: np.ndarray, flow: np.ndarray, idx: np.ndarray,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather cubes ``idx`` (sorted) with one fancy-index read per array, convert on the fly (spec 4.5)."""
    return to_model_input(np.asarray(raw[idx]), device), to_flow_target(np.asarray(flow[idx]), device)


def per_cube_sse(target: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """Sum (not mean) of squared errors per cube: the published score is an SSE (spec 6.4, 9.1.8)."""
    return (target - output.float()).pow(2).flatten(1).sum(1)


def mean_speed(flow: torch.Tensor, channel_dim: int) -> torch.Tensor:
    """Mean optical-flow speed |(u, v)| of each cube (first axis), the (u, v) pair along ``channel_dim``."""
    return torch.linalg.vector_norm(flow.float(), dim=channel_dim).flatten(1).mean(1)


def per_cube_excess_speed(target: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """Observed minus predicted mean flow speed per cube (B, T, 2, P, P): how much faster the object moves
    than the flow branch expects from its look. Signed and averaged, unlike the SSE, so a walker whose legs
    the branch places a little wrong does not score like a fast object (docs/ANALYSIS.md section 11)."""
    return mean_speed(target, 2) - mean_speed(output, 2)


def flow_error(target: torch.Tensor, output: torch.Tensor, term: str = "sse") -> torch.Tensor:
    """The flow branch's per-cube score: ``sse`` (published) or ``excess`` (:func:`per_cube_excess_speed`);
    ``term`` is one of :data:`statevad.config.FLOW_TERMS` (validated with the config)."""
    if term.lower() == "excess":
        return per_cube_excess_speed(target, output)
    return per_cube_sse(target, output)


def cube_motion(flow: np.ndarray | torch.Tensor, chunk: int = 4096) -> np.ndarray:
    """Mean optical-flow speed of each cube (N, T, P, P, 2), in pixels per frame.

    The input of the motion term (not part of STATE): a cube's average speed, which on its own is the
    "box flow magnitude" baseline of benchmarks/README.md. Reads a memory map ``chunk`` cubes at a time.
    """
    if flow.ndim != 5 or flow.shape[-1] != 2:
        raise UserError(f"flow cubes must be (N, T, P, P, 2), got {tuple(flow.shape)}")
    out = np.empty(len(flow), np.float64)
    for a in range(0, len(flow), chunk):
        f = _as_tensor(flow[a:a + chunk]).float()
        out[a:a + chunk] = mean_speed(f, -1).double().cpu().numpy()
    return out
