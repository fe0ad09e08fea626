"""What the original pipeline's boxes give the box speed that ours do not (issue 18; docs/ANALYSIS.md 14).

    python benchmarks/ped2_box_gap.py --ours W --reference R --out OUT.json

(W = a work directory prepared with our boxes, R = one with ``--boxes reference``; same flow.) No model. For
each, the box speed of every cube (:func:`statevad.tensors.cube_motion`) averaged along its IoU track as the
ped2 preset scores it (10 frames), each frame's fastest object, and:

1. percentiles of that value on the normal and the anomalous test frames (the labels only split the frames);
2. per test clip, the anomalous frames whose fastest object stays under ``--slow`` px/frame with one set of
   boxes, and how many of them the other set lifts over it;
3. the same track mean with other trackers (an IoU tracker that keeps a lost track ``--gap`` frames, with and
   without a constant-velocity shift of the lost box): whether the tracker, rather than the boxes, is the
   difference;
4. the same track mean of other per-cube speed statistics than the mean over the whole patch (the fastest
   quadrant, the fastest of 4x4 cells, the 75th / 90th percentile of the pixels' speeds): whether a statistic
   that picks a small fast object out of a loose box gives what a tight box gives.

The frame micro AUROCs use the test labels and are information only: nothing here sets a default.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ped2 import write_study  # noqa: E402

TRACK = 10  # the ped2 preset's score.track_frames
PCT = (1, 5, 10, 50, 90, 99)
STATISTICS = ("mean", "fastest quadrant", "fastest 4x4 cell", "pixel p75", "pixel p90")


def gap_track_ids(frame: np.ndarray, box: np.ndarray, gap: int, velocity: bool,
                  iou_thr: float = 0.3) -> np.ndarray:
    """Track ids of one clip's boxes by the package's greedy IoU match, but a track not matched in a frame
    stays matchable for ``gap`` more frames (most recent tracks matched first); with ``velocity`` its last
    box is moved by its last per-frame displacement times the frames since it was seen."""
    from statevad.tracks import greedy_match

    frame = np.asarray(frame, np.int64)
    box = np.asarray(box, np.float32).reshape(-1, 4)
    ids = np.full(len(frame), -1, np.int64)
    order = np.argsort(frame, kind="stable")
    sorted_frames = frame[order]
    live: dict[int, tuple[np.ndarray, int, np.ndarray]] = {}  # id -> (last box, frame seen, shift a frame)
    next_id = 0
    for f in range(int(frame.min()), int(frame.max()) + 1) if len(frame) else ():
        idx = order[np.searchsorted(sorted_frames, f):np.searchsorted(sorted_frames, f, "right")]
        live = {k: v for k, v in live.items() if f - v[1] <= gap + 1}
        cur = box[idx]
        owner = np.full(len(idx), -1, np.int64)
        for age in range(1, gap + 2):
            keys = [k for k, v in live.items() if f - v[1] == age]
            free = np.flatnonzero(owner < 0)
            if not keys or not len(free):
                continue
            prev = np.stack([live[k][0] + (live[k][2] * age if velocity else 0) for k in keys])
            match = greedy_match(prev, cur[free], iou_thr)
            for j, m in zip(free, match, strict=True):
                if m >= 0:
                    owner[j] = keys[m]
        for j, i in enumerate(idx):
            if owner[j] < 0:
                owner[j], next_id = next_id, next_id + 1
                shift = np.zeros(4, np.float32)
            else:
                last, seen, _ = live[int(owner[j])]
                shift = (cur[j] - last) / (f - seen)
            live[int(owner[j])] = (cur[j], f, shift)
            ids[i] = owner[j]
    return ids


def tracked_speed(split, speed: np.ndarray, tracker: str, gap: int) -> np.ndarray:
    """Each cube's ``speed`` averaged over its track's last TRACK cubes, clip by clip: the package's own
    track mean (:func:`statevad.tracks.split_track_mean`) for the IoU tracker, the same mean over
    :func:`gap_track_ids` for the others."""
    from statevad.tracks import causal_track_mean, split_track_mean

    clip, frame, box = np.asarray(split.clip), np.asarray(split.frame), np.asarray(split.box)
    if tracker == "iou":
        return split_track_mean(speed, clip, frame, box, TRACK)
    out = speed.copy()
    for c in np.unique(clip):
        idx = np.flatnonzero(clip == c)
        ids = gap_track_ids(frame[idx], box[idx], gap, velocity=tracker == "iou+gap+velocity")
        out[idx] = causal_track_mean(speed[idx], frame[idx], ids, TRACK)
    return out


def speed_statistics(flow, chunk: int = 2048) -> dict[str, np.ndarray]:
    """Per cube of ``flow`` (N, T, P, P, 2), each of :data:`STATISTICS` of its time-averaged speed map (P, P);
    "mean" equals :func:`statevad.tensors.cube_motion` up to float rounding."""
    out: dict[str, list[np.ndarray]] = {k: [] for k in STATISTICS}
    for a in range(0, len(flow), chunk):
        f = np.asarray(flow[a:a + chunk], np.float32)
        speed_map = np.sqrt((f ** 2).sum(-1)).mean(1)  # (n, P, P): each pixel's speed over the cube's frames
        n, size, _ = speed_map.shape
        quad = speed_map.reshape(n, 2, size // 2, 2, size // 2).mean((2, 4))  # (n, 2, 2) quadrant means
        cell = speed_map.reshape(n, 4, size // 4, 4, size // 4).mean((2, 4))  # (n, 4, 4) cell means
        pixels = speed_map.reshape(n, -1)
        out["mean"].append(pixels.mean(1))
        out["fastest quadrant"].append(quad.reshape(n, -1).max(1))
        out["fastest 4x4 cell"].append(cell.reshape(n, -1).max(1))
        out["pixel p75"].append(np.percentile(pixels, 75, axis=1))
        out["pixel p90"].append(np.percentile(pixels, 90, axis=1))
    return {k: np.concatenate(v).astype(np.float64) for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ours", required=True, help="work directory prepared with our boxes")
    p.add_argument("--reference", required=True, help="work directory prepared with --boxes reference")
    p.add_argument("--slow", type=float, default=0.95, help="px/frame under which an anomalous frame's "
                   "fastest object counts as slow (question 2)")
    p.add_argument("--gap", type=int, default=3, help="frames a lost track stays matchable (question 3)")
    p.add_argument("--out", required=True, help="results JSON")
    args = p.parse_args(argv)

    from statevad.metrics import clip_bounds, evaluate
    from statevad.scoring import frame_scores
    from statevad.tensors import cube_motion
    from statevad.workdir import open_split

    t0 = time.perf_counter()
    splits = {"ours": open_split(args.ours, "test"), "reference": open_split(args.reference, "test")}
    labels = np.asarray(splits["ours"].labels)
    if not np.array_equal(labels, np.asarray(splits["reference"].labels)):
        raise SystemExit("the two work directories hold different test frames")
    clips = splits["ours"].clips
    clip_of = np.repeat(np.arange(len(clips)), [int(c["n_frames"]) for c in clips])
    bounds = clip_bounds(clips)
    doc: dict[str, object] = {"track_frames": TRACK, "percentiles": list(PCT),
                              "slow_px_per_frame": args.slow, "gap_frames": args.gap,
                              "work": {"ours": args.ours, "reference": args.reference}}
    tops = {}
    for name, split in splits.items():
        res: dict[str, object] = {"test cubes": int(len(split.frame))}
        speed = cube_motion(split.flow)  # once per split: every tracker averages the same speeds
        for tracker in ("iou", "iou+gap", "iou+gap+velocity"):
            top = frame_scores(split.frame, tracked_speed(split, speed, tracker, args.gap), split.n_frames)
            res[f"micro AUROC, box speed, track mean ({tracker}; test labels, information only)"] = round(
                float(evaluate(top, labels, bounds)["micro_auroc"]), 4)
            if tracker == "iou":
                tops[name] = top
                for lab, tag in ((0, "normal"), (1, "anomalous")):
                    res[f"{tag} frames: fastest tracked object, percentiles"] = [
                        round(float(x), 3) for x in np.percentile(top[labels == lab], PCT)]
        for stat, values in speed_statistics(split.flow).items():
            top = frame_scores(split.frame, tracked_speed(split, values, "iou", args.gap), split.n_frames)
            key = f"micro AUROC, {stat} speed of a cube, track mean (iou; test labels, information only)"
            res[key] = round(float(evaluate(top, labels, bounds)["micro_auroc"]), 4)
        doc[name] = res
    slow = {name: (tops[name] < args.slow) & (labels == 1) for name in tops}
    only_ours = slow["ours"] & ~slow["reference"]
    doc["anomalous frames under --slow, per clip"] = {
        str(c["name"]): {"ours": int(slow["ours"][clip_of == i].sum()),
                         "reference": int(slow["reference"][clip_of == i].sum()),
                         "ours slow, reference not": int(only_ours[clip_of == i].sum())}
        for i, c in enumerate(clips) if (labels[clip_of == i] == 1).any()}
    write_study(args.out, doc, "ped2_box_gap.py", argv, t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
