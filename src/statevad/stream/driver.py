"""``statevad score``: a video, frame folder or live source through boxes -> flow -> cubes -> scores.

Frames are read as they arrive and pushed through the engine (:mod:`statevad.stream.engine`); every result
goes straight to the output folder (:mod:`statevad.stream.outputs`), so memory stays bounded on an hour-long
input: only one float per frame (the frame score, for the curve) and a capped set of small JPEG thumbnails
(one per event) are kept. The stages are the ones the model was trained with (:mod:`statevad.stream.stages`).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from statevad.checkpoint import load_checkpoint
from statevad.errors import UserError
from statevad.events import Event
from statevad.flow import FlowEstimator
from statevad.io import fps_or_default, open_source
from statevad.scoring import AUTO_Z, auto_threshold, motion_zscore
from statevad.settings import resolve
from statevad.stream.engine import FrameResult, StreamScorer
from statevad.stream.outputs import Outputs
from statevad.stream.stages import box_fn, net_fn, stage_settings
from statevad.tensors import resolve_device


@dataclass
class ScoreOptions:
    """``statevad score`` settings; None means "from the checkpoint" (or automatic)."""

    threshold: float | None = None
    labels: np.ndarray | None = None
    labels_pad: int = -1  # label of frames past the end of ``labels`` (0 when they came as intervals)
    max_frames: int | None = None
    perturb: bool = True
    boxes: str | None = None  # box source (auto/detector/motion/detector+motion) or a reference .npz
    device: str | None = None
    bf16: bool | None = None
    w_motion: float | None = None  # weight of the motion term (0 = STATE as published)
    video: bool = True
    batch_frames: int = 4
    min_gap_s: float = 0.5
    min_len_s: float = 0.2
    fps: float | None = None  # override the source's frame rate
    progress: bool = True
    title: str | None = None


@dataclass
class ScoreResult:
    out: Path
    n_frames: int
    n_objects: int
    threshold: float
    threshold_rule: str
    events: list[Event]
    end_reason: str
    timing: dict[str, float]
    wall_s: float
    auroc: float | None = None
    cpu_s: float = 0.0  # process CPU time (all threads): comparable across loaded and idle machines
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))


def _source_len(src: Any) -> int | None:
    for name in ("n_frames", "frame_count", "__len__"):
        v = getattr(src, name, None)
        try:
            v = v() if callable(v) else v
            if v is not None and int(v) > 0:
                return int(v)
        except (TypeError, ValueError):
            continue
    return None


def _frames(src: Any, end: dict[str, str]) -> Iterator[np.ndarray]:
    """Frames of a source as BGR uint8; a read error ends the stream (reason recorded in ``end``)."""
    import cv2

    it = iter(src)
    while True:
        try:
            f = next(it)
        except StopIteration:
            return
        except (OSError, RuntimeError, ValueError, UserError, cv2.error) as exc:
            end["reason"] = f"input lost ({type(exc).__name__}: {exc})"
            return
        f = np.asarray(f)
        if f.ndim == 2:
            f = np.repeat(f[:, :, None], 3, axis=2)
        yield np.ascontiguousarray(f, dtype=np.uint8)


def score(input_spec: str, model_path: str | os.PathLike[str], out: str | os.PathLike[str],
          opts: ScoreOptions | None = None, *, config: str | os.PathLike[str] | None = None,
          sets: list[str] | None = None) -> ScoreResult:
    """Score ``input_spec`` with the model file; write every output into ``out``; return a summary.

    The scoring settings are the model's preset ← ``config`` (a TOML file) ← ``sets``
    (``score.FIELD=VALUE``) ← the settings in ``opts`` (see :mod:`statevad.settings`).
    """
    opts = opts or ScoreOptions()
    if opts.max_frames is not None and opts.max_frames < 1:
        raise UserError(f"--max-frames must be >= 1, got {opts.max_frames}")
    if opts.batch_frames < 1:
        raise UserError(f"--batch-frames must be >= 1, got {opts.batch_frames}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file: give a folder for the outputs")
    wall0, cpu0 = time.perf_counter(), time.process_time()
    model, ckpt = load_checkpoint(model_path, "cpu")
    if not ckpt.stats:
        raise UserError(f"model {model_path} carries no training statistics (needed to z-score the errors): "
                        "use a model file written by `statevad train`")
    preset = resolve(ckpt.preset, "score", config=config, sets=sets, flags={"score": {
        "device": opts.device, "bf16": opts.bf16, "w_motion": opts.w_motion,
        "epsilon": None if opts.perturb else 0.0}})
    sc = preset.score
    model.to(resolve_device(sc.device))
    if opts.threshold is not None:
        threshold, rule = float(opts.threshold), "given (--threshold)"
    else:
        threshold = auto_threshold(sc.w_raw, sc.w_flow, w_motion=sc.w_motion)
        terms = "|w_raw| + |w_flow|" + (" + |w_motion|" if sc.w_motion else "")
        rule = f"auto: {AUTO_Z:g} x ({terms}) training-z units"
    box_cfg, flow_cfg, box_source, detector_sha = stage_settings(preset, ckpt.work_manifest,
                                                                 f"model file {model_path}")
    boxes, box_desc = box_fn(box_cfg, opts.boxes or box_source, detector_sha)
    flow_est = FlowEstimator(flow_cfg)
    if sc.w_motion:
        motion_zscore(np.zeros(0), ckpt.stats)  # a model file without motion statistics fails now, not later
    net = net_fn(model, ckpt.stats, sc, max(1, sc.batch_size))
    engine = StreamScorer(length=preset.cube.length, patch=preset.cube.patch, box_fn=boxes, flow_fn=flow_est,
                          net_fn=net, motion_thr=preset.cube.motion_thr, batch_frames=opts.batch_frames)

    src = open_source(input_spec, strict=False)
    fps = opts.fps or fps_or_default(getattr(src, "fps", None))
    total = _source_len(src)
    if opts.max_frames:
        total = min(total, opts.max_frames) if total else opts.max_frames
    sink = Outputs(out, threshold, fps, max(1, round(opts.min_gap_s * fps)),
                   max(1, round(opts.min_len_s * fps)), video=opts.video)
    end = {"reason": "end of input"}
    bar = tqdm(total=total, desc="scoring", unit="frame", disable=not opts.progress, file=sys.stderr,
               dynamic_ncols=True)
    try:
        with bar:
            _run(engine, sink, _frames(src, end), opts.max_frames, end, bar)
    except BaseException:
        sink.abort()
        _close_source(src)
        raise
    _close_source(src)
    if engine.n_received == 0:
        sink.abort()
        raise UserError(f"no frame could be read from {input_spec}: check the path, camera index or URL")
    t0 = time.perf_counter()
    summary = {
        "input": str(input_spec), "model": str(model_path), "frames scored": len(sink.scores),
        "objects scored": sink.n_objects, "fps (input)": round(fps, 3),
        "threshold": round(threshold, 4), "threshold rule": rule,
        "perturbation epsilon": sc.epsilon, "w_raw": sc.w_raw, "w_flow": sc.w_flow, "w_motion": sc.w_motion,
        "boxes": box_desc,
        "flow": flow_cfg.method, "cube length": preset.cube.frames, "ended": end["reason"],
    }
    if engine.too_short:
        summary["note"] = f"input shorter than one cube ({preset.cube.frames} frames): nothing was scored"
    doc = sink.close(summary, opts.labels, opts.title or f"statevad score: {Path(str(input_spec)).name}",
                     opts.labels_pad)
    engine.timing["outputs"] += time.perf_counter() - t0
    wall = time.perf_counter() - wall0
    return ScoreResult(out, len(sink.scores), sink.n_objects, threshold, rule, sink.found, end["reason"],
                       dict(engine.timing), wall, doc.get("AUROC (frame, --labels)"),
                       time.process_time() - cpu0, np.asarray(sink.scores, np.float64))


def _run(engine: StreamScorer, sink: Outputs, frames: Iterator[np.ndarray], max_frames: int | None,
         end: dict[str, str], bar: Any) -> None:
    """The read -> push -> write loop. Ctrl-C or a lost input end the stream; outputs stay valid."""
    try:
        while True:
            t0 = time.perf_counter()
            if max_frames is not None and engine.n_received >= max_frames:
                end["reason"] = f"--max-frames {max_frames} reached"
                break
            try:
                frame = next(frames)
            except StopIteration:
                break
            engine.timing["decode"] += time.perf_counter() - t0
            try:
                results = engine.push(frame)
            except ValueError as exc:  # frame size changed mid-stream: cannot pair flows any more
                end["reason"] = f"input changed ({exc})"
                break
            _emit(engine, sink, results)
            bar.update(1)
    except KeyboardInterrupt:
        end["reason"] = "interrupted (Ctrl-C)"
    _emit(engine, sink, engine.finish())


def _emit(engine: StreamScorer, sink: Outputs, results: list[FrameResult]) -> None:
    t0 = time.perf_counter()
    for r in results:
        sink.add(r)
    engine.timing["outputs"] += time.perf_counter() - t0


def _close_source(src: Any) -> None:
    for name in ("close", "release"):
        fn = getattr(src, name, None)
        if callable(fn):
            fn()
            return


def format_summary(res: ScoreResult) -> str:
    """The printed summary: counts, threshold, events, speed and where the outputs are."""
    lines = [f"scored {res.n_frames} frames ({res.n_objects} objects) in {res.wall_s:.1f} s "
             f"({res.n_frames / max(res.wall_s, 1e-9):.2f} frames/s); ended: {res.end_reason}",
             f"threshold {res.threshold:.3f} ({res.threshold_rule})"]
    if res.auroc is not None:
        lines.append(f"frame AUROC against --labels: {res.auroc:.4f}")
    lines.append(f"{len(res.events)} event(s)" + (":" if res.events else ""))
    for i, e in enumerate(res.events, 1):
        lines.append(f"  {i:3d}. frames {e.start}-{e.end} ({e.start_s:.2f}-{e.end_s:.2f} s), "
                     f"peak {e.peak_score:.2f} at frame {e.peak_frame}")
    lines.append(f"outputs in {res.out}: scores.csv objects.jsonl events.json "
                 + ("annotated.mp4 " if (res.out / 'annotated.mp4').exists() else "")
                 + "score_curve.png report.html")
    return "\n".join(lines)
