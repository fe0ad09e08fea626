"""``statevad test``: score a work directory's test split with a trained model and evaluate it (spec 7).

The driver above scoring and training: it opens the prepared split (:mod:`statevad.workdir`), the model file
(:mod:`statevad.checkpoint`), scores every cube (:mod:`statevad.scoring`), evaluates the frame scores
(:mod:`statevad.metrics`) and writes ``scores.csv``, ``objects.csv``, ``roc.png`` and ``metrics.json``.

The frame scores follow ``statevad score``'s border rule (:func:`statevad.calibration.border_keep`): a cube
whose box touches the frame border with a short side under ``border_min_px`` is not counted in its frame's
score (it stays in ``objects.csv``, ``scored`` 0), and a frame left without a counted cube scores
:data:`statevad.scoring.EMPTY_FRAME_SCORE`, as ``score`` scores a frame without objects. So ``test`` and
``score`` give the same frame scores for the same cubes.

``metrics.json`` also holds ``parts``: the same frame metrics for the fusion's parts, each scored exactly as
the fused score (same errors, track mean, border rule and smoothing) — STATE alone (reconstruction only), the
fusion without each added term, the appearance term alone, and the per-box flow speed with no learning at
all. On a user's own labelled footage that says in one run whether the learned score beats the trivial one.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from statevad.appearance import appearance_term
from statevad.calibration import (
    BORDER_MARGIN_PX,
    BORDER_MIN_PX,
    border_keep,
    check_border_min_px,
    probe_source,
)
from statevad.checkpoint import load_checkpoint
from statevad.config import chosen_on_test_labels
from statevad.errors import UserError
from statevad.files import atomic_path, atomic_write_json
from statevad.io import checked_fps
from statevad.metrics import clip_bounds, evaluate
from statevad.scoring import (
    MOTION_KEYS,
    STAT_KEYS,
    combine,
    frame_scores,
    motion_zscore,
    score_split,
    smooth,
    zscores,
)
from statevad.settings import resolve
from statevad.tensors import cube_motion, resolve_device
from statevad.tracks import split_track_mean
from statevad.training import check_writable, select_cubes, training_stats
from statevad.visualize import save_roc
from statevad.workdir import SplitData, open_split, select_clips


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


def write_object_csv(path: Path, split_data: SplitData, bounds: list[tuple[str, int, int]],
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


def clip_headers(split_data: SplitData, manifest: dict[str, Any]
                 ) -> list[tuple[tuple[int, int] | None, float | None]]:
    """(frame size (H, W), frame rate) of each clip, read once from its footage's header (as the model
    card's); (None, None) for a clip whose footage is not on this machine."""
    dataset = manifest.get("dataset") if isinstance(manifest.get("dataset"), dict) else {}
    return [probe_source(str(c.get("source", "")), dataset.get("root")) for c in split_data.clips]


def border_mask(split_data: SplitData, headers: list[tuple[tuple[int, int] | None, float | None]],
                min_px: float) -> tuple[np.ndarray, list[str]]:
    """(mask of the cubes the border rule keeps, names of the clips whose frame size is unknown).

    Each clip's frame size comes from ``headers`` (:func:`clip_headers`); a clip whose footage is not on
    this machine keeps every cube (the rule needs the size), and is named in the second list.
    """
    keep = np.ones(len(split_data.frame), bool)
    unknown: list[str] = []
    if min_px <= 0:
        return keep, unknown
    cube_clip = np.asarray(split_data.clip)
    box = np.asarray(split_data.box)
    for i, c in enumerate(split_data.clips):
        idx = np.flatnonzero(cube_clip == i)
        if not len(idx):
            continue
        size_hw, _ = headers[i]
        if size_hw is None:
            unknown.append(str(c["name"]))
            continue
        keep[idx] = border_keep(box[idx], size_hw, min_px)
    return keep, unknown


def track_windows(split_data: SplitData, headers: list[tuple[tuple[int, int] | None, float | None]],
                  cfg: Any, card: dict[str, Any] | None, fps: float | None = None
                  ) -> tuple[list[int], list[str]]:
    """(the track mean's window of each clip, names of the clips whose frame rate is assumed).

    With ``score.track_seconds`` the window is that many seconds at the clip's frame rate, from ``headers``
    (:func:`clip_headers`); a clip whose footage carries no rate (a frame folder) or is not here takes
    ``fps`` when given (``statevad test --fps``: the user knows it), else the training footage's rate (the
    model card's: the same camera, most likely), else :data:`statevad.io.DEFAULT_FPS`, and is then named in
    the second list.
    """
    from statevad.io import DEFAULT_FPS

    if cfg.track_seconds <= 0:
        return [int(cfg.track_frames)] * len(split_data.clips), []
    trained = [float(f) for f in (card or {}).get("fps") or [] if f]
    windows, assumed = [], []
    for c, (_, rate) in zip(split_data.clips, headers, strict=True):
        if rate is None:
            rate = fps
        if rate is None:
            assumed.append(str(c["name"]))
            rate = trained[0] if trained else DEFAULT_FPS
        windows.append(cfg.track_window(rate))
    return windows, assumed


