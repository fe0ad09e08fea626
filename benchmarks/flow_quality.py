"""Which optical flow explains the *training* footage's objects best, and what it costs (issue 18, step 4).

    python benchmarks/flow_quality.py --root ../shared/data/ped2 --work W --out OUT.json

(W = a work directory prepared on the same root: its training boxes say where the objects are.) No model, no
label, no test clip: for every ``--every``-th frame pair of every training clip, each flow method's

* **warping error** inside the frame's object boxes: mean |I_t(x) - I_t+1(x + f(x))| over the boxes' pixels
  (grey levels 0-255), the brightness-constancy residual the flow leaves (lower: the flow accounts for more
  of what moved); beside it, the same with zero flow (the residual there is to explain);
* **forward-backward disagreement** inside the boxes: mean |f(x) + b(x + f(x))| px, with ``b`` the flow from
  I_t+1 back to I_t (lower: more self-consistent; zero flow scores 0, so it is read beside the warping
  error, never alone);
* **seconds per frame pair** on this machine, the methods interleaved pair by pair so that a noisy machine
  slows them alike (read as ratios).

The flow methods are those of :class:`statevad.flow.FlowEstimator`, run as ``statevad prepare`` runs them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ped2 import write_study  # noqa: E402


def box_mask(shape_hw: tuple[int, int], boxes: np.ndarray) -> np.ndarray:
    """Pixels inside any of ``boxes``: the pixels the cubes crop (:func:`statevad.cubes.box_slices`)."""
    from statevad.cubes import box_slices

    mask = np.zeros(shape_hw, bool)
    for b in np.asarray(boxes, np.float64).reshape(-1, 4):
        mask[box_slices(b, *shape_hw)] = True
    return mask


def sample_at(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``image`` (H, W[, C]) read at x + flow(x), bilinear, border replicated."""
    h, w = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(image, gx + flow[..., 0], gy + flow[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


def pair_errors(g0: np.ndarray, g1: np.ndarray, fw: np.ndarray, bw: np.ndarray,
                mask: np.ndarray) -> tuple[float, float]:
    """(warping error, forward-backward disagreement) of one frame pair inside ``mask``."""
    warped = sample_at(g1.astype(np.float32), fw)
    photometric = np.abs(g0.astype(np.float32) - warped)[mask].mean()
    back = sample_at(bw, fw)
    disagreement = np.sqrt(((fw + back) ** 2).sum(-1))[mask].mean()
    return float(photometric), float(disagreement)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="dataset root (its training clips are read)")
    p.add_argument("--work", required=True, help="work directory prepared on --root (its training boxes)")
    p.add_argument("--methods", default="dis,deepflow,farneback", help="comma list of flow methods")
    p.add_argument("--every", type=int, default=10, help="use every N-th frame pair of each training clip")
    p.add_argument("--out", required=True, help="results JSON")
    args = p.parse_args(argv)

    from statevad.config import FlowConfig
    from statevad.datasets import load_dataset
    from statevad.flow import FlowEstimator
    from statevad.workdir import open_split

    t0 = time.perf_counter()
    methods = [m for m in args.methods.split(",") if m]
    estimators = {m: FlowEstimator(FlowConfig(method=m)) for m in methods}
    train = open_split(args.work, "train")
    frame, box = np.asarray(train.frame), np.asarray(train.box)
    clips = load_dataset(args.root).train
    sums = {m: {"warp": [], "fb": [], "seconds": []} for m in methods}
    zero_warp: list[float] = []
    pairs = 0
    for clip in clips:
        frames = clip.read()
        grey = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames]
        for t in range(0, len(frames) - 1, args.every):
            mask = box_mask(grey[t].shape, box[frame == clip.start + t])
            if not mask.any():
                continue
            pairs += 1
            zero = np.zeros((*grey[t].shape, 2), np.float32)
            zero_warp.append(pair_errors(grey[t], grey[t + 1], zero, zero, mask)[0])
            for m, est in estimators.items():  # interleaved: every method on the same pair in turn
                t1 = time.perf_counter()
                fw = est(frames[t], frames[t + 1])
                sums[m]["seconds"].append(time.perf_counter() - t1)
                bw = est(frames[t + 1], frames[t])
                warp, fb = pair_errors(grey[t], grey[t + 1], fw, bw, mask)
                sums[m]["warp"].append(warp)
                sums[m]["fb"].append(fb)
        print(f"clip {clip.name}: {pairs} pairs so far", file=sys.stderr)
    base = methods[0]
    results: dict[str, object] = {
        "warping error with zero flow (grey levels, in boxes)": round(float(np.mean(zero_warp)), 3),
        "methods": {m: {"warping error (grey levels, in boxes)": round(float(np.mean(v["warp"])), 3),
                        "forward-backward disagreement (px, in boxes)": round(float(np.mean(v["fb"])), 4),
                        "seconds per frame pair (median)": round(float(np.median(v["seconds"])), 4)}
                    for m, v in sums.items()},
        f"seconds per frame pair relative to {base} (median of the pairs' ratios)": {
            m: round(float(np.median(np.asarray(v["seconds"]) / np.asarray(sums[base]["seconds"]))), 2)
            for m, v in sums.items()},
    }
    doc = {"root": args.root, "work": args.work, "split": "train", "every": args.every, "pairs": pairs,
           "results": results}
    write_study(args.out, doc, "flow_quality.py", argv, t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
