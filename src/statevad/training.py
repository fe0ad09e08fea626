"""Training (spec 6): Adam on MSE(raw) + MSE(flow), training statistics, checkpoints.

The loop is split into pure pieces -- :func:`select_cubes` (which cubes), :func:`epoch_batches` (the seeded
sampler, already rank-aware), :func:`load_batch` (memory map -> tensors), :func:`train_step` (one optimisation
step) and :func:`training_stats` (spec 6.4) -- so that a distributed (torchrun / DDP) driver can wrap the
model and reuse all of them, reducing the loss and the statistics across ranks.

Checkpoints (docs/ARCHITECTURE.md) hold only tensors, numbers, strings, lists and dicts so that they load with
``torch.load(weights_only=True)``; the sha256 over the weights lets :func:`load_checkpoint` reject a tampered
or truncated file instead of silently scoring with it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from statevad.config import ModelConfig, Preset, TrainConfig, override
from statevad.errors import UserError, atomic_path
from statevad.scoring import autocast, per_cube_sse, to_flow_target, to_model_input

CHECKPOINT_FORMAT = "statevad-model/1"
RESUME_FORMAT = "statevad-resume/1"


@dataclass
class Checkpoint:
    """What a model file carries besides the weights. ``stats`` is None for imported model-only files."""

    path: Path
    format: str
    preset: Preset
    stats: dict[str, float] | None
    work_manifest: dict[str, Any] | None
    sha256: str


# ------------------------------------------------------------------------------------------- helpers
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


def read_work_manifest(work: Path) -> dict[str, Any]:
    """``work/manifest.json`` as a dict; a missing work directory is a user error."""
    if not (work / "manifest.json").is_file():
        raise UserError(f"{work} is not a prepared work directory (no manifest.json): "
                        f"run `statevad prepare --root DATASET --work {work}` first")
    try:
        data = json.loads((work / "manifest.json").read_text())
    except ValueError as exc:
        raise UserError(f"{work}/manifest.json is not valid JSON: re-run `statevad prepare`") from exc
    if not isinstance(data, dict):
        raise UserError(f"{work}/manifest.json is not a statevad work manifest: re-run `statevad prepare`")
    return data


def preset_for_work(work: str | Path, name: str | None = None) -> Preset:
    """The preset to train with: ``name`` if given, else the one prepare recorded in the work manifest (or
    the dataset name it detected, else ``generic``), with the box / flow / cube options prepare used."""
    from statevad.config import PRESETS, get_preset

    if name:
        return get_preset(name)
    manifest = read_work_manifest(Path(work))
    options = manifest.get("options") if isinstance(manifest.get("options"), dict) else {}
    recorded = options.get("preset")
    dataset = manifest.get("dataset") if isinstance(manifest.get("dataset"), dict) else {}
    guess = str(recorded or dataset.get("name") or "").lower()
    preset = get_preset(guess if guess in PRESETS else "generic")
    try:  # keep the box / flow / cube options prepare actually used
        recorded_parts = {k: options[k] for k in ("box", "flow", "cube") if isinstance(options.get(k), dict)}
        return Preset.from_dict({**preset.to_dict(), **recorded_parts})
    except TypeError:
        return preset


def build_model(cfg: ModelConfig) -> nn.Module:
    from statevad.model import STATE

    return STATE(cfg)


def state_dict_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """Digest of names, dtypes, shapes and bytes of every tensor, in sorted name order."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _cpu_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}


def _open_train_split(work: Path) -> Any:
    from statevad.prepare import open_split

    return open_split(work, "train")


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


def load_batch(raw: np.ndarray, flow: np.ndarray, idx: np.ndarray,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather cubes ``idx`` (sorted) with one fancy-index read per array, convert on the fly (spec 4.5)."""
    return to_model_input(np.asarray(raw[idx]), device), to_flow_target(np.asarray(flow[idx]), device)


# ------------------------------------------------------------------------------------ optimisation
def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Spec 6.3: Adam, lr 1e-3, betas (0.9, 0.999), eps 1e-7, no weight decay, no schedule."""
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, eps=cfg.adam_eps, weight_decay=0.0)


