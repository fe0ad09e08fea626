"""The model-file format (docs/ARCHITECTURE.md): save/load, checksums, finite checks, resume states.

Every file here is a ``torch.save`` of a dict that holds only tensors, numbers, strings, lists and dicts, so
it loads with ``torch.load(weights_only=True)`` and nothing is ever unpickled. A sha256 over the weights lets
:func:`load_checkpoint` refuse a tampered or truncated file instead of silently scoring with it.

Three kinds of file, one loader (:func:`read_torch_file`):

* a model file (``statevad train``): weights, preset, training statistics, the work manifest, history;
* a model-only file (``statevad import-original``): weights and the network configuration;
* a training-resume state, written after every epoch and removed when training finishes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from statevad.appearance import from_payload as appearance_from_payload
from statevad.config import Preset
from statevad.errors import UserError
from statevad.files import atomic_write_bytes
from statevad.model import STATE, build_model, import_original, infer_config, unwrap_original
from statevad.scoring import STAT_KEYS
from statevad.tensors import resolve_device

MODEL_FORMAT = "statevad-model/1"
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
    selection: dict[str, Any] | None = None  # statevad.selection's record, when training made one
    card: dict[str, Any] | None = None  # the training footage (statevad.calibration.build_card)
    score_distribution: dict[str, Any] | None = None  # frame scores of the training footage
    calibration: dict[str, Any] | None = None  # frame scores of the camera's footage (`statevad calibrate`)
    appearance: Any = None  # statevad.appearance.AppearanceModel, when training fitted one


# ------------------------------------------------------------------------------------------ helpers
def state_dict_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """Digest of names, dtypes, shapes and bytes of every tensor, in sorted name order."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _canonical(obj: Any) -> Any:
    """``obj`` as plain JSON data, every tensor replaced by the digest of its dtype, shape and bytes; dict
    keys tagged with their type (an optimizer state is keyed by int). Tuples and lists are the same (a round
    trip through ``torch.load`` may turn one into the other)."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().to("cpu").contiguous()
        digest = hashlib.sha256(t.reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()
        return {"__tensor__": [str(t.dtype), list(t.shape), digest]}
    if isinstance(obj, Mapping):
        return {f"{type(k).__name__}:{k}": _canonical(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_canonical(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return {"__float__": repr(obj)}
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    return {"__other__": f"{type(obj).__name__}:{obj!r}"}


def content_sha256(payload: Mapping[str, Any]) -> str:
    """One sha256 over everything a file carries that decides a result: the canonical JSON of every field
    (preset, statistics, work manifest, history, optimizer state, RNG state, epoch, ...) and the tensors,
    except the checksum fields themselves."""
    body = {k: v for k, v in payload.items() if k not in ("sha256", "content_sha256")}
    text = json.dumps(_canonical(body), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _sealed(payload: dict[str, Any]) -> dict[str, Any]:
    payload["content_sha256"] = content_sha256(payload)
    return payload


def _check_content(data: dict[str, Any], path: Path, what: str, fix: str) -> None:
    """Refuse a file whose content checksum does not match; files written before it existed (none stored)
    are checked on their weights only."""
    stored = data.get("content_sha256")
    if stored is None:
        return
    try:
        ok = isinstance(stored, str) and stored == content_sha256(data)
    except (TypeError, ValueError, RecursionError):
        ok = False
    if not ok:
        raise UserError(f"{what} {path} fails its checksum (its settings, statistics or state were modified, "
                        f"or the file is corrupted): {fix}")


def cpu_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}


def atomic_torch_save(payload: Mapping[str, Any], path: str | Path) -> None:
    """``torch.save`` through memory, then temp + rename.

    Saving to a file names the zip's inner folder after the file -- here a random temporary name --
    so equal payloads gave different bytes; a buffer always uses ``archive/``: equal runs, equal files.
    """
    buf = io.BytesIO()
    torch.save(dict(payload), buf)
    atomic_write_bytes(path, buf.getvalue())


def read_torch_file(path: str | Path, what: str, kind: str, fix: str) -> Any:
    """``torch.load(weights_only=True)`` of ``path``; a missing or unreadable file is one :class:`UserError`
    naming ``what`` was expected, the ``kind`` of file it should have been and the ``fix``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist (no such file): {fix}")
    try:
        if path.stat().st_size == 0:
            raise UserError(f"{what} {path} is empty (0 bytes), not {kind}: {fix}")
        return torch.load(path, map_location="cpu", weights_only=True)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not our file"
        detail = _load_failure(str(exc))
        raise UserError(f"{what} {path} is not {kind} (or is corrupted: {type(exc).__name__}"
                        f"{': ' + detail if detail else ''}); {fix}") from None


