"""How far the learned terms can go on Ped2, and where the lost frame pairs are (issue 18; ANALYSIS.md 13).

    python benchmarks/ped2_ceiling.py --work W --model W/model-seed5.pt [--model ...] --out OUT.json

(W = ``statevad prepare --root ../shared/data/ped2 --work W --jobs 2``.) Each model's terms are computed as
``statevad test`` computes them (its stored epsilon; the z-scores of :func:`ped2_frame_rule.model_terms`),
each object's score is averaged along its track as the package does (``score.track_frames`` 10,
:func:`statevad.tracks.split_track_mean`), and the frame score is the max over the frame's objects. Three
questions, the first two answered with the test labels on purpose:

1. **The ceiling of linear fusion**: the best frame micro AUROC of ``w_raw raw + flow + w_motion motion +
   w_appearance appearance`` over a weight grid, *chosen on the test labels*. If it stays under 0.990, no
   label-free weight rule on these terms can reach the issue's bar: new information is needed, not weights.
   Also the best frame-level Gaussian smoothing on top (non-causal; the published protocol has none).
2. **Where the lost pairs are**: 1 - AUROC is the share of (anomalous frame, normal frame) pairs ranked the
   wrong way; it is split by the clip of the anomalous frame and by the clip of the normal frame, for the
   model's default score and for the box speed averaged the same way.
3. **Why** (no labels needed): each object's box speed, averaged along its track, on the held-out *training*
   clips against the normal test frames' top objects of each clip, to see whether those normal objects are
   in the training footage's tail.

Nothing here sets a default; the ceiling rows are marked as chosen on test labels.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ped2 import write_study  # noqa: E402
from ped2_frame_rule import model_terms  # noqa: E402

TRACK = 10  # the ped2 preset's score.track_frames
W_GRID = (0.0, 0.25, 0.5, 1.0, 2.0)  # w_raw and w_appearance, relative to the flow term's 1
W_MOTION_GRID = (0.0, 0.5, 1.0, 2.0, 4.0)
SIGMAS = (1.0, 2.0, 3.0)  # frame-level Gaussian smoothing, in frames


def ranked_wrong(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each anomalous score in ``pos``: the normal scores above it; for each normal score in ``neg``: the
    anomalous scores below it; ties count half. Each array sums to the misordered pairs."""
    neg_sorted, pos_sorted = np.sort(neg), np.sort(pos)
    lo, hi = np.searchsorted(neg_sorted, pos, "left"), np.searchsorted(neg_sorted, pos, "right")
    above = len(neg) - hi + 0.5 * (hi - lo)
    lo, hi = np.searchsorted(pos_sorted, neg, "left"), np.searchsorted(pos_sorted, neg, "right")
    return above, lo + 0.5 * (hi - lo)


def misordered_by_clip(frames: np.ndarray, labels: np.ndarray, clip_of: np.ndarray, names: list[str]
                       ) -> dict[str, dict[str, float]]:
    """Share of all (anomalous, normal) frame pairs that are ranked the wrong way (ties count half), split
    by the anomalous frame's clip and by the normal frame's clip; each split sums to 1 - AUROC."""
    pos, neg = frames[labels == 1], frames[labels == 0]
    total = len(pos) * len(neg)
    above, below = ranked_wrong(pos, neg)
    cp, cn = clip_of[labels == 1], clip_of[labels == 0]
    return {"by_anomalous_frame_clip": {n: round(float(above[cp == i].sum() / total), 5)
                                        for i, n in enumerate(names) if (cp == i).any()},
            "by_normal_frame_clip": {n: round(float(below[cn == i].sum() / total), 5)
                                     for i, n in enumerate(names) if (cn == i).any()},
            "total": round(float(above.sum() / total), 5)}