def check_options(work: Path, manifest: dict[str, Any], model_manifest: dict[str, Any] | None,
                  model_path: Path) -> None:
    """The work directory's cubes must come from the box / flow / cube options the model was trained on
    (``statevad score`` rebuilds its stages from the model's recorded options; ``test`` reads prepared cubes,
    so it compares them): a model scored on other cubes gives a meaningless AUROC."""
    from statevad.preparation import options_identity

    if not isinstance(model_manifest, dict) or not isinstance(model_manifest.get("options"), dict):
        return  # imported weights or an older model file: nothing recorded to compare
    ours = options_identity(manifest.get("options")) or {}
    theirs = options_identity(model_manifest["options"]) or {}
    diff = []
    for section in ("box", "flow", "cube"):
        a, b = ours.get(section), theirs.get(section)
        if not isinstance(a, dict) or not isinstance(b, dict):
            if a != b:
                diff.append(f"{section} (work {a!r}, model {b!r})")
            continue
        for name in sorted(set(a) | set(b)):
            if a.get(name) != b.get(name):
                diff.append(f"{section}.{name} (work {a.get(name)!r}, model {b.get(name)!r})")
    for key in ("box_source", "detector_sha256"):
        if ours.get(key) != theirs.get(key):
            diff.append(f"{key} (work {ours.get(key)!r}, model {theirs.get(key)!r})")
    if diff:
        shown = "; ".join(diff[:6]) + (f"; +{len(diff) - 6} more" if len(diff) > 6 else "")
        raise UserError(f"{work} was prepared with other options than {model_path} was trained on: {shown}; "
                        "prepare the work directory with the model's settings or use a matching model")


def part_scores(z_raw: np.ndarray, z_flow: np.ndarray, z_motion: np.ndarray | None,
                z_app: np.ndarray | None, speed: np.ndarray, cfg: Any) -> dict[str, np.ndarray]:
    """The cube scores of the fusion's parts (``metrics.json`` ``parts``), with the run's own weights: STATE
    alone (raw + flow branch; the fused score itself when nothing else is weighed), the fusion without the
    motion / appearance term when it has one, the appearance term alone when the model has it, and the
    per-box mean flow speed (:func:`statevad.tensors.cube_motion`), which learns nothing."""
    def fused(w_motion: float, w_appearance: float) -> np.ndarray:
        return combine(z_raw, z_flow, z_motion, cfg.w_raw, cfg.w_flow, w_motion, z_app, w_appearance)

    out = {"state_only": fused(0.0, 0.0)}
    if cfg.w_motion and cfg.w_appearance:
        out["without_motion_term"] = fused(0.0, cfg.w_appearance)
        out["without_appearance_term"] = fused(cfg.w_motion, 0.0)
    if z_app is not None:
        out["appearance_only"] = np.asarray(z_app, np.float64)
    out["box_speed_no_learning"] = np.asarray(speed, np.float64)
    return out


def _brief(result: dict[str, Any]) -> dict[str, Any]:
    return {k: result[k] for k in ("micro_auroc", "macro_auroc", "eer")}


