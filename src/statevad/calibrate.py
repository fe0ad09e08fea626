"""``statevad calibrate MODEL NORMAL_FOOTAGE``: the alarm threshold from normal footage of the camera.

The footage is scored exactly as ``statevad score`` scores it -- videos and frame folders through
:func:`statevad.stream.score` itself, a prepared work directory through the same scoring functions on its
cubes (:func:`statevad.calibration.split_series`) -- and its frame-score distribution and event curve go
into a copy of the model file (``--out``, or the model file itself, replaced atomically) together with the
threshold for the requested false-alarm rate. ``score`` then uses that threshold by default, and
``score --false-alarms-per-hour R`` re-reads the stored curve for another rate.
"""

from __future__ import annotations

import datetime
import math
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from statevad.calibration import (
    BORDER_MIN_PX,
    DEFAULT_FALSE_ALARMS_PER_HOUR,
    check_rate,
    probe_source,
    score_distribution,
    score_settings,
    split_series,
    threshold_for_rate,
)
from statevad.checkpoint import load_checkpoint, save_with_calibration
from statevad.errors import UserError
from statevad.io import checked_fps, fps_or_default, open_source
from statevad.settings import resolve


@dataclass
class CalibrateOptions:
    rate: float | None = None  # false alarms per hour (default DEFAULT_FALSE_ALARMS_PER_HOUR)
    out: str | None = None  # model file to write (default: the input model file, replaced)
    split: str = "train"  # work-directory footage: which split
    clips: list[str] | None = None  # work-directory footage: only these clips
    fps: float | None = None  # the footage's frame rate when it carries none
    boxes: str | None = None  # video footage: box source, as `score --boxes`
    perturb: bool = True  # False: calibrate for `score --no-perturb`
    device: str | None = None
    progress: bool = True
    border_min_px: float = BORDER_MIN_PX


def _warn(msg: str) -> None:
    print(f"statevad calibrate: warning: {msg}", file=sys.stderr, flush=True)


def calibrate(model_path: str | Path, footage: Sequence[str], opts: CalibrateOptions | None = None
              ) -> dict[str, Any]:
    """Calibrate ``model_path`` on ``footage`` (normal footage only); returns what was written."""
    from statevad.training import check_writable

    opts = opts or CalibrateOptions()
    rate = check_rate(DEFAULT_FALSE_ALARMS_PER_HOUR if opts.rate is None else opts.rate)
    fps = checked_fps(opts.fps)
    border = float(opts.border_min_px)
    if not (math.isfinite(border) and 0 <= border <= 1e4):
        raise UserError(f"--border-min-size must be a size in pixels >= 0, got {opts.border_min_px!r}")
    if not footage:
        raise UserError("give at least one video, frame folder or work directory of normal footage")
    model_path = Path(model_path)
    out = Path(opts.out) if opts.out else model_path
    model, ckpt = load_checkpoint(model_path, "cpu")
    if not ckpt.stats:
        raise UserError(f"model {model_path} carries no training statistics: use a model file written by "
                        "`statevad train`")
    check_writable(out, "--out")  # before scoring, not after it
    sc = resolve(ckpt.preset, "score", flags={"score": {"device": opts.device,
                                                        "epsilon": None if opts.perturb else 0.0}}).score
    work = Path(footage[0])
    if len(footage) == 1 and (work / "manifest.json").is_file():
        series, fps, desc, border = _work_series(model, ckpt, model_path, work, sc, border, fps, opts)
    else:
        series, fps, desc = _stream_series(model_path, footage, fps, opts)
    dist = score_distribution(series, fps, score_settings(sc, border), source="calibration", footage=desc)
    threshold, meaning = threshold_for_rate(dist, rate)
    minutes = dist["hours"] * 60
    if rate * dist["hours"] < 1:  # the words say "extrapolated"; one reading only the number must know too
        _warn(f"{minutes:.1f} min of footage cannot show {rate:g} false alarm(s) per hour (one such alarm "
              f"takes {60 / rate:g} min), so the threshold is extrapolated from the highest scores and the "
              "real rate may be far off (benchmarks/README.md, 'Calibrated alarms'); calibrate on several "
              f"times {60 / rate:g} min of normal footage of the camera")
    dist.update({"false_alarms_per_hour": rate, "threshold": threshold, "meaning": meaning,
                 "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")})
    save_with_calibration(model_path, out, dist)
    return {"model": str(out), "threshold": round(threshold, 4), "false_alarms_per_hour": rate,
            "frames": dist["n_frames"], "minutes": round(dist["hours"] * 60, 2),
            "meaning": f"threshold {threshold:.3f}: {meaning}"}


