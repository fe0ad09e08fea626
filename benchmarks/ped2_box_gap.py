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
   that picks a small fast object out of a loose box gives what a tight box gives;
5. in the anomalous frames that the reference boxes lift over ``--slow`` and ours do not, how our boxes
   cover the reference set's fastest box: matched (IoU >= 0.5), merged (one of ours at least twice its area
   holds 70 % of it), a fragment (our best match under half its area), loose (the rest), or nothing;
6. the same track mean when every box whose moving pixels form two or more separate blobs (Otsu's threshold
   on the cube's time-averaged speed map, blobs of at least ``--blob-share`` of the box) also gives each
   blob as an object of its own: whether splitting merged boxes by their motion recovers what the
   reference boxes give. Needs the frames (``--root``) and recomputes the work directory's flow;
7. which side of the gap the boxes make: the tracked box speed's frame AUROC with the reference boxes' frame
   scores on the anomalous frames and ours on the normal ones, and the other way round.

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
COVER_KINDS = ("matched", "merged", "fragment", "loose", "none")


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


def cover_kind(ref_box: np.ndarray, ours: np.ndarray) -> str:
    """How ``ours`` (n, 4) cover one reference box: one of :data:`COVER_KINDS` (question 5)."""
    from statevad.boxes import iou_matrix

    if len(ours) == 0:
        return "none"
    iou = iou_matrix(ref_box[None], ours)[0]
    area = (ours[:, 2] - ours[:, 0]) * (ours[:, 3] - ours[:, 1])
    ref_area = (ref_box[2] - ref_box[0]) * (ref_box[3] - ref_box[1])
    iw = np.clip(np.minimum(ref_box[2], ours[:, 2]) - np.maximum(ref_box[0], ours[:, 0]), 0, None)
    ih = np.clip(np.minimum(ref_box[3], ours[:, 3]) - np.maximum(ref_box[1], ours[:, 1]), 0, None)
    held = iw * ih / max(ref_area, 1e-6)  # the share of the reference box inside each of ours
    best = int(np.argmax(iou))
    if iou[best] >= 0.5:
        return "matched"
    if iou[best] < 0.05 and held.max() < 0.3:
        return "none"
    holder = int(np.argmax(held))
    if held[holder] >= 0.7 and area[holder] >= 2 * ref_area:
        return "merged"
    return "fragment" if area[best] < 0.5 * ref_area else "loose"


def split_boxes(speed_map: np.ndarray, origin: tuple[int, int], min_share: float) -> list[np.ndarray]:
    """The blobs of a box's time-averaged speed map (h, w), cropped at frame pixel ``origin`` (x, y), when
    there are two or more: Otsu's threshold, a 3x3 opening, 8-connected blobs of at least ``min_share`` of
    the box; their boxes in frame pixels."""
    import cv2

    if speed_map.size < 64 or not speed_map.max() > 0:
        return []
    u8 = np.clip(speed_map / speed_map.max() * 255, 0, 255).astype(np.uint8)
    _, fg = cv2.threshold(u8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    n, _, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    blobs = [j for j in range(1, n) if stats[j, cv2.CC_STAT_AREA] >= min_share * speed_map.size]
    if len(blobs) < 2:
        return []
    x0, y0 = origin
    return [np.array([x0 + x, y0 + y, x0 + x + w, y0 + y + h], np.float32)
            for x, y, w, h in (stats[j, :4] for j in blobs)]


def split_speeds(root: str, split, min_share: float) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Question 6: every cube's box speed recomputed from the frames' flow (the work directory's method)
    over its window, and the objects the split adds (their clip, frame, box, speed). The first is the
    check that the recomputation matches :func:`statevad.tensors.cube_motion` of the stored cubes."""
    from statevad.config import FlowConfig
    from statevad.cubes import box_slices, elastic_window
    from statevad.datasets import load_dataset
    from statevad.flow import FlowEstimator, clip_flow
    options = split.manifest.get("options", {})
    est = FlowEstimator(FlowConfig(**options.get("flow", {})))
    length = int(options.get("cube", {}).get("length", 3))
    clip, frame, box = np.asarray(split.clip), np.asarray(split.frame), np.asarray(split.box)
    speed = np.zeros(len(frame))
    added: dict[str, list] = {"clip": [], "frame": [], "box": [], "speed": [], "parent": []}
    for ci, (entry, c) in enumerate(zip(split.clips, load_dataset(root).clips("test"), strict=True)):
        mag = np.linalg.norm(clip_flow(c.read(), est), axis=-1)  # (n, H, W)
        start = int(entry["start"])
        for i in np.flatnonzero(clip == ci):
            win = elastic_window(int(frame[i]) - start, len(mag), length)
            window = mag[win[0]:win[-1] + 1]  # a view: the window is contiguous
            rows, cols = box_slices(box[i], *mag.shape[1:])
            speed_map = window[:, rows, cols].mean(0)
            speed[i] = speed_map.mean()
            for sub in split_boxes(speed_map, (cols.start, rows.start), min_share):
                r, cc = box_slices(sub, *mag.shape[1:])
                added["clip"].append(ci)
                added["frame"].append(int(frame[i]))
                added["box"].append(sub)
                added["speed"].append(float(window[:, r, cc].mean()))
                added["parent"].append(int(i))
    out = {k: np.asarray(v, np.float32 if k == "box" else np.float64 if k == "speed" else np.int64)
           for k, v in added.items()}
    out["box"] = out["box"].reshape(-1, 4)
    return speed, out


def cover_kinds(splits: dict, tracked: dict[str, np.ndarray], tops: dict[str, np.ndarray],
                labels: np.ndarray, slow: float) -> dict:
    """Question 5: per :data:`COVER_KINDS`, the frames, and the mean of the reference's fastest object, of
    ours, and of our best-matching box (px/frame; ``tracked``: each split's cube speeds, IoU track mean)."""
    from statevad.boxes import iou_matrix

    frames = {k: np.asarray(s.frame) for k, s in splits.items()}
    rows: dict[str, list[tuple[float, float, float]]] = {k: [] for k in COVER_KINDS}
    for g in np.flatnonzero((labels == 1) & (tops["reference"] >= slow) & (tops["ours"] < slow)):
        ir, io = np.flatnonzero(frames["reference"] == g), np.flatnonzero(frames["ours"] == g)
        j = ir[np.argmax(tracked["reference"][ir])]
        ref_box, ours = np.asarray(splits["reference"].box[j]), np.asarray(splits["ours"].box)[io]
        kind = cover_kind(ref_box, ours)
        best = float(tracked["ours"][io][np.argmax(iou_matrix(ref_box[None], ours)[0])]) if len(io) else 0.0
        rows[kind].append((float(tracked["reference"][j]), float(tops["ours"][g]), best))
    return {k: {"frames": len(v), **({"mean speed: reference fastest / ours fastest / our best match":
                                       [round(float(x), 3) for x in np.mean(v, axis=0)]} if v else {})}
            for k, v in rows.items()}


def split_study(root: str, split, stored_speed: np.ndarray, labels: np.ndarray, bounds,
                min_share: float) -> dict:
    """Question 6 for one work directory: the tracked box speed's frame AUROC without and with the blobs
    (``stored_speed``: :func:`statevad.tensors.cube_motion` of its cubes, which the recomputation is checked
    against)."""
    from statevad.metrics import evaluate
    from statevad.scoring import frame_scores
    from statevad.tracks import split_track_mean

    speed, added = split_speeds(root, split, min_share)
    clip, frame, box = np.asarray(split.clip), np.asarray(split.frame), np.asarray(split.box)
    both = {"clip": np.concatenate([clip, added["clip"]]).astype(np.int64),
            "frame": np.concatenate([frame, added["frame"]]).astype(np.int64),
            "box": np.concatenate([box, added["box"]]), "speed": np.concatenate([speed, added["speed"]])}
    order = np.lexsort((np.arange(len(both["frame"])), both["frame"]))
    both = {k: v[order] for k, v in both.items()}

    def auroc(v: np.ndarray, c: np.ndarray, f: np.ndarray, b: np.ndarray) -> float:
        top = frame_scores(f, split_track_mean(v, c, f, b, TRACK), split.n_frames)
        return round(float(evaluate(top, labels, bounds)["micro_auroc"]), 4)

    return {"recomputed speed vs the stored cubes' (max abs difference, px/frame)": round(
                float(np.abs(speed - stored_speed).max()), 4),
            "boxes split": int(len(np.unique(added["parent"]))), "objects added": int(len(added["parent"])),
            "micro AUROC, box speed, track mean (test labels, information only)": auroc(
                speed, clip, frame, box),
            "the same with the blobs as objects": auroc(both["speed"], both["clip"], both["frame"],
                                                        both["box"])}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ours", required=True, help="work directory prepared with our boxes")
    p.add_argument("--reference", required=True, help="work directory prepared with --boxes reference")
    p.add_argument("--slow", type=float, default=0.95, help="px/frame under which an anomalous frame's "
                   "fastest object counts as slow (question 2)")
    p.add_argument("--gap", type=int, default=3, help="frames a lost track stays matchable (question 3)")
    p.add_argument("--root", default=None, help="the Ped2 folder, for question 6 (skipped without it)")
    p.add_argument("--blob-share", type=float, default=0.1,
                   help="the least share of a box a moving blob needs to count (question 6)")
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
    tops, speeds, tracked_iou = {}, {}, {}
    for name, split in splits.items():
        res: dict[str, object] = {"test cubes": int(len(split.frame))}
        speed = speeds[name] = cube_motion(split.flow)  # once per split: every question reads these speeds
        for tracker in ("iou", "iou+gap", "iou+gap+velocity"):
            tracked = tracked_speed(split, speed, tracker, args.gap)
            top = frame_scores(split.frame, tracked, split.n_frames)
            res[f"micro AUROC, box speed, track mean ({tracker}; test labels, information only)"] = round(
                float(evaluate(top, labels, bounds)["micro_auroc"]), 4)
            if tracker == "iou":
                tops[name], tracked_iou[name] = top, tracked
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
    doc["one side each (question 7; test labels, information only)"] = {
        "micro AUROC, ours on the normal frames, the reference on the anomalous ones": round(float(evaluate(
            np.where(labels == 1, tops["reference"], tops["ours"]), labels, bounds)["micro_auroc"]), 4),
        "micro AUROC, the reference on the normal frames, ours on the anomalous ones": round(float(evaluate(
            np.where(labels == 1, tops["ours"], tops["reference"]), labels, bounds)["micro_auroc"]), 4)}
    doc["how ours cover the reference's fastest box where only the reference lifts the frame"] = cover_kinds(
        splits, tracked_iou, tops, labels, args.slow)
    if args.root:
        doc["boxes split by their moving blobs (question 6)"] = {
            name: split_study(args.root, split, speeds[name], labels, bounds, args.blob_share)
            for name, split in splits.items()}
    write_study(args.out, doc, "ped2_box_gap.py", argv, t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
