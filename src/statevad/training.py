"""Training (spec 6): Adam on MSE(raw) + MSE(flow), then the training statistics of spec 6.4.

The loop is split into pure pieces -- :func:`select_cubes` (which cubes), :func:`epoch_batches` (the seeded
sampler, already rank-aware), :func:`statevad.tensors.load_batch` (memory map -> tensors), :func:`train_step`
(one optimisation step) and :func:`training_stats` (spec 6.4) -- so that a distributed (torchrun / DDP) driver
can wrap the model and reuse all of them, reducing the loss and the statistics across ranks. The model file
and the per-epoch resume state are written by :mod:`statevad.checkpoint`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from statevad.checkpoint import load_resume, resume_path, save_checkpoint, save_resume
from statevad.config import LR_SCHEDULES, Preset, TrainConfig, override
from statevad.distributed import SINGLE, DistContext, convert_sync_batchnorm, resolve_rank_device
from statevad.errors import UserError
from statevad.files import remove_stale_temps
from statevad.model import build_model, inference_copy
from statevad.settings import recorded_stages
from statevad.tensors import (
    autocast_context,
    cube_motion,
    flow_error,
    load_batch,
    per_cube_sse,
    resolve_device,
)
from statevad.workdir import SplitData, open_split


# ------------------------------------------------------------------------------------------- helpers
def fit_preset_to_cubes(preset: Preset, n_frames: int) -> Preset:
    """The network's T must equal the cube length of the work directory; the work directory wins."""
    if n_frames % 2 != 1:
        raise UserError(f"training cubes have {n_frames} frames; STATE needs 2l+1 (odd)")
    return Preset(name=preset.name, box=preset.box, flow=preset.flow,
                  cube=override(preset.cube, length=(n_frames - 1) // 2),
                  model=override(preset.model, frames=n_frames), train=preset.train, score=preset.score)


# ------------------------------------------------------------------------------------------ sampler
def select_cubes(n_total: int, max_cubes: int | None, seed: int) -> np.ndarray:
    """Indices of the training cubes used: all, or a seeded random subsample of ``max_cubes`` (sorted)."""
    if max_cubes is not None and max_cubes < 2:
        raise UserError(f"--max-cubes must be at least 2, got {max_cubes}")
    if max_cubes is None or max_cubes >= n_total:
        return np.arange(n_total, dtype=np.int64)
    rng = np.random.default_rng([seed, 0x5E1EC7])
    return np.sort(rng.choice(n_total, size=max_cubes, replace=False)).astype(np.int64)


def epoch_batches(indices: np.ndarray, batch_size: int, *, seed: int, epoch: int, rank: int = 0,
                  world: int = 1) -> list[np.ndarray]:
    """Seeded shuffled mini-batches of one epoch; each batch sorted so the memory map is read forward.

    The permutation depends only on (seed, epoch), so a resumed run sees exactly the batches an
    uninterrupted one would. With ``world > 1`` every global batch is split into contiguous per-rank shares
    (the global batch stays ``batch_size``), which is what a DDP driver needs. The last partial batch is
    kept, as in the original DataLoader.
    """
    if batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}")
    perm = np.random.default_rng([seed, epoch]).permutation(indices)
    out = []
    for start in range(0, len(perm), batch_size):
        share = np.array_split(perm[start:start + batch_size], world)[rank]
        out.append(np.sort(share))
    return out


