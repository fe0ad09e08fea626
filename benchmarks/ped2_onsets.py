"""How many lost frame pairs lie next to the annotation's onsets and offsets (issue 18; ANALYSIS.md 19).

    python benchmarks/ped2_onsets.py --root ../shared/data/ped2 --frames RUN-frames.npz [...] \\
        --work W [--work ...] --out OUT.json [--figure PNG]

Sections 13 and 17 split the frame AUROC's lost pairs by clip and read the largest share, clip 02's normal
frames, as "busy, brisk test days". This study asks a narrower question: how many of the lost pairs hold a
normal frame *next to* an annotated anomalous interval — within ``--window`` frames (half a second at Ped2's
10 frames/s) before its first frame or after its last — where an anomalous object may already (or still) be
in view while the annotation says normal.

1. For each ``--frames`` file (the per-frame scores that ``benchmarks/ped2.py`` writes beside its results
   JSON) and each score in it: the micro AUROC, its lost pairs (1 - AUROC, the share of (anomalous, normal)
   frame pairs ranked the wrong way, ties half) split into those whose normal frame lies before an onset,
   after an offset, or elsewhere, the near frames' share clip by clip, and the clips of the anomalous frames
   that the other normal frames outscore; and the AUROC with the near frames left out — *information only*:
   it is not a protocol and not a headline.
2. For each ``--work`` directory (no model; the box speed of every cube averaged along its IoU track, as the
   ped2 preset scores it): in every near normal frame, whether the frame's fastest object is the object that
   the annotation marks a few frames later (or marked a few frames before) — its box touches a connected
   region of the nearest anomalous frame's pixel mask, grown by ``--reach`` pixels per frame of distance —
   and how long that object's track had been followed. Reported with the lost pairs those frames hold.
3. ``--figure``: for each onset or offset whose near frames lose pairs with the first work directory's box
   speed, crops of those frames around the fastest object's box (red) and of the nearest annotated frame
   with its pixel mask's outline (green).

The labels only split and score frames; nothing here sets a default (``"chosen_on_test_labels": []``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ped2 import write_study  # noqa: E402
from ped2_ceiling import ranked_wrong  # noqa: E402

TRACK = 10  # the ped2 preset's score.track_frames
WINDOW = 5  # frames: half a second at Ped2's 10 frames/s
REACH = 3.0  # px per frame of distance: about the fastest Ped2 objects' speed (the cyclists' box speed, ~3)


def near_boundaries(labels: np.ndarray, starts: list[int], lengths: list[int], window: int) -> np.ndarray:
    """Per frame: 0 = elsewhere, 1 = a normal frame within ``window`` frames before an annotated onset,
    2 = a normal frame within ``window`` frames after an annotated offset (same clip; 1 wins a tie)."""
    kind = np.zeros(len(labels), np.int8)
    for a, n in zip(starts, lengths, strict=True):
        v = labels[a:a + n]
        for i in np.flatnonzero(np.diff(v) != 0):  # v[i] != v[i + 1]
            if v[i] == 0:  # onset at i + 1: the normal frames i, i - 1, ... before it
                js, tag = range(i, max(-1, i - window), -1), 1
            else:  # offset at i: the normal frames i + 1, i + 2, ... after it
                js, tag = range(i + 1, min(n, i + 1 + window)), 2
            for j in js:
                if v[j] == 0 and kind[a + j] == 0:
                    kind[a + j] = tag
    return kind


def lost_pairs(frames: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """For each normal frame: the anomalous frames scored below it (ties half), divided by all pairs; the
    sum over normal frames is 1 - AUROC."""
    pos, neg = frames[labels == 1], frames[labels == 0]
    return ranked_wrong(pos, neg)[1] / (len(pos) * len(neg))


def labelled_frames(root: str | Path, window: int = WINDOW, work_labels: np.ndarray | None = None,
                    ds=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ped2's test frame labels, each frame's place (:func:`near_boundaries`) and each frame's clip name; with
    ``work_labels`` (a work directory's copy) stops unless they are the dataset's. ``ds``: ``root`` already
    loaded (:func:`statevad.datasets.load_dataset`), for a caller that needs it too."""
    from statevad.datasets import load_dataset

    ds = ds or load_dataset(root)
    labels = np.asarray(ds.labels("test")).astype(int)
    if work_labels is not None and not np.array_equal(np.asarray(work_labels).astype(int), labels):
        raise SystemExit(f"the work directory's test labels are not {root}'s")
    lengths = [c.n_frames for c in ds.test]
    kind = near_boundaries(labels, [c.start for c in ds.test], lengths, window)
    return labels, kind, np.repeat([c.name for c in ds.test], lengths)


