"""Two cues the box speed does not hold: the frame's other objects, and the box's shape (issue 18;
docs/ANALYSIS.md 16).

    python benchmarks/ped2_shape_context.py --work W --out OUT.json

(W = a prepared Ped2 work directory; no model.) Every object's box speed
(:func:`statevad.tensors.cube_motion`) and every score below is averaged along the object's IoU track as the
ped2 preset scores it (10 frames); the frame score is the max over its objects. The shares, weights and
scales are those of a first look at these cues (a scratch run, which this script reproduces and keeps):

1. **context**: the fastest object less a share (1/4, 1/2, 1) of the frame's median object speed, and the
   ratio to it (the median over the whole test set where a frame holds fewer than 3 objects): Ped2's test
   days are brisker than its training days (section 13), so is an object fast *for its crowd*?
2. **shape**: the box's log aspect ratio log(w / h), z-scored on the selection's held-out training clips,
   alone and added to the z-scored speed (weights 1 and 1/2): the published cubes squeeze every box to
   32x32, so the network never sees that a cyclist's box is wider than a walker's;
3. **appearance with shape**: the package's appearance term (statevad.appearance: kNN over the detector's 80
   class scores, z-scored on held-out training clips) with the log aspect ratio appended as one more
   feature (scaled by 1/2 and 1), alone and added to the z-scored speed.

The test labels are read only to compute the AUROCs, which are information: nothing here sets a default
(``"chosen_on_test_labels": []``).
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
CONTEXT_SHARES = (0.25, 0.5, 1.0)
MIN_OBJECTS = 3  # a frame's median speed needs this many objects, else the test set's median stands in
SHAPE_WEIGHTS = (1.0, 0.5)
SHAPE_SCALES = (0.5, 1.0)  # of the log aspect ratio appended to the 80 class scores
SEED = 5  # the appearance bank's subsample (statevad.appearance.fit_appearance)


def log_aspect(box: np.ndarray) -> np.ndarray:
    """log(w / h) of boxes (n, 4) in the +1 pixel convention of spec 3.1."""
    box = np.asarray(box, np.float64).reshape(-1, 4)
    return np.log((box[:, 2] - box[:, 0] + 1) / (box[:, 3] - box[:, 1] + 1))


def described(classes: np.ndarray, aspect: np.ndarray, scale: float) -> np.ndarray:
    """Class descriptions (n, 80), with ``scale`` x the log aspect ratio appended when ``scale`` is set."""
    classes = np.asarray(classes, np.float32)
    return np.concatenate([classes, scale * aspect[:, None]], 1).astype(np.float32) if scale else classes


def frame_median(values: np.ndarray, frame: np.ndarray, n_frames: int, min_objects: int) -> np.ndarray:
    """Each frame's median of ``values`` over its objects; the median over all frames that have
    ``min_objects`` where a frame has fewer."""
    order = np.argsort(frame, kind="stable")
    f, v = np.asarray(frame)[order], np.asarray(values)[order]
    lo, hi = np.searchsorted(f, np.arange(n_frames)), np.searchsorted(f, np.arange(n_frames), "right")
    med = np.array([np.median(v[a:b]) if b - a >= min_objects else np.nan
                    for a, b in zip(lo, hi, strict=True)])
    return np.where(np.isnan(med), np.nanmedian(med), med)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True, help="prepared Ped2 work directory")
    p.add_argument("--out", required=True, help="results JSON")
    args = p.parse_args(argv)

    from statevad.appearance import fit_appearance
    from statevad.metrics import clip_bounds, evaluate
    from statevad.scoring import frame_scores
    from statevad.selection import holdout_mask
    from statevad.tensors import cube_motion
    from statevad.tracks import split_track_mean
    from statevad.workdir import open_split

    t0 = time.perf_counter()
    test, train = open_split(args.work, "test"), open_split(args.work, "train")
    if test.classes is None or train.classes is None:
        raise SystemExit(f"{args.work} has no class descriptions: prepare it with detector boxes")
    labels, bounds = np.asarray(test.labels), clip_bounds(test.clips)
    clip, frame, box = np.asarray(test.clip), np.asarray(test.frame), np.asarray(test.box)
    held = holdout_mask(np.asarray(train.clip), np.asarray(train.frame))

    def tracked(v: np.ndarray) -> np.ndarray:
        return split_track_mean(v, clip, frame, box, TRACK)

    def micro(frame_score: np.ndarray) -> float:
        return round(float(evaluate(frame_score, labels, bounds)["micro_auroc"]), 4)

    def top(cube_score: np.ndarray) -> np.ndarray:
        return frame_scores(frame, tracked(cube_score), test.n_frames)

    def held_z(train_v: np.ndarray, test_v: np.ndarray) -> np.ndarray:
        return (test_v - train_v[held].mean()) / train_v[held].std()

    speed_tr, speed = cube_motion(train.flow), cube_motion(test.flow)
    z_speed = held_z(speed_tr, speed)
    fastest = top(speed)
    median = frame_median(tracked(speed), frame, test.n_frames, MIN_OBJECTS)
    res: dict[str, object] = {"box speed (the baseline)": micro(fastest)}
    res["1. context"] = {
        **{f"fastest - {a:g} x the frame's median": micro(fastest - a * median) for a in CONTEXT_SHARES},
        "fastest / the frame's median": micro(fastest / np.maximum(median, 1e-3)),
        "the frame's median alone": micro(median)}
    aspect_tr, aspect = log_aspect(train.box), log_aspect(test.box)
    z_aspect = held_z(aspect_tr, aspect)
    res["2. shape"] = {
        "log aspect, percentiles 50/90/99 (training / test cubes)": [
            np.percentile(aspect_tr, (50, 90, 99)).round(3).tolist(),
            np.percentile(aspect, (50, 90, 99)).round(3).tolist()],
        "log aspect alone": micro(top(z_aspect)),
        **{f"speed + {w:g} x log aspect (z)": micro(top(z_speed + w * z_aspect)) for w in SHAPE_WEIGHTS}}
    appearance: dict[str, float] = {}
    for scale in (0.0, *SHAPE_SCALES):
        fitted, why = fit_appearance(described(train.classes, aspect_tr, scale), np.asarray(train.clip),
                                     np.asarray(train.frame), seed=SEED)
        if fitted is None:
            raise SystemExit(f"no appearance model: {why}")
        z_app = fitted.zscore(described(test.classes, aspect, scale))
        name = "class scores" if not scale else f"class scores + {scale:g} x log aspect"
        appearance[f"{name}: alone"] = micro(top(z_app))
        appearance[f"{name}: speed + appearance (z)"] = micro(top(z_speed + z_app))
    res["3. appearance with shape"] = appearance
    doc = {"work": args.work, "track_frames": TRACK, "min_objects": MIN_OBJECTS, "appearance_seed": SEED,
           "n_test_cubes": int(len(frame)), "results": res}
    write_study(args.out, doc, "ped2_shape_context.py", argv, t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