def fastest_per_frame(speed: np.ndarray, frame_key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the largest value of each frame, the number of objects of each frame) over the frames with objects;
    ``frame_key`` tells frames apart (clip and frame)."""
    keys, inv = np.unique(frame_key, return_inverse=True)
    top = np.full(len(keys), -np.inf)
    np.maximum.at(top, inv, speed)
    return top, np.bincount(inv, minlength=len(keys))


def speed_context(test, train, held: np.ndarray, clip_of: np.ndarray, labels: np.ndarray,
                  names: list[str]) -> dict[str, object]:
    """Question 3 like for like: each frame's fastest object (box speed averaged along its track, as the
    package averages) and its number of objects, on the held-out training clips and on the test clips'
    normal frames; the test clips' anomalous frames beside them."""
    from statevad.tensors import cube_motion
    from statevad.tracks import split_track_mean

    pct = (10, 50, 90, 99)
    out: dict[str, object] = {"percentiles": list(pct)}
    h_clip, h_frame = np.asarray(train.clip)[held], np.asarray(train.frame)[held]
    sp_h = split_track_mean(cube_motion(np.asarray(train.flow)[held]), h_clip, h_frame,
                            np.asarray(train.box)[held], TRACK)
    top_h, n_h = fastest_per_frame(sp_h, h_clip.astype(np.int64) * 1_000_000 + h_frame)
    out["held-out training frames: fastest object"] = [round(float(x), 3) for x in np.percentile(top_h, pct)]
    out["held-out training frames: objects per frame (mean)"] = round(float(n_h.mean()), 2)
    frame = np.asarray(test.frame)
    sp_t = split_track_mean(cube_motion(test.flow), np.asarray(test.clip), frame, np.asarray(test.box), TRACK)
    top_t, n_t = fastest_per_frame(sp_t, frame)
    has = np.unique(frame)
    for lab, tag in ((0, "normal"), (1, "anomalous")):
        sel = labels[has] == lab
        top = np.percentile(top_t[sel], pct)
        out[f"test {tag} frames: fastest object"] = [round(float(x), 3) for x in top]
        out[f"test {tag} frames: objects per frame (mean)"] = round(float(n_t[sel].mean()), 2)
    out["test frames without objects"] = int(len(labels) - len(has))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True, help="prepared Ped2 work directory")
    p.add_argument("--model", action="append", default=[],
                   help="a model trained on --work (repeatable); none: only the speed context (question 3)")
    p.add_argument("--out", required=True, help="results JSON")
    args = p.parse_args(argv)

    from scipy.ndimage import gaussian_filter1d
    from sklearn.metrics import roc_auc_score

    from statevad.scoring import frame_scores
    from statevad.selection import holdout_mask
    from statevad.tracks import split_track_mean
    from statevad.workdir import open_split

    t0 = time.perf_counter()
    work = Path(args.work)
    test, train = open_split(work, "test"), open_split(work, "train")
    names = [str(c["name"]) for c in test.clips]
    starts = [int(c["start"]) for c in test.clips]
    lengths = [int(c["n_frames"]) for c in test.clips]
    clip_of = np.repeat(np.arange(len(names)), lengths)
    labels = np.asarray(test.labels).astype(int)
    held = np.flatnonzero(holdout_mask(np.asarray(train.clip), np.asarray(train.frame)))
    frame, clip, box = np.asarray(test.frame), np.asarray(test.clip), np.asarray(test.box)

    def tracked(v: np.ndarray) -> np.ndarray:
        return split_track_mean(v, clip, frame, box, TRACK)

    def frames_of(cube_score: np.ndarray) -> np.ndarray:
        return frame_scores(frame, cube_score, test.n_frames)

    def micro(f: np.ndarray) -> float:
        return round(float(roc_auc_score(labels, f)), 4)

    def smoothed(f: np.ndarray, sigma: float) -> np.ndarray:
        parts = [gaussian_filter1d(f[a:a + n], sigma) for a, n in zip(starts, lengths, strict=True)]
        return np.concatenate(parts)

    results: dict[str, object] = {}
    for m in args.model:
        print(f"{m} ...", file=sys.stderr, flush=True)
        (z_te, speed_te), (_, speed_he), info = model_terms(Path(m), test, held, train)
        w = {k: v for k, v in info["weights"].items() if k in z_te}
        zt = {k: tracked(v) for k, v in z_te.items()}
        default = frames_of(sum(w[k] * zt[k] for k in w))
        sp_t = tracked(speed_te)
        box_speed = frames_of(sp_t)

        best, grid = (0.0, {}), []
        for wr, wm, wa in itertools.product(W_GRID, W_MOTION_GRID, W_GRID if "appearance" in zt else (0.0,)):
            ws = {"raw": wr, "flow": 1.0, "motion": wm, "appearance": wa}
            a = micro(frames_of(sum(ws[k] * zt[k] for k in zt)))
            grid.append(a)
            if a > best[0]:
                best = (a, ws)
        ceil_frames = frames_of(sum(best[1][k] * zt[k] for k in zt))
        smooth_default = {str(s): micro(smoothed(default, s)) for s in SIGMAS}
        smooth_ceiling = {str(s): micro(smoothed(ceil_frames, s)) for s in SIGMAS}

        # question 3: the top object of each normal test frame against the held-out training objects
        speed_h = split_track_mean(speed_he, np.asarray(train.clip)[held], np.asarray(train.frame)[held],
                                   np.asarray(train.box)[held], TRACK)
        top_speed = np.full(test.n_frames, np.nan)
        top_speed[np.unique(frame)] = fastest_per_frame(sp_t, frame)[0]
        q = (50, 90, 99, 99.9)
        per_clip_speed = {}
        for i, n in enumerate(names):
            for lab, tag in ((0, "normal"), (1, "anomalous")):
                v = top_speed[(clip_of == i) & (labels == lab)]
                v = v[np.isfinite(v)]
                if len(v):
                    pct = np.percentile(v, (10, 50, 90))
                    per_clip_speed[f"{n} {tag}"] = [round(float(x), 3) for x in pct]
        results[m] = {
            "settings": info["settings"],
            "chosen_on_test_labels": ["the ceiling rows' weights and smoothing (information only)"],
            "model default, track mean 10 (label-free)": micro(default),
            "box speed, track mean 10 (no learning)": micro(box_speed),
            "ceiling: best linear weights on the test labels": {"micro": best[0], "weights": best[1],
                                                               "grid_points": len(grid)},
            "frame Gaussian on the model default (sigma: micro)": smooth_default,
            "frame Gaussian on the ceiling weights (sigma: micro)": smooth_ceiling,
            "lost pairs, model default": misordered_by_clip(default, labels, clip_of, names),
            "lost pairs, box speed": misordered_by_clip(box_speed, labels, clip_of, names),
            "box speed (track mean 10), held-out training objects, percentiles "
            + "/".join(str(x) for x in q): [round(float(x), 3) for x in np.percentile(speed_h, q)],
            "box speed (track mean 10) of each frame's fastest object, per clip, percentiles 10/50/90":
                per_clip_speed,
        }
        r = results[m]
        print(f"  default {r['model default, track mean 10 (label-free)']} box "
              f"{r['box speed, track mean 10 (no learning)']} ceiling {best[0]} {best[1]} "
              f"gauss {smooth_default} / {smooth_ceiling}", file=sys.stderr, flush=True)

    doc = {"benchmark": "ped2_ceiling", "work": str(work), "models": args.model, "track_frames": TRACK,
           "speed context (no model, no labels but the normal/anomalous split of the test frames)":
               speed_context(test, train, held, clip_of, labels, names),
           "chosen_on_test_labels": ["ceiling weights and smoothing sigma, per model (information only)"],
           "results": results}
    write_study(args.out, doc, "ped2_ceiling.py", argv, t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