def _load_failure(message: str) -> str:
    """The cause in torch's message, in one short line. A weights-only failure starts with torch's advice to
    re-run with ``weights_only=False`` -- cut at 200 characters it lost its warning that this runs the file's
    code, and it is the wrong advice for a file that is not ours anyway -- so only the unpickler's own reason
    is kept, up to its first full stop (after it torch suggests allow-listing the file's globals)."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    if lines and lines[0].startswith("Weights only load failed"):
        _, _, after = message.partition("WeightsUnpickler error:")
        why = next((ln.strip() for ln in after.splitlines() if ln.strip()), "").split(". ")[0]
        return f"not a plain-data torch file: {why[:150]}" if why else "not a plain-data torch file"
    return lines[0].split(". ")[0][:200] if lines else ""


def _read_dict(path: Path, what: str) -> dict[str, Any]:
    data = read_torch_file(path, what, "a statevad model file",
                           "train one with `statevad train` or pass --model")
    if not isinstance(data, dict):
        raise UserError(f"{what} {path} is not a statevad model file")
    return data


# ------------------------------------------------------------------------------------- model files
def save_checkpoint(path: str | Path, model: nn.Module, preset: Preset, stats: dict[str, float] | None,
                    work_manifest: dict[str, Any] | None, history: list[float] | None = None, *,
                    selection: dict[str, Any] | None = None, card: dict[str, Any] | None = None,
                    score_distribution: dict[str, Any] | None = None,
                    appearance: dict[str, Any] | None = None) -> Path:
    """Write the final model file atomically (format: docs/ARCHITECTURE.md).

    ``history`` (mean training loss per epoch) is the loss curve: it lets a distributed or resumed run
    be compared with an uninterrupted 1-process run. ``card`` and ``score_distribution`` (JSON data, see
    :mod:`statevad.calibration`) are optional fields: files without them still load (no card, automatic
    threshold), so the format version is unchanged.
    """
    from statevad import __version__

    sd = cpu_state_dict(model)
    payload = {
        "format": MODEL_FORMAT,
        "state_dict": sd,
        "preset": preset.to_dict(),
        "model_config": dataclasses.asdict(preset.model),  # what a model-only reader needs
        "stats": stats,
        "work_manifest": work_manifest,
        "sha256": state_dict_sha256(sd),
        "versions": {"statevad": str(__version__), "torch": str(torch.__version__)},
        "history": {"epoch_loss": [float(v) for v in (history or [])]},
        # the label-free selection of the scoring settings (statevad.selection), when training made one
        "selection": selection,
    }
    # appearance: statevad.appearance.AppearanceModel.to_payload() (one float16 tensor and numbers)
    for key, value in (("card", card), ("score_distribution", score_distribution),
                       ("appearance", appearance)):
        if value is not None:
            payload[key] = value
    path = Path(path)
    atomic_torch_save(_sealed(payload), path)
    return path


def save_model_only(path: str | Path, model: STATE) -> None:
    """Weights + network configuration only (``statevad import-original``), atomically.

    :func:`load_checkpoint` reads it; the training statistics that scoring needs come from a training run
    (``statevad test --stats``).
    """
    sd = cpu_state_dict(model)
    atomic_torch_save(_sealed({"format": MODEL_FORMAT, "state_dict": sd, "sha256": state_dict_sha256(sd),
                               "model_config": dataclasses.asdict(model.cfg)}), path)


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


def _check_finite(sd: dict[str, torch.Tensor], stats: Any, path: Path) -> None:
    """NaN/inf weights or statistics would turn every score into NaN (a silently meaningless AUROC)."""
    bad = [k for k, v in sd.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise UserError(f"model file {path} has NaN/inf weights ({bad[0]}{' ...' if len(bad) > 1 else ''}): "
                        "the training diverged or the file was modified; retrain it")
    if isinstance(stats, dict):
        for k in STAT_KEYS:
            v = stats.get(k)
            if not isinstance(v, int | float) or not np.isfinite(v):
                raise UserError(f"model file {path} has an invalid training statistic {k}={v!r}; retrain it")


def _check_fields(data: dict[str, Any], path: Path) -> None:
    """Fields of the wrong type (a hand-edited or foreign file) are one clear line, not a traceback later."""
    kinds = {"preset": dict, "model_config": dict, "stats": dict, "work_manifest": dict, "history": dict,
             "versions": dict, "selection": dict, "card": dict, "score_distribution": dict,
             "calibration": dict, "appearance": dict}
    for key, kind in kinds.items():
        if data.get(key) is not None and not isinstance(data[key], kind):
            raise UserError(f"model file {path}: field {key!r} is a {type(data[key]).__name__}, expected "
                            f"{kind.__name__}; the file was modified or written by another program")
    wm = data.get("work_manifest")
    if isinstance(wm, dict) and wm.get("options") is not None and not isinstance(wm["options"], dict):
        raise UserError(f"model file {path}: work_manifest.options is a {type(wm['options']).__name__}, "
                        "expected dict; the file was modified or written by another program")


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, Checkpoint]:
    """Load a model file (full checkpoint or model-only import) without unpickling code; eval mode.

    The weights are verified against the stored sha256, so a tampered or foreign file is refused.
    """
    path = Path(path)
    data = _read_dict(path, "model file")
    fmt = str(data.get("format", ""))
    if not fmt.startswith("statevad-") or not isinstance(data.get("state_dict"), dict):
        raise UserError(f"model file {path} has format {fmt or 'unknown'!r}, not a statevad model "
                        f"({MODEL_FORMAT}); convert original weights with `statevad import-original`")
    if fmt.startswith("statevad-resume"):
        raise UserError(f"{path} is a training-resume state, not a model: use the final model file")
    if fmt != MODEL_FORMAT:
        raise UserError(f"model file {path} has format {fmt!r}: it was written by another statevad version "
                        f"(this one reads {MODEL_FORMAT!r}); retrain or use the matching version")
    sd = data["state_dict"]
    if not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise UserError(f"model file {path} holds non-tensor weights: not a statevad model file")
    digest = state_dict_sha256(sd)
    if "preset" in data and "sha256" not in data:
        raise UserError(f"model file {path} lacks its checksum: it was modified; retrain or re-copy it")
    if data.get("sha256") is not None and data["sha256"] != digest:
        raise UserError(f"model file {path} fails its checksum (weights were modified or the file is "
                        "corrupted): retrain or re-copy it")
    _check_finite(sd, data.get("stats"), path)
    _check_content(data, path, "model file", "retrain or re-copy it")
    _check_fields(data, path)
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
                      work_manifest=data.get("work_manifest"), sha256=digest, card=data.get("card"),
                      score_distribution=_distribution(data, "score_distribution", path),
                      calibration=_distribution(data, "calibration", path), selection=data.get("selection"),
                      appearance=appearance_from_payload(data.get("appearance"), path))
    return model, ckpt


_DIST_KEYS = {"source": str, "footage": str, "fps": float, "hours": float, "settings": dict,
              "quantiles": dict, "thresholds": list, "events": list}


def _distribution(data: dict[str, Any], key: str, path: Path) -> dict[str, Any] | None:
    """A stored score distribution, checked field by field (a hand-edited file is one clear line)."""
    dist = data.get(key)
    if dist is None:
        return None
    for name, kind in _DIST_KEYS.items():
        value = dist.get(name)
        if not isinstance(value, kind) and not (kind is float and isinstance(value, int)):
            raise UserError(f"model file {path}: {key}.{name} is missing or not a {kind.__name__}; the file "
                            "was modified or written by another program: retrain or re-calibrate it")
    thr, cnt = dist["thresholds"], dist["events"]
    if (not thr or len(thr) != len(cnt) or not dist["hours"] > 0 or not dist["fps"] > 0
            or not all(isinstance(v, int | float) and math.isfinite(v) for v in thr + cnt)):
        raise UserError(f"model file {path}: {key} has an invalid event curve; retrain or re-calibrate it")
    return dist


def save_with_calibration(src: str | Path, dest: str | Path, calibration: dict[str, Any]) -> Path:
    """Copy the model file ``src`` to ``dest`` (may be ``src``) with ``calibration`` set, atomically.

    Everything else is carried over unchanged, so the weights' checksum stays the same.
    """
    src, dest = Path(src), Path(dest)
    load_checkpoint(src)  # refuses a tampered, foreign or old file before anything is written
    data = _read_dict(src, "model file")
    data["calibration"] = calibration
    atomic_torch_save(_sealed(data), dest)
    load_checkpoint(dest)  # the file written reads back
    return dest


def load_original_checkpoint(path: str | Path, frames: int = 7) -> STATE:
    """Read a checkpoint of the original STATE code without executing pickled code and convert it
    (:func:`statevad.model.import_original`)."""
    obj = read_torch_file(path, "checkpoint", "a tensor-only torch checkpoint",
                          "give a checkpoint of the original STATE code, re-saved as a plain state_dict "
                          "if it holds other objects")
    sd = unwrap_original(obj, str(path))
    return import_original(sd, infer_config(sd, frames=frames, source=str(path)), source=str(path))


# ------------------------------------------------------------------------------------ resume states
def resume_path(out: Path) -> Path:
    return out.with_name(out.stem + ".resume.pt")


def save_resume(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int,
                preset: Preset, indices_sha: str, history: list[float], *,
                average: nn.Module | None = None) -> None:
    """The per-epoch state of a training run; ``average`` is the moving average of the weights
    (``train.ema_epochs``), kept so that a resumed run averages the same steps."""
    sd = cpu_state_dict(model)
    payload: dict[str, Any] = {
        "format": RESUME_FORMAT,
        "epoch": epoch,  # number of finished epochs
        "state_dict": sd,
        "sha256": state_dict_sha256(sd),  # a corrupted resume state is refused, not trained on
        "optimizer": optimizer.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "preset": preset.to_dict(),
        "cubes_sha256": indices_sha,
        "history": [float(v) for v in history],
    }
    if average is not None:
        avg = cpu_state_dict(average)
        payload["average"] = {"state_dict": avg, "sha256": state_dict_sha256(avg)}
    atomic_torch_save(_sealed(payload), path)


def _resume_signature(preset: Preset) -> dict[str, Any]:
    """What must match for a resumed run to continue the same training (epochs may grow)."""
    d = preset.to_dict()
    free = ("device", "workers") if preset.train.lr_schedule == "cosine" else ("epochs", "device", "workers")
    train = {k: v for k, v in d["train"].items() if k not in free}  # a cosine curve depends on the epochs
    return {"model": d["model"], "train": train}


def load_resume(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, preset: Preset,
                indices_sha: str, *, average: nn.Module | None = None) -> tuple[int, list[float]]:
    """Restore model, optimizer, RNG and the weights' moving average (when the run keeps one); returns
    (finished epochs, loss history)."""
    fix = "delete it or run without --resume"
    data = read_torch_file(path, "resume state", "a statevad resume state", fix)
    if (not isinstance(data, dict) or data.get("format") != RESUME_FORMAT
            or not isinstance(data.get("state_dict"), dict)):
        raise UserError(f"{path} is not a statevad resume state; {fix}")
    if data.get("sha256") != state_dict_sha256(data["state_dict"]):
        raise UserError(f"resume state {path} fails its checksum (corrupted or modified); {fix}")
    _check_content(data, path, "resume state", fix)
    epoch = data.get("epoch")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise UserError(f"resume state {path} has an invalid epoch {epoch!r}; {fix}")
    try:
        same = (_resume_signature(Preset.from_dict(data["preset"])) == _resume_signature(preset)
                and data.get("cubes_sha256") == indices_sha)
    except (TypeError, KeyError):
        same = False
    if not same:
        raise UserError(f"resume state {path} was written with other training settings or cubes; "
                        "use the same flags, or drop --resume to start over")
    try:
        model.load_state_dict(data["state_dict"])
        if average is not None:
            avg = data.get("average")
            if not isinstance(avg, dict) or not isinstance(avg.get("state_dict"), dict):
                raise UserError(f"resume state {path} has no moving average of the weights, which this "
                                f"run keeps (train.ema_epochs); {fix}")
            if avg.get("sha256") != state_dict_sha256(avg["state_dict"]):
                raise UserError(f"resume state {path} fails its checksum (corrupted or modified); {fix}")
            average.load_state_dict(avg["state_dict"])
        optimizer.load_state_dict(data["optimizer"])
        torch.set_rng_state(data["torch_rng"])
        history = [float(v) for v in data.get("history", [])]
    except (RuntimeError, ValueError, TypeError, KeyError) as exc:
        raise UserError(f"resume state {path} does not fit this training run ({_short(exc)}); "
                        f"{fix}") from None
    return epoch, history


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]