# ------------------------------------------------------------------------------------ optimisation
def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Spec 6.3: Adam, lr 1e-3, betas (0.9, 0.999), eps 1e-7, no weight decay; the rate of each step comes
    from :func:`scheduled_lr` (constant, as published, unless ``cfg.lr_schedule`` says otherwise)."""
    if cfg.lr_schedule not in LR_SCHEDULES:
        raise UserError(f"lr_schedule {cfg.lr_schedule!r}: choose one of {', '.join(LR_SCHEDULES)}")
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, eps=cfg.adam_eps, weight_decay=0.0)


def scheduled_lr(cfg: TrainConfig, step: int, total_steps: int) -> float:
    """The learning rate of optimiser step ``step`` (0-based) of ``total_steps``.

    ``constant`` is the published recipe. ``cosine`` (opt-in) decays from ``lr`` to 0 over the whole run: a
    short budget then ends on weights that have settled instead of ones still moving at the full rate. It is
    a pure function of the step, so a resumed run follows the same curve.
    """
    if cfg.lr_schedule == "cosine" and total_steps > 1:
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * step / total_steps))
    return cfg.lr


def ema_decay(ema_epochs: float, steps_per_epoch: int) -> float:
    """The per-step decay of a moving average of the weights whose horizon, 1 / (1 - decay) steps, is
    ``ema_epochs`` epochs: set in epochs, so the same setting averages the same share of a run on any
    amount of footage."""
    return 1.0 - 1.0 / max(1.0, ema_epochs * steps_per_epoch)


def make_weight_average(net: nn.Module, cfg: TrainConfig, steps_per_epoch: int) -> AveragedModel | None:
    """The moving average of ``net``'s weights that ``cfg.ema_epochs`` asks for (None when 0). BatchNorm's
    running statistics are averaged with the weights (``use_buffers``), not re-estimated for the averaged
    weights by another pass over the cubes, which would cost a third of an epoch."""
    if cfg.ema_epochs <= 0:
        return None
    decay = ema_decay(cfg.ema_epochs, steps_per_epoch)
    return AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def training_loss(x: torch.Tensor, y: torch.Tensor, raw_out: torch.Tensor, flow_out: torch.Tensor,
                  cfg: TrainConfig) -> torch.Tensor:
    """lambda_raw * MSE(raw_out, x) + lambda_flow * MSE(flow_out, y), each averaged over its own elements."""
    return (cfg.lambda_raw * F.mse_loss(raw_out.float(), x)
            + cfg.lambda_flow * F.mse_loss(flow_out.float(), y))


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               cfg: TrainConfig, *, ctx: DistContext = SINGLE, n_global: int | None = None) -> float:
    """One optimisation step; returns the loss of the (global) batch.

    Under DDP ``x`` is this rank's share of a global batch of ``n_global`` cubes. DDP averages gradients
    over ranks, so the local mean loss is weighted by ``world * n_local / n_global``: the averaged gradient
    is then exactly the gradient of the global-batch mean, even for unequal (or empty) shares. The global
    loss is all-reduced *before* backward so that every rank sees a divergence and stops together
    (a rank stopping alone would leave the others waiting in the gradient all-reduce).
    """
    model.train()
    optimizer.zero_grad(set_to_none=True)
    with autocast_context(x.device, cfg.bf16):
        raw_out, flow_out = model(x)
    n_local = int(x.shape[0])
    if n_local:
        loss = training_loss(x, y, raw_out, flow_out, cfg)
    else:  # an empty share still joins DDP's gradient all-reduce, with zero gradients
        loss = (raw_out.sum() + flow_out.sum()).float() * 0.0
    value = float(loss.detach())
    if ctx.active:
        n_global = n_local if n_global is None else n_global
        total = torch.tensor([value * n_local], dtype=torch.float64, device=ctx.comm_device)
        value = float(ctx.all_reduce(total).item()) / max(n_global, 1)
        loss = loss * (ctx.world * n_local / max(n_global, 1))
    if not np.isfinite(value):
        raise UserError(f"training diverged (loss = {value}): lower --lr or check the flow cubes "
                        "for NaN/inf values")
    loss.backward()
    optimizer.step()
    return value


@torch.no_grad()
def cube_errors(model: nn.Module, x: torch.Tensor, y: torch.Tensor, bf16: bool = False,
                flow_term: str = "sse") -> tuple[torch.Tensor, torch.Tensor]:
    """Unperturbed per-cube errors of both branches (eval mode): the SSEs of spec 6.4, the flow branch's
    by ``flow_term`` (:func:`statevad.tensors.flow_error`)."""
    model.eval()
    with autocast_context(x.device, bf16):
        raw_out, flow_out = model(x)
    return per_cube_sse(x, raw_out), flow_error(y, flow_out, flow_term)


def training_stats(model: nn.Module, raw: np.ndarray, flow: np.ndarray, indices: np.ndarray, *,
                   batch_size: int, bf16: bool = False, progress: bool = True,
                   ctx: DistContext = SINGLE, flow_term: str = "sse") -> dict[str, float]:
    """Mean and population std (ddof 0) of the per-cube errors over the training cubes used (spec 6.4; the
    flow branch's by ``flow_term``), and of the cubes' flow speed (the optional motion term,
    :func:`statevad.scoring.cube_motion`).

    Under DDP each rank scores a contiguous share of ``indices`` and the per-cube errors are summed into
    full-length arrays on every rank, so the statistics cover ALL training cubes, in the 1-process order.
    """
    device = next(model.parameters()).device
    model = inference_copy(model)  # eval mode with BatchNorm folded: the same errors, less work
    lo, hi = _share_bounds(len(indices), ctx)
    errs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    batches = [indices[i:min(i + batch_size, hi)] for i in range(lo, hi, batch_size)]
    for idx in tqdm(batches, desc="training statistics", unit="batch", disable=not progress,
                    dynamic_ncols=True):
        x, y = load_batch(raw, flow, idx, device)
        e_raw, e_flow = cube_errors(model, x, y, bf16, flow_term)
        motion = torch.from_numpy(cube_motion(y.permute(0, 1, 3, 4, 2)))  # the batch already read, as stored
        errs.append((e_raw.double().cpu(), e_flow.double().cpu(), motion))
    full = torch.zeros(3, len(indices), dtype=torch.float64)
    for row in range(3 if errs else 0):
        full[row, lo:hi] = torch.cat([e[row] for e in errs])
    full = ctx.all_reduce(full.to(ctx.comm_device)).cpu()
    e_raw, e_flow, motion_all = full[0].numpy(), full[1].numpy(), full[2].numpy()
    return {"raw_mean": float(e_raw.mean()), "raw_std": float(e_raw.std(ddof=0)),
            "flow_mean": float(e_flow.mean()), "flow_std": float(e_flow.std(ddof=0)),
            "motion_mean": float(motion_all.mean()), "motion_std": float(motion_all.std(ddof=0)),
            "n_cubes": int(e_raw.size)}


def _share_bounds(n: int, ctx: DistContext) -> tuple[int, int]:
    """This rank's contiguous slice of ``n`` items (np.array_split's partition)."""
    sizes = [len(a) for a in np.array_split(np.arange(n), ctx.world)]
    lo = sum(sizes[:ctx.rank])
    return lo, lo + sizes[ctx.rank]


# ------------------------------------------------------------------------------------------- driver
def check_writable(dest: Path, flag: str) -> None:
    """``dest``'s folder exists (created if needed) and takes a new file: a read-only or full output
    location is one clear line before the work, not an error after it."""
    from statevad.files import temp_sibling

    try:
        fd, tmp = temp_sibling(dest)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)
            tmp.unlink(missing_ok=True)
    except OSError as exc:
        raise UserError(f"{flag} {dest}: cannot write into {dest.parent} ({exc.strerror or exc})") from None


@contextmanager
def deterministic_mode(enabled: bool, device: torch.device) -> Iterator[None]:
    """``torch.use_deterministic_algorithms`` + cuDNN flags for the duration of a run (then restored).

    CPU training is already bit-reproducible for a given seed and thread count; on CUDA, atomics in
    some kernels are not, hence this switch. cuBLAS also needs ``CUBLAS_WORKSPACE_CONFIG`` before its
    first use: it is set to ``:4096:8`` here unless the environment already has it.
    """
    if not enabled:
        yield
        return
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
              torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[1], before[2]


def train(work: str | Path, preset: Preset, *, out: str | Path | None = None, resume: bool = False,
          progress: bool = True, ctx: DistContext = SINGLE, deterministic: bool = False) -> Path:
    """Train STATE on ``work``'s training cubes; write the checkpoint (default ``work/model.pt``).

    With ``resume`` the run continues from the per-epoch state beside ``out`` when one exists (same seed
    and settings give the same result as an uninterrupted run); that state is removed on success.
    ``ctx`` (from :func:`statevad.distributed.session`) makes this one rank of a DDP run: same global
    batch, rank 0 alone writes files and shows progress.
    """
    work = Path(work)
    out = Path(out) if out is not None else work / "model.pt"
    data = open_split(work, "train", verify=True)
    if ctx.is_main:
        check_writable(out, "--out")  # before any training: not after an epoch's work
    raw = data.raw
    if len(raw) < 2:
        raise UserError(f"{work} has {len(raw)} training cube(s): training needs at least 2; "
                        "prepare more training footage")
    # the box / flow / cube settings the cubes were prepared with, whatever preset the caller started from
    # (`--preset ped2` on a work directory prepared with `--set box.detector_grid=2`): the model file's
    # preset then says what `statevad score` will build, as the work manifest it carries does
    recorded = recorded_stages(getattr(data, "manifest", None), f"{work}/manifest.json")
    preset = dataclasses.replace(preset, **recorded)
    preset = fit_preset_to_cubes(preset, int(raw.shape[1]))
    # the flow branch's score is chosen at training (its statistics and the selection depend on it) and
    # recorded in the scoring settings the model file carries
    flow_term = preset.train.flow_term.lower()
    preset = dataclasses.replace(preset, score=override(preset.score, flow_term=flow_term))
    cfg = preset.train
    if cfg.epochs < 1:
        raise UserError(f"--epochs must be >= 1, got {cfg.epochs}")
    device = resolve_rank_device(resolve_device(cfg.device), ctx)
    with deterministic_mode(deterministic, device):
        return _train(work, data, preset, device, out, resume, progress and ctx.is_main, ctx)


def _train(work: Path, data: SplitData, preset: Preset, device: torch.device, out: Path, resume: bool,
           progress: bool, ctx: DistContext) -> Path:
    cfg = preset.train
    raw, flow = data.raw, data.flow
    indices = select_cubes(len(raw), cfg.max_cubes, cfg.seed)
    held = _held_out(data, cfg, progress)
    if held is not None:
        indices = indices[~held[indices]]
    indices_sha = hashlib.sha256(indices.tobytes()).hexdigest()

    torch.manual_seed(cfg.seed)
    net = build_model(preset.model).to(device)
    if ctx.active:
        convert_sync_batchnorm(net)  # global-batch BatchNorm statistics: N ranks == 1 process
    optimizer = make_optimizer(net, cfg)
    steps = -(-len(indices) // cfg.batch_size)
    average = make_weight_average(net, cfg, steps)
    start, history = 0, []
    rpath = resume_path(out)
    if ctx.is_main:
        remove_stale_temps(out.parent, out.name.split(".")[0])
    if ctx.broadcast_int(int(resume and rpath.exists())):
        if not rpath.exists():
            raise UserError(f"rank {ctx.rank} cannot see the resume state {rpath}: put --out on storage "
                            "that every node shares")
        start, history = load_resume(rpath, net, optimizer, preset, indices_sha, average=average)
        if ctx.is_main:
            print(f"statevad train: resuming after epoch {start} from {rpath}", file=sys.stderr)
    model = _wrap_ddp(net, device, ctx)

    bar = tqdm(total=steps * cfg.epochs, initial=steps * start, desc="training", unit="step",
               disable=not progress, dynamic_ncols=True)
    with bar:
        for epoch in range(start, cfg.epochs):
            total, count = 0.0, 0
            shares = epoch_batches(indices, cfg.batch_size, seed=cfg.seed, epoch=epoch, rank=ctx.rank,
                                   world=ctx.world)
            sizes = [len(b) for b in epoch_batches(indices, cfg.batch_size, seed=cfg.seed, epoch=epoch)]
            for i, (idx, n_global) in enumerate(zip(shares, sizes, strict=True)):
                for group in optimizer.param_groups:
                    group["lr"] = scheduled_lr(cfg, epoch * steps + i, steps * cfg.epochs)
                x, y = load_batch(raw, flow, idx, device)
                if ctx.active:
                    loss = train_step(model, optimizer, x, y, cfg, ctx=ctx, n_global=n_global)
                else:
                    loss = train_step(model, optimizer, x, y, cfg)
                if average is not None:
                    average.update_parameters(net)
                total, count = total + loss * n_global, count + n_global
                bar.set_postfix(epoch=f"{epoch + 1}/{cfg.epochs}", loss=f"{total / count:.5f}")
                bar.update(1)
            history.append(total / count)
            if ctx.is_main:
                save_resume(rpath, net, optimizer, epoch + 1, preset, indices_sha, history, average=average)
    if average is not None:  # from here on (statistics, selection, model file) the model is the average
        net.load_state_dict(average.module.state_dict())

    stats = training_stats(net, raw, flow, indices, batch_size=max(1, cfg.batch_size), bf16=cfg.bf16,
                           progress=progress, ctx=ctx, flow_term=preset.score.flow_term)
    if ctx.is_main:
        selection = None
        # the appearance model first: the tail rule of the selection weighs its term with the others
        appearance = _fit_appearance(data, cfg, progress) if cfg.appearance else None
        if held is not None:
            from statevad.selection import run_selection

            chosen = run_selection(net, raw, flow, np.flatnonzero(held), stats, seed=cfg.seed,
                                   bf16=cfg.bf16, progress=progress, rule=cfg.weight_rule,
                                   classes=data.classes, appearance=appearance,
                                   flow_term=preset.score.flow_term)
            preset = _with_selection(preset, chosen)
            selection = chosen.to_dict() | {"train_stats": stats}
            stats = dict(chosen.stats, n_cubes=stats["n_cubes"])
        if appearance is not None:
            stats = dict(stats, **appearance.stats())
            by_rule = selection is not None and selection.get("w_appearance") is not None
            weight = float(selection["w_appearance"]) if by_rule else appearance_weight(preset.score)
            preset = dataclasses.replace(preset, score=override(preset.score, w_appearance=weight))
            if selection is not None:
                selection["appearance"] = {"w_appearance": weight,
                                           "rule": TAIL_APPEARANCE_RULE if by_rule else APPEARANCE_RULE}
        from statevad.calibration import training_record  # the model card and training score distribution

        # after the selection: the training score distribution is of the settings the model will score with
        card, dist = training_record(net, data, stats, preset, len(indices), progress=progress,
                                     appearance=appearance)
        save_checkpoint(out, net, preset, stats, getattr(data, "manifest", None), history, card=card,
                        score_distribution=dist, selection=selection,
                        appearance=None if appearance is None else appearance.to_payload())
        rpath.unlink(missing_ok=True)
    ctx.barrier()  # no rank returns before the model file exists
    return out


def _held_out(data: SplitData, cfg: TrainConfig, progress: bool) -> np.ndarray | None:
    """The mask of cubes kept out of training for the label-free selection, or None when it is off or the
    footage is too short to spare any (then the preset's scoring settings stay, and a line says so)."""
    if not cfg.select:
        return None
    from statevad.selection import holdout_mask

    mask = holdout_mask(data.clip, data.frame, cfg.holdout_every)
    if mask.sum() < 16 or (~mask).sum() < 2:
        if progress:
            print(f"statevad train: only {int(mask.sum())} cube(s) could be held out for the label-free "
                  "selection; keeping the preset's scoring settings (train on more footage to select them)",
                  file=sys.stderr)
        return None
    return mask


APPEARANCE_RULE = ("a-priori: the appearance term weighs as much as one branch of the reconstruction score "
                   "(the mean of the non-zero w_raw, w_flow; w_motion when both are 0); no pseudo-anomaly "
                   "changes what the detector sees, so the selection cannot weigh it")


TAIL_APPEARANCE_RULE = ("label-free: 1 / tail scale of the held-out normal cubes' appearance z-scores, like "
                        "every other term (statevad.selection, the tail rule)")


def appearance_weight(score: Any) -> float:
    """:data:`APPEARANCE_RULE`: the weight of the appearance term given the other weights (label-free)."""
    branches = [w for w in (score.w_raw, score.w_flow) if w]
    if branches:
        return float(np.mean(branches))
    return float(score.w_motion) or 1.0


def _fit_appearance(data: SplitData, cfg: TrainConfig, progress: bool) -> Any:
    """The appearance model of the training cubes (statevad.appearance), or None and a line saying why."""
    from statevad.appearance import fit_appearance

    if data.classes is None:
        why = ("the work directory has no class descriptions of its boxes (boxes not from the detector, or "
               "prepared by an older statevad)")
        fitted = None
    else:
        fitted, why = fit_appearance(data.classes, data.clip, data.frame, seed=cfg.seed)
    if progress:
        print(f"statevad train: appearance term {'fitted: ' if fitted else 'off: '}{why}", file=sys.stderr)
    return fitted


def _with_selection(preset: Preset, chosen: Any) -> Preset:
    """The preset with the selected scoring settings (what `test` and `score` then use by default)."""
    return Preset(name=preset.name, box=preset.box, flow=preset.flow, cube=preset.cube, model=preset.model,
                  train=preset.train,
                  score=override(preset.score, epsilon=chosen.epsilon, w_raw=chosen.w_raw,
                                 w_flow=chosen.w_flow, w_motion=chosen.w_motion))


def _wrap_ddp(net: nn.Module, device: torch.device, ctx: DistContext) -> nn.Module:
    """DistributedDataParallel around ``net`` (broadcasts rank 0's weights, averages gradients)."""
    if not ctx.active:
        return net
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