def split_losses(frames: np.ndarray, labels: np.ndarray, kind: np.ndarray,
                 clip_names: np.ndarray | None = None) -> dict[str, object]:
    """The lost pairs split by where their normal frame lies; with ``clip_names`` (one per frame) also the
    near frames' share clip by clip, and the "elsewhere" share split by the clip of the anomalous frame."""
    from sklearn.metrics import roc_auc_score

    lost = lost_pairs(frames, labels)
    k = kind[labels == 0]
    keep = kind == 0
    out: dict[str, object] = {
        "micro": round(float(roc_auc_score(labels, frames)), 4),
        "lost": round(float(lost.sum()), 4),
        "lost, normal frames before an onset": round(float(lost[k == 1].sum()), 4),
        "lost, normal frames after an offset": round(float(lost[k == 2].sum()), 4),
        "lost, other normal frames": round(float(lost[k == 0].sum()), 4),
        "micro without the near frames (information only)":
            round(float(roc_auc_score(labels[keep], frames[keep])), 4)}
    if clip_names is not None:
        names = np.asarray(clip_names)[labels == 0]
        out["lost, near frames by clip"] = {str(c): round(float(lost[(k > 0) & (names == c)].sum()), 4)
                                            for c in np.unique(names[k > 0])}
        # the other side of the "elsewhere" pairs: which anomalous frames the far normal frames outscore
        pos, pos_names = frames[labels == 1], np.asarray(clip_names)[labels == 1]
        above = ranked_wrong(pos, frames[(labels == 0) & keep])[0] / (len(pos) * (labels == 0).sum())
        out["lost, other normal frames, by the anomalous frame's clip"] = {
            str(c): round(float(above[pos_names == c].sum()), 4) for c in np.unique(pos_names)
            if above[pos_names == c].sum() > 0}
    return out