def training_loss(x: torch.Tensor, y: torch.Tensor, raw_out: torch.Tensor, flow_out: torch.Tensor,
                  cfg: TrainConfig) -> torch.Tensor:
    """lambda_raw * MSE(raw_out, x) + lambda_flow * MSE(flow_out, y), each averaged over its own elements."""
    return (cfg.lambda_raw * F.mse_loss(raw_out.float(), x)
            + cfg.lambda_flow * F.mse_loss(flow_out.float(), y))


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               cfg: TrainConfig) -> float:
    """One optimisation step; returns the batch loss."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    with autocast(x.device, cfg.bf16):
        raw_out, flow_out = model(x)
    loss = training_loss(x, y, raw_out, flow_out, cfg)
    if not torch.isfinite(loss):
        raise UserError(f"training diverged (loss = {loss.item()}): lower --lr or check the flow cubes "
                        "for NaN/inf values")
    loss.backward()
    optimizer.step()
    return float(loss.detach())


@torch.no_grad()
def cube_errors(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                bf16: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Unperturbed per-cube SSEs of both branches (eval mode): the quantities of spec 6.4."""
    model.eval()
    with autocast(x.device, bf16):
        raw_out, flow_out = model(x)
    return per_cube_sse(x, raw_out), per_cube_sse(y, flow_out)


def training_stats(model: nn.Module, raw: np.ndarray, flow: np.ndarray, indices: np.ndarray, *,
                   batch_size: int, bf16: bool = False, progress: bool = True) -> dict[str, float]:
    """Mean and population std (ddof 0) of the per-cube SSEs over the training cubes used (spec 6.4)."""
    device = next(model.parameters()).device
    errs: list[tuple[torch.Tensor, torch.Tensor]] = []
    batches = [indices[i:i + batch_size] for i in range(0, len(indices), batch_size)]
    for idx in tqdm(batches, desc="training statistics", unit="batch", disable=not progress,
                    dynamic_ncols=True):
        x, y = load_batch(raw, flow, idx, device)
        e_raw, e_flow = cube_errors(model, x, y, bf16)
        errs.append((e_raw.double().cpu(), e_flow.double().cpu()))
    e_raw = torch.cat([e[0] for e in errs]).numpy()
    e_flow = torch.cat([e[1] for e in errs]).numpy()
    return {"raw_mean": float(e_raw.mean()), "raw_std": float(e_raw.std(ddof=0)),
            "flow_mean": float(e_flow.mean()), "flow_std": float(e_flow.std(ddof=0)),
            "n_cubes": int(e_raw.size)}


# ------------------------------------------------------------------------------------- checkpoints
def save_checkpoint(path: str | Path, model: nn.Module, preset: Preset, stats: dict[str, float] | None,
                    work_manifest: dict[str, Any] | None) -> Path:
    """Write the final model file atomically (format: docs/ARCHITECTURE.md)."""
    from statevad import __version__

    sd = _cpu_state_dict(model)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "state_dict": sd,
        "preset": preset.to_dict(),
        "model_config": dataclasses.asdict(preset.model),  # what model.load_model_only reads
        "stats": stats,
        "work_manifest": work_manifest,
        "sha256": state_dict_sha256(sd),
        "versions": {"statevad": str(__version__), "torch": str(torch.__version__)},
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def _torch_load(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist: train one with `statevad train` or pass --model")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not our file"
        raise UserError(f"{what} {path} is not a statevad model file (or is corrupted): "
                        f"{type(exc).__name__}") from exc
    if not isinstance(data, dict):
        raise UserError(f"{what} {path} is not a statevad model file")
    return data


def _preset_of(data: dict[str, Any], path: Path) -> Preset:
    """The preset of a full checkpoint, or one rebuilt around the model config of a model-only file."""
    try:
        if isinstance(data.get("preset"), dict):
            return Preset.from_dict(data["preset"])
        model_cfg = data.get("model") or data.get("config") or data.get("model_config")
        if isinstance(model_cfg, dict):
            return Preset(name="imported", model=Preset.from_dict({"name": "", "model": model_cfg}).model)
    except (TypeError, KeyError) as exc:
        raise UserError(f"model file {path} has an unreadable configuration ({exc}): "
                        "it was written by another statevad version") from exc
    raise UserError(f"model file {path} carries no model configuration: not a statevad model file")


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, Checkpoint]:
    """Load a model file (full checkpoint or model-only import) without unpickling code; eval mode.

    The weights are verified against the stored sha256, so a tampered or foreign file is refused.
    """
    path = Path(path)
    data = _torch_load(path, "model file")
    fmt = str(data.get("format", ""))
    if not fmt.startswith("statevad-") or not isinstance(data.get("state_dict"), dict):
        raise UserError(f"model file {path} has format {fmt or 'unknown'!r}, not a statevad model "
                        f"({CHECKPOINT_FORMAT}); convert original weights with `statevad import-original`")
    if fmt.startswith("statevad-resume"):
        raise UserError(f"{path} is a training-resume state, not a model: use the final model file")
    sd = data["state_dict"]
    digest = state_dict_sha256(sd)
    if "preset" in data and "sha256" not in data:
        raise UserError(f"model file {path} lacks its checksum: it was modified; retrain or re-copy it")
    if data.get("sha256") is not None and data["sha256"] != digest:
        raise UserError(f"model file {path} fails its checksum (weights were modified or the file is "
                        "corrupted): retrain or re-copy it")
    preset = _preset_of(data, path)
    model = build_model(preset.model)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise UserError(f"model file {path} does not fit the STATE network it describes: "
                        f"{str(exc).splitlines()[0]}") from exc
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    model.to(dev).eval()
    stats = data.get("stats")
    ckpt = Checkpoint(path=path, format=fmt, preset=preset,
                      stats={k: float(v) for k, v in stats.items()} if isinstance(stats, dict) else None,
                      work_manifest=data.get("work_manifest"), sha256=digest)
    return model, ckpt


