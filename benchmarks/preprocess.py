"""Preprocessing benchmark on UCSD Ped2: wall time of `prepare`, per-stage cost, box recall vs reference.

    python benchmarks/preprocess.py [--root ../shared/data/ped2] [--work /tmp/w_det] [--jobs 2]
                                    [--skip-prepare] [--skip-recall] [--split train|test] [--modes plain]

1. Runs the whole preprocessing (detector+motion boxes, DIS flow, cubes; both splits) into ``--work`` from
   scratch and reports the wall time and, per stage, the ms per frame (summed over clips, i.e. per worker).
2. Measures the recall of our boxes against ``boxes_reference_test.npz`` (the original pipeline's Cascade
   R-CNN + motion boxes): the fraction of reference boxes matched by one of ours at IoU >= 0.5 and >= 0.3,
   for detector, motion and detector+motion, with plain resize and letterbox input and several
   detector score thresholds (the detector runs once per input mode; thresholds are applied afterwards),
   and each with the covered-box rule (spec 3.2) at several ``cover_thr`` (1.0 = off). Also the precision
   (the share of our boxes that match a reference box at IoU >= 0.5) and their F1. ``--split train``
   measures on the training clips (``boxes_reference_train.npz``): what the box settings may be chosen on,
   as no test clip is looked at (the reference boxes are the original pipeline's output, not labels).
   For the ped2 preset's threshold and rule, also the boxes with the lower-score detections that lie inside a
   kept one added (``|inner>FLOOR``, :func:`inner_detections`; not a package option).

Writes ``benchmarks/results/preprocess-ped2.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import platform
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
THRESHOLDS = (0.5, 0.4, 0.3, 0.2)
COVERS = (0.6, 0.75, 0.9, 1.0)  # remove_covered's cover_thr; 0.6 = the published value, 1.0 = rule off
# Detector input variants: name -> (letterbox, column tiles, grid); grid: the whole frame + grid x grid tiles.
MODES = {"plain": (False, 1, 1), "letterbox": (True, 1, 1), "plain-2tiles": (False, 2, 1),
         "plain-grid2": (False, 1, 2)}
SMALL = 40  # px: reference boxes lower than this are the far objects (ANALYSIS 14: 25-35 px walkers)
MOTION_BINARY = (18, 12)
INNER = (0.3, 0.25, 0.2)  # lower score floors of :func:`inner_detections` (the preset's 0.4 / 0.6 boxes only)


def _merged(r: np.ndarray, o: np.ndarray, best_iou: np.ndarray) -> np.ndarray:
    """Which reference boxes (n,) no box of ours matches at IoU 0.5 (``best_iou``: each one's best) but one
    at least twice its area holds (> 90 % of it inside): the object is in our boxes, merged with others
    (ANALYSIS 14)."""
    from statevad.boxes import box_area, cover_ratio

    if not len(o):
        return np.zeros(len(r), bool)
    big = box_area(o)[None, :] >= 2 * box_area(r)[:, None]
    return (best_iou < 0.5) & ((cover_ratio(r, o) > 0.9) & big).any(axis=1)


def recall(ref: list[np.ndarray], ours: list[np.ndarray]) -> dict[str, float]:
    """Recall of the reference boxes at IoU 0.5 and 0.3, precision of ours at 0.5, their F1, boxes/frame;
    the recall of the small reference boxes (lower than :data:`SMALL` px) and the share of them merged
    into a box of ours (:func:`_merged`)."""
    from statevad.boxes import iou_matrix

    pairs = list(zip(ref, ours, strict=True))
    ious = [iou_matrix(r, o) for r, o in pairs]  # (reference, ours) a frame, once for every column
    per_ref = [m.max(axis=1) if m.shape[1] else np.zeros(m.shape[0]) for m in ious]
    best = np.concatenate(per_ref)
    small = np.concatenate([(r[:, 3] - r[:, 1]) < SMALL for r, _ in pairs])
    merged = np.concatenate([_merged(r, o, b) for (r, o), b in zip(pairs, per_ref, strict=True)])
    ours_best = np.concatenate([m.max(axis=0) if m.shape[0] else np.zeros(m.shape[1]) for m in ious])
    n_ours = sum(len(o) for o in ours)
    rec, prec = float((best >= 0.5).mean()), float((ours_best >= 0.5).mean()) if n_ours else 0.0
    return {"iou0.5": round(rec, 4), "iou0.3": round(float((best >= 0.3).mean()), 4),
            "precision0.5": round(prec, 4), "f1_0.5": round(2 * rec * prec / max(rec + prec, 1e-9), 4),
            "boxes_per_frame": round(n_ours / len(ours), 2),
            "small_iou0.5": round(float((best[small] >= 0.5).mean()), 4) if small.any() else None,
            "small_merged": round(float(merged[small].mean()), 4) if small.any() else None,
            "merged": round(float(merged.mean()), 4)}


def inner_detections(raw: np.ndarray, kept: np.ndarray, floor: float, score_thr: float, min_area: float,
                     cover_thr: float) -> np.ndarray:
    """Detections scoring in (``floor``, ``score_thr``] that lie inside a kept detection (more than
    ``cover_thr`` of their area) and are at most half its area: the objects a merged detection (a far cyclist
    boxed with the walker below it, docs/ANALYSIS.md 14) may hold, which the score threshold drops."""
    from statevad.boxes import box_area, cover_ratio, filter_detections, remove_covered

    low = filter_detections(raw[raw[:, 4] <= score_thr], floor, min_area)
    if len(low) == 0 or len(kept) == 0:
        return low[:0]
    area_low, area_kept = box_area(low), box_area(kept)
    inside = cover_ratio(low, kept) > cover_thr
    return remove_covered(low[(inside & (area_low[:, None] <= 0.5 * area_kept[None, :])).any(axis=1)],
                          cover_thr)


def _recall_worker(clip: Any, box_cfg: dict[str, Any], detector: str,
                   modes: tuple[str, ...] = tuple(MODES)) -> dict[str, list[np.ndarray]]:
    """All box variants of one clip's frames (run in a worker process)."""
    import cv2

    from statevad.boxes import Detector, filter_detections, motion_boxes, remove_covered
    from statevad.config import BoxConfig

    cv2.setNumThreads(1)
    cfg = BoxConfig(**box_cfg)
    frames = clip.read()
    n = len(frames)
    dets = {m: Detector(detector, score_thr=min(THRESHOLDS), letterbox=lb, tiles=nt, grid=g)
            for m, (lb, nt, g) in MODES.items() if m in modes}
    out: dict[str, list[np.ndarray]] = {}
    for t in range(n):
        prev, cur, nxt = frames[max(t - 1, 0)], frames[t], frames[min(t + 1, n - 1)]
        for b in MOTION_BINARY:
            mcfg = dataclasses.replace(cfg, motion_binary_thr=b)
            out.setdefault(f"motion|bin{b}", []).append(motion_boxes(prev, cur, nxt, np.zeros((0, 4)), mcfg))
        for m, det in dets.items():
            raw = det(cur)
            for thr, cover in itertools.product(THRESHOLDS, COVERS):
                app = remove_covered(filter_detections(raw, thr, cfg.min_area), cover)
                out.setdefault(f"detector|{m}|score>{thr}|cover{cover}", []).append(app)
                mot = motion_boxes(prev, cur, nxt, app, cfg)
                out.setdefault(f"detector+motion|{m}|score>{thr}|cover{cover}", []).append(
                    np.concatenate([app, mot]))
                if (thr, cover) != (cfg.score_thr, cfg.cover_thr):
                    continue
                for floor in INNER:  # the preset's boxes + the lower-score detections inside them
                    app2 = np.concatenate([app, inner_detections(raw, app, floor, thr, cfg.min_area, cover)])
                    mot2 = motion_boxes(prev, cur, nxt, app2, cfg)
                    out.setdefault(f"detector+motion|{m}|score>{thr}|cover{cover}|inner>{floor}", []).append(
                        np.concatenate([app2, mot2]))
    return out


def run_recall(ds: Any, jobs: int, box_cfg: dict[str, Any], detector: str,
               modes: tuple[str, ...], split: str = "test") -> dict[str, Any]:
    from statevad.boxes import load_reference_boxes

    clips = ds.clips(split)
    ref = load_reference_boxes(ds.reference_boxes[split], sum(c.n_frames for c in clips))
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        parts = list(pool.map(_recall_worker, clips, [box_cfg] * len(clips), [detector] * len(clips),
                              [modes] * len(clips)))
    variants: dict[str, list[np.ndarray]] = {}
    for part in parts:
        for k, v in part.items():
            variants.setdefault(k, []).extend(v)
    res = {k: recall(ref, v) for k, v in variants.items()}
    return {"n_reference_boxes": int(sum(len(r) for r in ref)), "n_frames": len(ref),
            "seconds": round(time.perf_counter() - t0, 1), "variants": res}


def run_prepare(ds: Any, work: Path, jobs: int) -> dict[str, Any]:
    from statevad.preparation import prepare

    if work.exists():
        shutil.rmtree(work)  # from scratch: the cache would make the second run instant
    t0 = time.perf_counter()
    m = prepare(ds, work, box_source="detector+motion", flow_method="dis", jobs=jobs, progress=True)
    wall = time.perf_counter() - t0
    n_frames = sum(e["n_frames"] for e in m["splits"].values())
    stage = {k: sum(e["seconds"][k] for e in m["splits"].values())
             for k in ("read", "boxes", "flow", "cubes")}
    return {
        "wall_s": round(wall, 1), "jobs": jobs, "n_frames": n_frames,
        "ms_per_frame_per_worker": {k: round(1000 * v / n_frames, 2) for k, v in stage.items()},
        "cubes": {sp: e["n_cubes"] for sp, e in m["splits"].items()},
        "dropped_by_motion_filter": {sp: e["n_dropped_by_motion_filter"] for sp, e in m["splits"].items()},
        "box_source": m["box_source"], "options": m["options"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default=str(REPO.parent / "shared" / "data" / "ped2"))
    ap.add_argument("--work", default="/tmp/w_det")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--skip-prepare", action="store_true")
    ap.add_argument("--skip-recall", action="store_true")
    ap.add_argument("--modes", default=",".join(MODES), help=f"detector input variants: {', '.join(MODES)}")
    ap.add_argument("--split", choices=("train", "test"), default="test",
                    help="the clips whose reference boxes the recall is measured on")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "preprocess-ped2.json"))
    args = ap.parse_args(argv)

    import cv2
    import onnxruntime

    from statevad.boxes import default_detector_path
    from statevad.config import get_preset
    from statevad.datasets import load_dataset
    from statevad.files import atomic_write_json

    ds = load_dataset(args.root)
    out_path = Path(args.out)
    result: dict[str, Any] = json.loads(out_path.read_text()) if out_path.exists() else {}
    machine = {"python": platform.python_version(), "opencv": cv2.__version__,
               "onnxruntime": onnxruntime.__version__, "cpus": os.cpu_count()}
    sys.path.insert(0, str(REPO / "benchmarks"))
    from ped2 import _git_commit

    result.update({"dataset": str(Path(args.root).resolve()), "machine": machine,
                   "command": " ".join(["python", *sys.argv]), "git_commit": _git_commit(),
                   "chosen_on_test_labels": []})  # box recall against the reference boxes: no test label
    if not args.skip_prepare:
        result["prepare"] = run_prepare(ds, Path(args.work), args.jobs)
        print(json.dumps(result["prepare"], indent=1))
    if not args.skip_recall:
        box_cfg = dataclasses.asdict(get_preset("ped2").box)
        modes = tuple(m for m in args.modes.split(",") if m)
        if set(modes) - set(MODES):
            ap.error(f"unknown --modes {sorted(set(modes) - set(MODES))}")
        key = f"recall_{args.split}"
        result[key] = run_recall(ds, args.jobs, box_cfg, str(default_detector_path()), modes, args.split)
        result[key]["command"] = result["command"]
        for k, v in sorted(result[key]["variants"].items()):
            print(f"{k:52s} recall@0.5 {v['iou0.5']:.3f}  @0.3 {v['iou0.3']:.3f}  "
                  f"precision@0.5 {v['precision0.5']:.3f}  F1 {v['f1_0.5']:.3f}  "
                  f"boxes/frame {v['boxes_per_frame']}  small@0.5 {v['small_iou0.5']}  "
                  f"small merged {v['small_merged']}")
    atomic_write_json(out_path, result)
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
