"""The Python API: the few entry points a user scripts with, each resolving its settings the way the command
of the same name does (preset ← ``config`` file ← ``sets`` ← keyword flags; :mod:`statevad.settings`).

    import statevad
    statevad.prepare("data/my_footage", "work")                 # boxes, optical flow, cubes
    model = statevad.train("work", model_size="tiny", epochs=6)  # -> work/model.pt
    metrics = statevad.evaluate("work", model)                   # AUROC on labelled test clips
    result = statevad.score("clip.mp4", model, "results/")       # a video, folder, camera or URL
    net, card = statevad.load_model(model)                       # the network and what its file records

The CLI's handlers call these functions, so a script and the command line cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

PathLike = str | os.PathLike[str]


def prepare(root: PathLike, work: PathLike, *, split: str = "both", preset: str | None = None,
            config: PathLike | None = None, sets: list[str] | None = None, boxes: str | None = None,
            flow: str | None = None, length: int | None = None, detector: str | None = None,
            motion_wrap: bool | None = None, jobs: int = 1, shard: tuple[int, int] | None = None,
            merge: bool = False, progress: bool = True) -> dict[str, Any]:
    """Boxes → optical flow → cubes of a dataset's clips into the work directory ``work``; returns its
    manifest (``statevad prepare``). ``root`` is any supported layout, e.g. your own footage as ``train/``
    and ``test/`` folders of videos. ``boxes``/``flow``/``length``/``detector``/``motion_wrap`` are the
    command's flags; ``sets`` are ``SECTION.FIELD=VALUE`` strings for the box, flow and cube sections."""
    from statevad.preparation import prepare as _prepare

    return _prepare(root, work, split=split, preset=preset, box_source=boxes, flow_method=flow,
                    length=length, jobs=jobs, progress=progress, detector_path=detector,
                    motion_wrap=motion_wrap, shard=shard, merge=merge, sets=sets, config=config)


def train(work: PathLike, *, out: PathLike | None = None, preset: str | None = None,
          model_size: str | None = None, config: PathLike | None = None, sets: list[str] | None = None,
          epochs: int | None = None, batch_size: int | None = None, lr: float | None = None,
          lr_schedule: str | None = None, max_cubes: int | None = None, seed: int | None = None,
          device: str | None = None, bf16: bool | None = None, resume: bool = False,
          deterministic: bool = False, progress: bool = True) -> Path:
    """Train the STATE network on ``work``'s training cubes; returns the model file (default
    ``work/model.pt``; ``statevad train``). The base preset is ``preset``, else the one ``prepare``
    recorded; ``model_size`` (paper | fast | tiny) picks the network width before the config file and
    ``sets`` (model and train sections) apply. Under torchrun this is one DDP rank."""
    from statevad.config import with_model_size
    from statevad.distributed import session
    from statevad.settings import preset_for_work, resolve
    from statevad.tensors import resolve_device
    from statevad.training import train as _train

    base = preset_for_work(work, preset)
    base = dataclasses.replace(base, model=with_model_size(base.model, model_size))
    resolved = resolve(base, "train", config=config, sets=sets, flags={"train": {
        "epochs": epochs, "batch_size": batch_size, "lr": lr, "lr_schedule": lr_schedule,
        "max_cubes": max_cubes, "seed": seed, "device": device, "bf16": bf16}})
    with session(resolve_device(resolved.train.device)) as ctx:
        return _train(Path(work), resolved, out=out, resume=resume, progress=progress, ctx=ctx,
                      deterministic=deterministic)


def evaluate(work: PathLike, model: PathLike | None = None, *, out: PathLike | None = None,
             config: PathLike | None = None, sets: list[str] | None = None, epsilon: float | None = None,
             w_raw: float | None = None, w_flow: float | None = None, w_motion: float | None = None,
             smooth_sigma: float | None = None, batch_size: int | None = None, device: str | None = None,
             bf16: bool | None = None, stats: str | None = None, clips: list[str] | None = None,
             progress: bool = True, border_min_px: float | None = None,
             fps: float | None = None) -> dict[str, Any]:
    """Score ``work``'s test split with ``model`` (default ``work/model.pt``) and evaluate it: micro and
    macro AUROC, EER, per-clip AUROC (``statevad test``); also writes the result files. Returns
    ``metrics.json``'s content. ``border_min_px``: ``statevad score``'s border rule (None: its default, 16;
    0 = off). ``fps``: the frame rate of test footage that carries none (frame folders), for a track window
    in seconds (the generic preset's)."""
    from statevad.evaluation import run_test

    work = Path(work)
    flags = {"epsilon": epsilon, "w_raw": w_raw, "w_flow": w_flow, "w_motion": w_motion,
             "smooth_sigma": smooth_sigma, "batch_size": batch_size, "device": device, "bf16": bf16}
    return run_test(work, Path(model) if model is not None else work / "model.pt", out=out, overrides=flags,
                    stats=stats, clips=clips, progress=progress, config=config, sets=sets, fps=fps,
                    **({} if border_min_px is None else {"border_min_px": border_min_px}))


def score(source: str | PathLike, model: PathLike, out: PathLike, *, config: PathLike | None = None,
          sets: list[str] | None = None, **options: Any) -> Any:
    """Score a video file, frame folder, camera index (``"0"``) or stream URL with a trained model and
    write every output into ``out`` (``statevad score``). ``options`` are the fields of
    :class:`statevad.stream.ScoreOptions` (``threshold``, ``labels``, ``max_frames``, ``perturb``,
    ``boxes``, ``device``, ``video``, ...). Returns a :class:`statevad.stream.ScoreResult`."""
    from statevad.stream import ScoreOptions
    from statevad.stream import score as _score

    return _score(str(source), model, out, ScoreOptions(**options), config=config, sets=sets)


def load_model(path: PathLike, device: str = "cpu") -> tuple[Any, Any]:
    """A model file's network (eval mode, on ``device``) and its :class:`statevad.checkpoint.Checkpoint`
    (preset, training statistics, work manifest, checksum). Nothing is unpickled; a tampered file is
    refused."""
    from statevad.checkpoint import load_checkpoint

    return load_checkpoint(path, device)