def resume_path(out: Path) -> Path:
    return out.with_name(out.stem + ".resume.pt")


def _save_resume(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int,
                 preset: Preset, indices_sha: str) -> None:
    payload = {
        "format": RESUME_FORMAT,
        "epoch": epoch,  # number of finished epochs
        "state_dict": _cpu_state_dict(model),
        "optimizer": optimizer.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "preset": preset.to_dict(),
        "cubes_sha256": indices_sha,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _resume_signature(preset: Preset) -> dict[str, Any]:
    """What must match for a resumed run to continue the same training (epochs may grow)."""
    d = preset.to_dict()
    train = {k: v for k, v in d["train"].items() if k not in ("epochs", "device", "workers")}
    return {"model": d["model"], "train": train}


def _load_resume(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, preset: Preset,
                 indices_sha: str) -> int:
    data = _torch_load(path, "resume state")
    if data.get("format") != RESUME_FORMAT:
        raise UserError(f"{path} is not a statevad resume state; delete it or run without --resume")
    if (_resume_signature(Preset.from_dict(data["preset"])) != _resume_signature(preset)
            or data.get("cubes_sha256") != indices_sha):
        raise UserError(f"resume state {path} was written with other training settings or cubes; "
                        "use the same flags, or drop --resume to start over")
    model.load_state_dict(data["state_dict"])
    optimizer.load_state_dict(data["optimizer"])
    torch.set_rng_state(data["torch_rng"])
    return int(data["epoch"])


# ------------------------------------------------------------------------------------------- driver
def train(work: str | Path, preset: Preset, *, out: str | Path | None = None, resume: bool = False,
          progress: bool = True) -> Path:
    """Train STATE on ``work``'s training cubes; write the checkpoint (default ``work/model.pt``).

    With ``resume`` the run continues from the per-epoch state beside ``out`` when one exists (same seed
    and settings give the same result as an uninterrupted run); that state is removed on success.
    """
    work = Path(work)
    out = Path(out) if out is not None else work / "model.pt"
    data = _open_train_split(work)
    raw, flow = data.raw, data.flow
    if len(raw) < 2:
        raise UserError(f"{work} has {len(raw)} training cube(s): training needs at least 2; "
                        "prepare more training footage")
    preset = fit_preset_to_cubes(preset, int(raw.shape[1]))
    cfg = preset.train
    if cfg.epochs < 1:
        raise UserError(f"--epochs must be >= 1, got {cfg.epochs}")
    device = resolve_device(cfg.device)
    indices = select_cubes(len(raw), cfg.max_cubes, cfg.seed)
    indices_sha = hashlib.sha256(indices.tobytes()).hexdigest()

    torch.manual_seed(cfg.seed)
    model = build_model(preset.model).to(device)
    optimizer = make_optimizer(model, cfg)
    start = 0
    rpath = resume_path(out)
    if resume and rpath.exists():
        start = _load_resume(rpath, model, optimizer, preset, indices_sha)
        print(f"statevad train: resuming after epoch {start} from {rpath}", file=sys.stderr)

    steps = -(-len(indices) // cfg.batch_size)
    bar = tqdm(total=steps * cfg.epochs, initial=steps * start, desc="training", unit="step",
               disable=not progress, dynamic_ncols=True)
    with bar:
        for epoch in range(start, cfg.epochs):
            total, count = 0.0, 0
            for idx in epoch_batches(indices, cfg.batch_size, seed=cfg.seed, epoch=epoch):
                x, y = load_batch(raw, flow, idx, device)
                loss = train_step(model, optimizer, x, y, cfg)
                total, count = total + loss * len(idx), count + len(idx)
                bar.set_postfix(epoch=f"{epoch + 1}/{cfg.epochs}", loss=f"{total / count:.5f}")
                bar.update(1)
            _save_resume(rpath, model, optimizer, epoch + 1, preset, indices_sha)

    stats = training_stats(model, raw, flow, indices, batch_size=max(1, cfg.batch_size), bf16=cfg.bf16,
                           progress=progress)
    save_checkpoint(out, model, preset, stats, getattr(data, "manifest", None))
    rpath.unlink(missing_ok=True)
    return out