def run_test(work: str | Path, model_path: str | Path, *, out: str | Path | None = None,
             overrides: dict[str, Any] | None = None, stats: str | None = None,
             clips: list[str] | None = None, progress: bool = True, config: str | Path | None = None,
             sets: list[str] | None = None, border_min_px: float = BORDER_MIN_PX,
             fps: float | None = None) -> dict[str, Any]:
    """Score ``work``'s test split with a trained model and evaluate it (spec 7); write the result files.

    Settings: the model's preset ← ``config`` (a TOML file) ← ``sets`` (``score.FIELD=VALUE``) ←
    ``overrides`` (ScoreConfig fields given as flags; None = not given), see :mod:`statevad.settings`.
    ``stats``: None (use the checkpoint's), ``"train"`` (compute them on ``work``'s training cubes, for
    imported weights) or a JSON file. ``clips``: score and evaluate only these test clips (a quick check,
    not the published protocol). ``border_min_px``: ``statevad score``'s border rule (0 = off; see the module
    docstring). ``fps``: the frame rate of test footage that carries none (frame folders), for a track
    window given in seconds. Returns the content of ``metrics.json``.
    """
    border = check_border_min_px(border_min_px)
    fps = checked_fps(fps)
    work, model_path = Path(work), Path(model_path)
    model, ckpt = load_checkpoint(model_path, device="cpu")
    cfg = resolve(ckpt.preset, "test", config=config, sets=sets, flags={"score": overrides or {}}).score
    device = resolve_device(cfg.device)
    model.to(device)
    out_dir = Path(out) if out is not None else work / "results" / model_path.stem
    check_writable(out_dir / "metrics.json", "--out")  # before scoring, not after it
    full_test = open_split(work, "test", verify=True)
    check_options(work, full_test.manifest, ckpt.work_manifest, model_path)
    test = select_clips(full_test, clips)
    if test.raw.shape[1] != ckpt.preset.model.frames:
        raise UserError(f"{work} has cubes of {test.raw.shape[1]} frames but {model_path} was trained on "
                        f"{ckpt.preset.model.frames}: prepare with the same --length or use another model")
    if stats == "train":
        tr = open_split(work, "train", verify=True)
        st = training_stats(model, tr.raw, tr.flow, select_cubes(len(tr.raw), None, 0),
                            batch_size=cfg.batch_size, bf16=cfg.bf16, progress=progress,
                            flow_term=cfg.flow_term)
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
    has_motion_stats = all(k in st for k in MOTION_KEYS) and st["motion_std"] > 0
    z_motion = motion_zscore(motion, st) if cfg.w_motion or has_motion_stats else None
    # the appearance term's z-scores are reported whenever the model and the cubes allow them (and asked
    # for, with its one-line error, when the weight needs them)
    z_app = None
    if cfg.w_appearance or (ckpt.appearance is not None and test.classes is not None):
        z_app = appearance_term(ckpt.appearance, test.classes, 1.0, str(work))
    cube_score = combine(z_raw, z_flow, z_motion, cfg.w_raw, cfg.w_flow, cfg.w_motion, z_app,
                         cfg.w_appearance)
    # each clip's footage header, read once for the border rule and the track mean's window in seconds
    headers = (clip_headers(test, full_test.manifest) if border > 0 or cfg.track_seconds > 0
               else [(None, None)] * len(test.clips))
    keep, unsized = border_mask(test, headers, border)
    if unsized:
        print(f"statevad test: warning: the frame size of test clip(s) {', '.join(unsized[:6])}"
              f"{' ...' if len(unsized) > 6 else ''} is unknown (footage not found), so the border rule "
              "is off for them", file=sys.stderr, flush=True)
    # each object's score averaged along its track (score.track_frames / track_seconds), over the cubes a
    # stream would see
    windows, rate_assumed = track_windows(test, headers, cfg, ckpt.card, fps)
    if rate_assumed:
        print(f"statevad test: warning: the frame rate of test clip(s) {', '.join(rate_assumed[:6])}"
              f"{' ...' if len(rate_assumed) > 6 else ''} is unknown (no rate in the footage, or footage not "
              f"found): the track mean's {cfg.track_seconds:g} s window assumes the training footage's rate "
              "(or 25 frames/s); pass --fps", file=sys.stderr, flush=True)
    def frames_of(cube: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # (tracked cube scores, frame scores)
        tracked = split_track_mean(cube, test.clip, test.frame, test.box, windows, keep)
        return tracked, smooth(frame_scores(np.asarray(test.frame)[keep], tracked[keep], test.n_frames),
                               cfg.smooth_sigma, bounds)

    tracked, frames = frames_of(cube_score)

    # scores first: they survive an evaluation error (e.g. a --clips subset with a single class)
    write_frame_csv(out_dir / "scores.csv", frames, test.labels, bounds)
    cols = {"e_raw": e_raw, "e_flow": e_flow, "z_raw": z_raw, "z_flow": z_flow, "motion": motion}
    if has_motion_stats:
        cols["z_motion"] = z_motion
    if z_app is not None:
        cols["z_appearance"] = z_app
    if max(windows, default=0) > 1:
        cols["score_cube"] = cube_score  # the object's own fused score, before the track mean
    cols["score"] = tracked
    cols["scored"] = keep.astype(np.int64)  # 0: skipped by the border rule (not in the frame score)
    write_object_csv(out_dir / "objects.csv", test, bounds, cols)
    result = evaluate(frames, test.labels, bounds)
    parts = {name: _brief(evaluate(frames_of(cube)[1], test.labels, bounds))
             for name, cube in part_scores(z_raw, z_flow, z_motion, z_app, motion, cfg).items()}
    save_roc(out_dir / "roc.png", test.labels, frames,
             title=f"{model_path.stem}: micro AUROC {result['micro_auroc']:.4f}")
    full = {**result, "clips": clips or "all", "model": str(model_path), "model_sha256": ckpt.sha256,
            "work": str(work),
            "score": dataclasses.asdict(cfg),
            "border_rule": {"min_px": border, "margin_px": BORDER_MARGIN_PX,
                            "meaning": (f"cubes whose box touches the frame border with a side under "
                                        f"{border:g} px are not counted in the frame scores (as in statevad "
                                        "score)" if border else "off"),
                            "cubes_skipped": int((~keep).sum()), "clips_without_frame_size": unsized},
            "track_mean": {"window_frames": sorted(set(windows)), "seconds": cfg.track_seconds or None,
                           "fps_given": fps, "clips_with_assumed_rate": rate_assumed},
            # the settings of this run whose value its preset took from test labels (none after a
            # model's label-free selection; docs: config.TEST_LABEL_CHOICES)
            "chosen_on_test_labels": chosen_on_test_labels(ckpt.preset.name, cfg, ckpt.selection),
            "parts": parts, "stats": st, "device": str(device), "n_cubes": int(len(e_raw)),
            "scoring_seconds": round(seconds, 3),
            "cubes_per_second": round(len(e_raw) / seconds, 2) if seconds > 0 else None}
    atomic_write_json(out_dir / "metrics.json", full)
    return full
