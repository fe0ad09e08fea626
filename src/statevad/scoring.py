"""Test-time scoring (spec 7): perturbed per-cube errors, z-scored fusion, object -> frame scores.

Every function works on any number of cubes (a whole split, one frame's objects, or a handful from a live
stream), so the batch scorer here and the streaming scorer share them. Per-cube results do not depend on how
cubes are batched: the model runs in eval mode (BatchNorm uses running statistics) and each cube's gradient
only involves that cube.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from statevad.config import ScoreConfig
from statevad.errors import UserError
from statevad.model import inference_copy
from statevad.tensors import (
    autocast_context,
    flow_error,
    model_device,
    per_cube_sse,
    to_flow_target,
    to_model_input,
)

EMPTY_FRAME_SCORE = -1e5  # spec 7.3: a frame without objects is the most normal possible
STAT_KEYS = ("raw_mean", "raw_std", "flow_mean", "flow_std")
MOTION_KEYS = ("motion_mean", "motion_std")  # the optional motion term (ScoreConfig.w_motion)


def _perturbation_loss(x: torch.Tensor, y: torch.Tensor, raw_out: torch.Tensor,
                       flow_out: torch.Tensor) -> torch.Tensor:
    """Sum over cubes of each cube's mean raw error plus mean flow error.

    The original uses the batch mean of both MSEs; that is this loss divided by the batch size, a positive
    factor, so ``sign(grad)`` is identical, while this form makes each cube's gradient independent of the
    batch it is scored in. ``x`` is the target *and* the input, not detached (spec 7.1 step 4).
    """
    raw_term = (raw_out.float() - x).pow(2).flatten(1).mean(1)
    flow_term = (flow_out.float() - y).pow(2).flatten(1).mean(1)
    return (raw_term + flow_term).sum()


def perturbed_errors(model: nn.Module, raw_u8: np.ndarray | torch.Tensor, flow: np.ndarray | torch.Tensor,
                     *, epsilon: float, bf16: bool = False,
                     flow_term: str = "sse") -> tuple[np.ndarray, np.ndarray]:
    """Per-cube (e_raw, e_flow) after one signed-gradient step of size ``epsilon`` down the loss; e_raw is the
    raw branch's SSE, e_flow the flow branch's score by ``flow_term`` (:func:`statevad.tensors.flow_error`:
    the published SSE, or the excess of observed over predicted speed; the step itself is the same).

    Spec 7.1: x' = x - eps * sign(dL/dx) with no clamp, then a second forward; e_raw is measured against the
    *perturbed* input x', e_flow against the unchanged flow. ``epsilon == 0`` skips the gradient pass and
    gives the plain (unperturbed) errors of spec 6.4. The gradient is taken with respect to x only, so no
    parameter ``.grad`` accumulates.
    """
    model.eval()
    device = model_device(model)
    x = to_model_input(raw_u8, device)
    y = to_flow_target(flow, device)
    if x.shape[0] != y.shape[0] or x.shape[1] != y.shape[1]:
        raise UserError(f"raw cubes {tuple(x.shape)} and flow cubes {tuple(y.shape)} do not pair up")
    if x.shape[0] == 0:
        return np.zeros(0, np.float64), np.zeros(0, np.float64)
    if epsilon:
        x.requires_grad_(True)
        with torch.enable_grad(), autocast_context(device, bf16):
            raw_out, flow_out = model(x)
        loss = _perturbation_loss(x, y, raw_out, flow_out)
        (grad,) = torch.autograd.grad(loss, x)
        x = (x.detach() - epsilon * grad.sign())
    with torch.no_grad():
        with autocast_context(device, bf16):
            raw_out, flow_out = model(x)
        e_raw = per_cube_sse(x, raw_out)
        e_flow = flow_error(y, flow_out, flow_term)
    return e_raw.double().cpu().numpy(), e_flow.double().cpu().numpy()


def zscores(e_raw: np.ndarray, e_flow: np.ndarray, stats: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """z-score each branch with the *unperturbed training* statistics (spec 6.4, 7.2; population std)."""
    missing = [k for k in STAT_KEYS if k not in stats]
    if missing:
        raise UserError(f"training statistics lack {missing}: use a checkpoint written by `statevad train`")
    for branch in ("raw", "flow"):
        if not stats[f"{branch}_std"] > 0:
            raise UserError(f"training statistics have {branch}_std = {stats[f'{branch}_std']}: "
                            "the model reproduces its training cubes exactly; retrain on more varied data")
    z_raw = (np.asarray(e_raw, np.float64) - stats["raw_mean"]) / stats["raw_std"]
    z_flow = (np.asarray(e_flow, np.float64) - stats["flow_mean"]) / stats["flow_std"]
    return z_raw, z_flow


def motion_zscore(motion: np.ndarray, stats: dict[str, float]) -> np.ndarray:
    """z-score of the cubes' flow speed against the training cubes' (population std)."""
    missing = [k for k in MOTION_KEYS if k not in stats]
    if missing:
        raise UserError(f"training statistics lack {missing}, which the motion term (w_motion) needs: the "
                        "model file predates the term. Score without it (--w-motion 0), or let "
                        "`statevad test --stats train` compute them on the training cubes")
    if not stats["motion_std"] > 0:
        raise UserError(f"training statistics have motion_std = {stats['motion_std']}: the training cubes "
                        "do not move at all, so the motion term is undefined; use --w-motion 0")
    return (np.asarray(motion, np.float64) - stats["motion_mean"]) / stats["motion_std"]


def fuse(e_raw: np.ndarray, e_flow: np.ndarray, stats: dict[str, float], w_raw: float = 1.0,
         w_flow: float = 1.0, motion: np.ndarray | None = None, w_motion: float = 0.0,
         z_appearance: np.ndarray | None = None, w_appearance: float = 0.0) -> np.ndarray:
    """Cube score s = w_raw * z_raw + w_flow * z_flow (spec 7.2) [+ w_motion * z_motion]
    [+ w_appearance * z_appearance].

    A zero weight drops that term. The motion term (``motion`` = :func:`statevad.tensors.cube_motion`) is
    our addition, off by default: on Ped2 the model and the speed of an object err on different frames
    (docs/DEVIATIONS.md). So is the appearance term (``z_appearance``, already z-scored by
    :class:`statevad.appearance.AppearanceModel`).
    """
    z_raw, z_flow = zscores(e_raw, e_flow, stats)
    if w_motion and motion is None:
        raise ValueError("w_motion is set but no cube motion was given")
    z_motion = motion_zscore(motion, stats) if w_motion else None
    return combine(z_raw, z_flow, z_motion, w_raw, w_flow, w_motion, z_appearance, w_appearance)


def combine(z_raw: np.ndarray, z_flow: np.ndarray, z_motion: np.ndarray | None, w_raw: float, w_flow: float,
            w_motion: float, z_appearance: np.ndarray | None = None, w_appearance: float = 0.0) -> np.ndarray:
    """The weighted sum of already z-scored terms (what :func:`fuse` returns); a zero weight drops a term."""
    s = np.zeros_like(z_raw)
    if w_raw:
        s += w_raw * z_raw
    if w_flow:
        s += w_flow * z_flow
    if w_motion:
        s += w_motion * z_motion
    if w_appearance:
        if z_appearance is None:
            raise ValueError("w_appearance is set but no appearance z-scores were given")
        s += w_appearance * np.asarray(z_appearance, np.float64)
    return s


# Automatic threshold (documented in README "Scoring footage"): a fused cube score is a weighted sum of two
# (three with the motion term) z-scores over the *unperturbed training* cubes, so on normal footage it has
# mean about 0 and a standard deviation of at most |w_raw| + |w_flow| (+ |w_motion|). A frame is flagged
# when its most anomalous object lies AUTO_Z such deviations above the training mean.
AUTO_Z = 3.0


def auto_threshold(w_raw: float, w_flow: float, w_motion: float = 0.0, z: float = AUTO_Z,
                   w_appearance: float = 0.0) -> float:
    """Default frame threshold: ``z`` times the largest possible std of the fused training score."""
    return float(z * (abs(w_raw) + abs(w_flow) + abs(w_motion) + abs(w_appearance)))


def frame_scores(cube_frame: np.ndarray, cube_score: np.ndarray, n_frames: int,
                 empty: float = EMPTY_FRAME_SCORE) -> np.ndarray:
    """Frame score = max over the frame's cubes; a frame without cubes scores ``empty`` (spec 7.3).

    Like the original's score map initialised to -1e5 with a running max, a cube scoring below ``empty``
    cannot pull its frame below ``empty``.
    """
    cube_frame = np.asarray(cube_frame, dtype=np.int64)
    cube_score = np.asarray(cube_score, dtype=np.float64)
    if cube_frame.shape != cube_score.shape:
        raise UserError(f"{cube_frame.size} cube frame indices but {cube_score.size} cube scores")
    if cube_frame.size and (cube_frame.min() < 0 or cube_frame.max() >= n_frames):
        raise UserError(f"cube frame indices span [{cube_frame.min()}, {cube_frame.max()}], "
                        f"outside the split's {n_frames} frames: the work directory is inconsistent")
    if not np.isfinite(cube_score).all():
        raise UserError("cube scores contain NaN or inf: the model or the cubes are corrupted")
    out = np.full(n_frames, empty, dtype=np.float64)
    np.maximum.at(out, cube_frame, cube_score)
    return out


def smooth(scores: np.ndarray, sigma: float, bounds: Any, empty: float = EMPTY_FRAME_SCORE) -> np.ndarray:
    """Gaussian smoothing of frame scores within each clip (never across a clip boundary); off when 0.

    Not part of the published protocol. Frames without objects (``empty``) would drag their neighbours
    towards -1e5, so before filtering they take the lowest real frame score of the split.
    ``bounds``: (name, start, stop) per clip, see :func:`statevad.metrics.clip_bounds`.
    """
    from scipy.ndimage import gaussian_filter1d

    out = np.asarray(scores, dtype=np.float64).copy()
    if sigma <= 0:
        return out
    real = out > empty
    if real.any():
        out[~real] = out[real].min()
    for _name, start, stop in bounds:
        if stop > start:
            out[start:stop] = gaussian_filter1d(out[start:stop], sigma, mode="nearest")
    return out


def _batches(n: int, batch_size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, batch_size):
        yield start, min(n, start + batch_size)


def score_cubes(model: nn.Module, raw: np.ndarray, flow: np.ndarray, cfg: ScoreConfig, *,
                progress: bool = True, desc: str = "scoring") -> tuple[np.ndarray, np.ndarray]:
    """Perturbed errors for all cubes of (memory-mapped) arrays, ``cfg.batch_size`` cubes per step.

    Batches run across frame boundaries (the cubes of many frames at once), which is what makes scoring
    fast; contiguous slices of a memory map are cheap to read.
    """
    if cfg.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {cfg.batch_size}")
    model = inference_copy(model)  # BatchNorm folded into the convolutions: same numbers, less work
    n = len(raw)
    e_raw = np.empty(n, np.float64)
    e_flow = np.empty(n, np.float64)
    with tqdm(total=n, desc=desc, unit="cube", disable=not progress, dynamic_ncols=True) as bar:
        for a, b in _batches(n, cfg.batch_size):
            e_raw[a:b], e_flow[a:b] = perturbed_errors(model, raw[a:b], flow[a:b], epsilon=cfg.epsilon,
                                                       bf16=cfg.bf16, flow_term=cfg.flow_term)
            bar.update(b - a)
    return e_raw, e_flow


def score_split(model: nn.Module, split_data: Any, cfg: ScoreConfig, *,
                progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Per-cube (e_raw, e_flow) of a prepared split (:func:`statevad.workdir.open_split`), in cube order."""
    return score_cubes(model, split_data.raw, split_data.flow, cfg, progress=progress)