def mask_regions(mask: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Bounding boxes (x1, y1, x2, y2) of a pixel mask's 8-connected regions."""
    from scipy import ndimage

    lab, _ = ndimage.label(mask, structure=np.ones((3, 3), bool))
    return [(s[1].start, s[0].start, s[1].stop, s[0].stop)
            for s in ndimage.find_objects(lab) if s is not None]


def touches(box: np.ndarray, region: tuple[int, int, int, int], grow: float) -> bool:
    x1, y1, x2, y2 = region
    return bool(box[0] <= x2 + grow and box[2] >= x1 - grow and box[1] <= y2 + grow and box[3] >= y1 - grow)


def nearest_annotated(f: int, labels: np.ndarray, start: int, n: int) -> int:
    """The clip's anomalous frame nearest to frame ``f`` (global indices)."""
    idx = start + np.flatnonzero(labels[start:start + n])
    return int(idx[np.argmin(np.abs(idx - f))])


def top_objects(work: str) -> dict[str, np.ndarray]:
    """Per test frame: the fastest object's cube index by the tracked box speed (-1: no object), the frame
    scores, and the age of that object's track in frames (how long it had been followed)."""
    from statevad.scoring import frame_scores
    from statevad.tensors import cube_motion
    from statevad.tracks import causal_track_mean, clip_track_ids
    from statevad.workdir import open_split

    test = open_split(work, "test")
    frame, clip, box = np.asarray(test.frame), np.asarray(test.clip), np.asarray(test.box, np.float32)
    raw_speed = cube_motion(test.flow)
    # the package's split_track_mean, with each clip's track ids kept for the tracks' ages
    speed, age = np.empty(len(frame)), np.empty(len(frame), np.int64)
    for c in np.unique(clip):
        idx = np.flatnonzero(clip == c)
        ids = clip_track_ids(frame[idx], box[idx])
        speed[idx] = causal_track_mean(raw_speed[idx], frame[idx], ids, TRACK)
        tracks, of = np.unique(ids, return_inverse=True)
        first = np.full(len(tracks), np.iinfo(np.int64).max)
        np.minimum.at(first, of, frame[idx])
        age[idx] = frame[idx] - first[of] + 1
    top = np.full(test.n_frames, -1, np.int64)
    order = np.lexsort((speed, frame))  # by frame, fastest last
    last = np.r_[np.flatnonzero(np.diff(frame[order])), len(order) - 1]
    top[frame[order[last]]] = order[last]
    return {"top": top, "frames": frame_scores(frame, speed, test.n_frames), "box": box, "age": age}


def attribute(work: str, labels: np.ndarray, kind: np.ndarray, starts: list[int], lengths: list[int],
              masks: list[np.ndarray], reach: float) -> tuple[dict[str, object], dict[str, np.ndarray]]:
    """Section 2 of the docstring for one work directory."""
    t = top_objects(work)
    lost = np.zeros(len(labels))
    lost[labels == 0] = lost_pairs(t["frames"], labels)
    clip_of = np.repeat(np.arange(len(starts)), lengths)
    rows, in_view = [], np.zeros(len(labels), bool)
    for f in np.flatnonzero(kind):
        c = int(clip_of[f])
        j = int(t["top"][f])
        g = nearest_annotated(int(f), labels, starts[c], lengths[c])
        is_it = j >= 0 and any(touches(t["box"][j], r, reach * abs(g - int(f)))
                               for r in mask_regions(masks[c][g - starts[c]]))
        in_view[f] = is_it
        rows.append({"clip": c + 1, "frame": int(f - starts[c]), "near": "before onset" if kind[f] == 1
                     else "after offset", "nearest annotated frame": int(g - starts[c]),
                     "box speed (track mean)": round(float(t["frames"][f]), 3),
                     "fastest object": [round(float(x), 1) for x in t["box"][j]] if j >= 0 else None,
                     "its track's age (frames)": int(t["age"][j]) if j >= 0 else 0,
                     "is the annotated object": bool(is_it), "lost pairs": round(float(lost[f]), 5)})
    near = kind > 0
    out = {"near normal frames": int(near.sum()),
           "of them, the fastest object is the annotated object": int(in_view.sum()),
           "box speed: lost pairs, all": round(float(lost.sum()), 4),
           "box speed: lost pairs, near frames": round(float(lost[near].sum()), 4),
           "box speed: lost pairs, near frames whose fastest object is the annotated object":
               round(float(lost[in_view].sum()), 4),
           "frames": rows}
    return out, {**t, "lost": lost}


def figure(path: str, clips, kind: np.ndarray, labels: np.ndarray, tops: dict[str, np.ndarray],
           masks: list[np.ndarray], size: int = 96) -> int:
    """Crops of the near frames that lose pairs (red: the fastest object's box) and of the nearest
    annotated frame (green: its pixel mask's outline), one row per onset or offset."""
    import cv2

    starts = [c.start for c in clips]
    clip_of = np.repeat(np.arange(len(clips)), [c.n_frames for c in clips])
    groups: dict[tuple[int, int], list[int]] = {}
    for f in np.flatnonzero((kind > 0) & (tops["lost"] > 1e-4)):
        c = int(clip_of[f])
        g = nearest_annotated(int(f), labels, starts[c], clips[c].n_frames)
        groups.setdefault((c, g), []).append(int(f))
    rows = []
    for (c, g), fs in sorted(groups.items()):
        video = clips[c].read()
        fs = sorted(fs)
        boxes = tops["box"][tops["top"][fs]]
        cx, cy = (boxes[:, 0] + boxes[:, 2]).mean() / 2, (boxes[:, 1] + boxes[:, 3]).mean() / 2
        h, w = video.shape[1:3]
        x0 = int(np.clip(cx - size / 2, 0, w - size))
        y0 = int(np.clip(cy - size / 2, 0, h - size))
        tiles = []
        for f in [*fs, g] if g > fs[-1] else [g, *fs]:
            img = video[f - starts[c]].copy()
            if f == g:
                contours, _ = cv2.findContours(masks[c][g - starts[c]].astype(np.uint8), cv2.RETR_EXTERNAL,
                                               cv2.CHAIN_APPROX_SIMPLE)
                cv2.drawContours(img, contours, -1, (0, 200, 0), 1)
            else:
                b = np.round(tops["box"][tops["top"][f]]).astype(int)
                cv2.rectangle(img, (b[0], b[1]), (b[2], b[3]), (0, 0, 255), 1)
            tile = cv2.resize(img[y0:y0 + size, x0:x0 + size], (2 * size, 2 * size),
                              interpolation=cv2.INTER_NEAREST)
            label = f"{clips[c].name}:{f - starts[c]}" + (" annotated" if f == g else " normal")
            cv2.putText(tile, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
            tiles.append(tile)
        rows.append(np.hstack(tiles))
    if not rows:
        return 0
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0))) for r in rows]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(path, np.vstack(rows))
    return len(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="the Ped2 dataset (labels, pixel masks, videos)")
    p.add_argument("--frames", action="extend", nargs="+", default=[],
                   help="runs' per-frame scores (one or more; repeatable)")
    p.add_argument("--work", action="append", default=[], help="a prepared work directory (repeatable)")
    p.add_argument("--window", type=int, default=WINDOW, help="frames before an onset / after an offset")
    p.add_argument("--reach", type=float, default=REACH, help="px a frame an object may move (section 2)")
    p.add_argument("--figure", help="image of the onsets and offsets that lose pairs (section 3)")
    p.add_argument("--out", required=True, help="results JSON")
    args = p.parse_args(argv)

    from statevad.datasets import load_dataset

    t0 = time.perf_counter()
    ds = load_dataset(args.root)
    labels, kind, clip_names = labelled_frames(args.root, args.window, ds=ds)
    starts, lengths = [c.start for c in ds.test], [c.n_frames for c in ds.test]

    results: dict[str, object] = {
        "near normal frames": {"before an onset": int((kind == 1).sum()),
                               "after an offset": int((kind == 2).sum()),
                               "all normal frames": int((labels == 0).sum())}}
    for path in args.frames:
        with np.load(path, allow_pickle=False) as d:
            if not np.array_equal(d["labels"].astype(int), labels):
                raise SystemExit(f"{path}: its labels are not {args.root}'s test labels")
            results[Path(path).name] = {k: split_losses(d[k].astype(np.float64), labels, kind, clip_names)
                                        for k in d.files if k != "labels"}
    masks = [c.pixel_masks() for c in ds.test] if args.work else []
    first = None
    for w in args.work:
        results[w], tops = attribute(w, labels, kind, starts, lengths, masks, args.reach)
        first = first or tops
    if args.figure and first is not None:
        results["figure rows"] = figure(args.figure, ds.test, kind, labels, first, masks)
    doc = {"benchmark": "ped2_onsets", "window": args.window, "reach_px_per_frame": args.reach,
           "track_frames": TRACK, "results": results}
    write_study(args.out, doc, "ped2_onsets.py", argv, t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