def _work_series(model: Any, ckpt: Any, model_path: Path, work: Path, sc: Any, border: float,
                 fps: float | None, opts: CalibrateOptions) -> tuple[list[np.ndarray], float, str, float]:
    """Frame scores of a prepared split, checked against the model's options like ``statevad test``."""
    from statevad.evaluation import check_options
    from statevad.workdir import open_split

    split = open_split(work, opts.split, verify=True)
    check_options(work, split.manifest, ckpt.work_manifest, model_path)
    if split.raw.shape[1] != ckpt.preset.model.frames:
        raise UserError(f"{work} has cubes of {split.raw.shape[1]} frames but {model_path} was trained on "
                        f"{ckpt.preset.model.frames}: prepare with the same --length")
    if opts.split == "test" and split.labels is not None and (np.asarray(split.labels) == 1).any():
        _warn(f"{work}'s test split has anomalous frames: calibration assumes normal footage, so alarms "
              "will be rarer than the rate says; use normal clips (--clips) or the train split")
    chosen = [c for c in split.clips if opts.clips is None or str(c["name"]) in opts.clips]
    root = (split.manifest.get("dataset") or {}).get("root")
    probes = [probe_source(str(c.get("source", "")), root) for c in chosen[:1]]
    size_hw, found_fps = probes[0] if probes else (None, None)
    if size_hw is None and border:
        _warn(f"the frame size of {work}'s clips is unknown (footage not found), so the border rule is off "
              "for this calibration; `score` then needs --border-min-size 0 to use it")
        border = 0.0
    rate = fps or found_fps
    if rate is None:
        rate = fps_or_default(None)
        _warn(f"the frame rate of {work}'s clips is unknown: {rate:g} frames/s assumed; give --fps")
    series = split_series(model, split, ckpt.stats, sc, border, size_hw, clips=opts.clips,
                          progress=opts.progress, appearance=ckpt.appearance, fps=rate)
    names = ",".join(str(c["name"]) for c in chosen)
    return series, float(rate), f"{work} {opts.split} clips {names}", border


def _stream_series(model_path: Path, footage: Sequence[str], fps: float | None,
                   opts: CalibrateOptions) -> tuple[list[np.ndarray], float, str]:
    """Frame scores of videos / frame folders, from ``statevad score`` itself (outputs thrown away)."""
    from statevad.stream import ScoreOptions, score

    series, rates = [], []
    for spec in footage:
        with tempfile.TemporaryDirectory(prefix="statevad-calibrate-") as tmp:
            res = score(spec, model_path, Path(tmp) / "out", ScoreOptions(
                threshold=0.0, video=False, perturb=opts.perturb, boxes=opts.boxes, device=opts.device,
                progress=opts.progress, fps=fps, border_min_px=opts.border_min_px,
                title="statevad calibrate"))
        if res.exit_code:
            raise KeyboardInterrupt
        series.append(np.asarray(res.scores, np.float64))
        if fps is None:
            src = open_source(spec, strict=False)
            try:
                rates.append(fps_or_default(getattr(src, "fps", None)))
            finally:
                src.close()
    rate = fps if fps is not None else rates[0]
    if len({round(r, 3) for r in rates}) > 1:
        _warn(f"the footage has several frame rates ({sorted(set(rates))}); events are counted at "
              f"{rate:g} fps")
    names = ", ".join(Path(str(s)).name for s in footage)
    return series, float(rate), f"{len(footage)} input(s): {names}"
