"""Test-time scoring (spec 7): perturbed per-cube errors, z-scored fusion, object -> frame scores.

Every function works on any number of cubes (a whole split, one frame's objects, or a handful from a live
stream), so the batch scorer here and the streaming scorer share them. Per-cube results do not depend on how
cubes are batched: the model runs in eval mode (BatchNorm uses running statistics) and each cube's gradient
only involves that cube.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from statevad.config import ScoreConfig
from statevad.errors import UserError, atomic_path, atomic_write_json
from statevad.model import autocast_context, inference_copy

EMPTY_FRAME_SCORE = -1e5  # spec 7.3: a frame without objects is the most normal possible
STAT_KEYS = ("raw_mean", "raw_std", "flow_mean", "flow_std")
MOTION_KEYS = ("motion_mean", "motion_std")  # the optional motion term (ScoreConfig.w_motion)


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


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
    return t.to(device, non_blocking=True).permute(0, 1, 4, 2, 3).float().div_(255.0).contiguous()


def to_flow_target(flow: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """Flow cubes (B, T, P, P, 2) float16/32 -> target (B, T, 2, P, P) float32, unscaled (spec 4.5)."""
    t = _as_tensor(flow)
    if t.ndim != 5 or t.shape[-1] != 2:
        raise UserError(f"flow cubes must be (N, T, P, P, 2), got {tuple(t.shape)}")
    return t.to(device, non_blocking=True).permute(0, 1, 4, 2, 3).float().contiguous()


def per_cube_sse(target: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """Sum (not mean) of squared errors per cube: the published score is an SSE (spec 6.4, 9.1.8)."""
    return (target - output.float()).pow(2).flatten(1).sum(1)


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
                     *, epsilon: float, bf16: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Per-cube (e_raw, e_flow) SSEs after one signed-gradient step of size ``epsilon`` down the loss.

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
        e_flow = per_cube_sse(y, flow_out)
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
        out[a:a + chunk] = torch.linalg.vector_norm(f, dim=-1).flatten(1).mean(1).double().cpu().numpy()
    return out


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
         w_flow: float = 1.0, motion: np.ndarray | None = None, w_motion: float = 0.0) -> np.ndarray:
    """Cube score s = w_raw * z_raw + w_flow * z_flow (spec 7.2) [+ w_motion * z_motion].

    A zero weight drops that term. The motion term (``motion`` = :func:`cube_motion`) is our addition, off
    by default: on Ped2 the model and the speed of an object err on different frames (docs/DEVIATIONS.md).
    """
    z_raw, z_flow = zscores(e_raw, e_flow, stats)
    s = np.zeros_like(z_raw)
    if w_raw:
        s += w_raw * z_raw
    if w_flow:
        s += w_flow * z_flow
    if w_motion:
        if motion is None:
            raise ValueError("w_motion is set but no cube motion was given")
        s += w_motion * motion_zscore(motion, stats)
    return s


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
                                                       bf16=cfg.bf16)
            bar.update(b - a)
    return e_raw, e_flow


def score_split(model: nn.Module, split_data: Any, cfg: ScoreConfig, *,
                progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Per-cube (e_raw, e_flow) of a prepared split (``statevad.prepare.open_split``), in cube order."""
    return score_cubes(model, split_data.raw, split_data.flow, cfg, progress=progress)


# --------------------------------------------------------------------------- the `statevad test` driver
def open_split(work: Path, split: str) -> Any:
    from statevad.prepare import open_split as _open

    return _open(work, split)


def load_stats_json(path: str | Path) -> dict[str, float]:
    """Training statistics from a JSON file with raw_mean, raw_std, flow_mean, flow_std (and optionally
    motion_mean, motion_std for the motion term)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        return {k: float(data[k]) for k in (*STAT_KEYS, *(k for k in MOTION_KEYS if k in data))}
    except FileNotFoundError as exc:
        raise UserError(f"--stats {path} does not exist") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"--stats {path} must be a JSON object with {', '.join(STAT_KEYS)}") from exc


def _write_csv(path: Path, header: list[str], rows: Iterator[list[Any]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def _fmt(v: float) -> str:
    return f"{v:.6g}"


def write_frame_csv(path: Path, scores: np.ndarray, labels: np.ndarray | None,
                    bounds: list[tuple[str, int, int]]) -> None:
    """scores.csv: one row per frame -- clip name, frame index within the clip, score, label (-1 unknown)."""
    def rows() -> Iterator[list[Any]]:
        for name, start, stop in bounds:
            for g in range(start, stop):
                yield [name, g - start, _fmt(scores[g]), int(labels[g]) if labels is not None else -1]

    _write_csv(path, ["clip", "frame", "score", "label"], rows())


def write_object_csv(path: Path, split_data: Any, bounds: list[tuple[str, int, int]],
                     cols: dict[str, np.ndarray]) -> None:
    """objects.csv: one row per cube -- clip, frame within the clip, box, errors, z-scores, fused score."""
    frame = np.asarray(split_data.frame)
    clip = np.asarray(split_data.clip)
    box = np.asarray(split_data.box)
    names = list(cols)

    def rows() -> Iterator[list[Any]]:
        for i in range(len(frame)):
            name, start, _ = bounds[int(clip[i])]
            yield ([name, int(frame[i]) - start] + [f"{b:.2f}" for b in box[i]]
                   + [_fmt(cols[k][i]) for k in names])

    _write_csv(path, ["clip", "frame", "x1", "y1", "x2", "y2", *names], rows())


def select_clips(split_data: Any, names: list[str] | None) -> Any:
    """A view of a split restricted to the named clips, frames re-indexed from 0 (quick partial checks).

    Cubes are stored clip by clip, so each clip's cubes are one contiguous slice of the memory map.
    """
    if not names:
        return split_data
    by_name = {str(c["name"]): i for i, c in enumerate(split_data.clips)}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise UserError(f"--clips: no test clip named {', '.join(unknown)}; available: "
                        f"{', '.join(list(by_name)[:10])}{' ...' if len(by_name) > 10 else ''}")
    clip_ids = sorted({by_name[n] for n in names})
    cube_clip = np.asarray(split_data.clip)
    parts, clips, frame_maps = [], [], []
    start = 0
    for new_id, cid in enumerate(clip_ids):
        c = dict(split_data.clips[cid])
        lo, hi = np.searchsorted(cube_clip, cid, "left"), np.searchsorted(cube_clip, cid, "right")
        parts.append((lo, hi, new_id, int(c["start"]) - start))
        frame_maps.append(np.arange(int(c["start"]), int(c["start"]) + int(c["n_frames"])))
        c["start"] = start
        clips.append(c)
        start += int(c["n_frames"])
    cat = lambda arr: np.concatenate([np.asarray(arr[lo:hi]) for lo, hi, _, _ in parts])  # noqa: E731
    frame = np.concatenate([np.asarray(split_data.frame[lo:hi]) - shift for lo, hi, _, shift in parts])
    clip = np.concatenate([np.full(hi - lo, new_id, np.int32) for lo, hi, new_id, _ in parts])
    labels = None if split_data.labels is None else np.asarray(split_data.labels)[np.concatenate(frame_maps)]
    return dataclasses.replace(split_data, raw=cat(split_data.raw), flow=cat(split_data.flow), frame=frame,
                               clip=clip, box=cat(split_data.box), clips=clips, labels=labels, n_frames=start)


def run_test(work: str | Path, model_path: str | Path, *, out: str | Path | None = None,
             overrides: dict[str, Any] | None = None, stats: str | None = None,
             clips: list[str] | None = None, progress: bool = True) -> dict[str, Any]:
    """Score ``work``'s test split with a trained model and evaluate it (spec 7); write the result files.

    ``overrides``: ScoreConfig fields given on the command line (None = the checkpoint preset's value).
    ``stats``: None (use the checkpoint's), ``"train"`` (compute them on ``work``'s training cubes, for
    imported weights) or a JSON file. ``clips``: score and evaluate only these test clips (a quick check,
    not the published protocol). Returns the content of ``metrics.json``.
    """
    import time

    from statevad.config import override
    from statevad.metrics import clip_bounds, evaluate
    from statevad.training import load_checkpoint, resolve_device, select_cubes, training_stats
    from statevad.visualize import save_roc

    work, model_path = Path(work), Path(model_path)
    model, ckpt = load_checkpoint(model_path, device="cpu")
    cfg = override(ckpt.preset.score, **(overrides or {}))
    device = resolve_device(cfg.device)
    model.to(device)
    test = select_clips(open_split(work, "test"), clips)
    if test.raw.shape[1] != ckpt.preset.model.frames:
        raise UserError(f"{work} has cubes of {test.raw.shape[1]} frames but {model_path} was trained on "
                        f"{ckpt.preset.model.frames}: prepare with the same --length or use another model")
    if stats == "train":
        tr = open_split(work, "train")
        st = training_stats(model, tr.raw, tr.flow, select_cubes(len(tr.raw), None, 0),
                            batch_size=cfg.batch_size, bf16=cfg.bf16, progress=progress)
    elif stats is not None:
        st = load_stats_json(stats)
    elif ckpt.stats is not None:
        st = ckpt.stats
    else:
        raise UserError(f"{model_path} carries no training statistics (imported weights): pass --stats train "
                        "to compute them on the work directory's training cubes, or --stats FILE.json")
    bounds = clip_bounds(test.clips)
    t0 = time.perf_counter()
    e_raw, e_flow = score_split(model, test, cfg, progress=progress)
    seconds = time.perf_counter() - t0
    z_raw, z_flow = zscores(e_raw, e_flow, st)
    motion = cube_motion(test.flow)
    cube_score = fuse(e_raw, e_flow, st, cfg.w_raw, cfg.w_flow, motion, cfg.w_motion)
    frames = smooth(frame_scores(test.frame, cube_score, test.n_frames), cfg.smooth_sigma, bounds)

    # scores first: they survive an evaluation error (e.g. a --clips subset with a single class)
    out_dir = Path(out) if out is not None else work / "results" / model_path.stem
    out_dir.mkdir(parents=True, exist_ok=True)
    write_frame_csv(out_dir / "scores.csv", frames, test.labels, bounds)
    cols = {"e_raw": e_raw, "e_flow": e_flow, "z_raw": z_raw, "z_flow": z_flow, "motion": motion}
    if all(k in st for k in MOTION_KEYS) and st["motion_std"] > 0:
        cols["z_motion"] = motion_zscore(motion, st)
    cols["score"] = cube_score
    write_object_csv(out_dir / "objects.csv", test, bounds, cols)
    result = evaluate(frames, test.labels, bounds)
    save_roc(out_dir / "roc.png", test.labels, frames,
             title=f"{model_path.stem}: micro AUROC {result['micro_auroc']:.4f}")
    full = {**result, "clips": clips or "all", "model": str(model_path), "model_sha256": ckpt.sha256,
            "work": str(work),
            "score": dataclasses.asdict(cfg), "stats": st, "device": str(device), "n_cubes": int(len(e_raw)),
            "scoring_seconds": round(seconds, 3),
            "cubes_per_second": round(len(e_raw) / seconds, 2) if seconds > 0 else None}
    atomic_write_json(out_dir / "metrics.json", full)
    return full
