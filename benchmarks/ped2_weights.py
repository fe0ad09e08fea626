"""Fusion-weight sweep on Ped2 for a trained model: micro AUROC of w_raw * z_raw + w_flow * z_flow, and of
z_raw + z_flow + w_motion * z_motion (the motion term, ``statevad.scoring.cube_motion``).

    python benchmarks/ped2_weights.py --work /tmp/w_b --model /tmp/w_b/model-cpu-all-e6.pt --epsilon 0.002 \
        --out benchmarks/results/ped2-weights-all-e6.json
    python benchmarks/ped2_weights.py --work /tmp/w_e --model /tmp/w_e/model-cpu-seed1.pt --w-raw "" \
        --w-motion 0,0.5,1,2,4 --out benchmarks/results/ped2-motion-seed1.json

A model file from before the motion term has no motion statistics: they are then computed here from the work
dir's training cubes, the same subsample (max_cubes, seed) that its training used.

One perturbed scoring pass of the prepared test split (``benchmarks/ped2.py`` leaves it in its work dir),
then every ratio w_raw : w_flow is evaluated on the same per-cube errors (AUROC sees only their ratio).
Any weight picked from this table is chosen on the test set, as the published per-dataset weights were; the
table exists to show how much that choice is worth, not to pick a headline.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True, help="work dir prepared for Ped2 (test split)")
    p.add_argument("--model", required=True, help="model file written by statevad train / benchmarks/ped2.py")
    p.add_argument("--epsilon", type=float, default=None, help="default: the model preset's epsilon")
    p.add_argument("--w-raw", default="0,0.1,0.2,0.3,0.5,0.7,1,1.5,2,3",
                   help="comma list of w_raw values (w_flow = 1)")
    p.add_argument("--w-motion", default="", help="comma list of motion-term weights (w_raw = w_flow = 1)")
    p.add_argument("--out", required=True, help="results JSON")
    args = p.parse_args(argv)

    from statevad.checkpoint import load_checkpoint
    from statevad.files import atomic_write_json
    from statevad.metrics import clip_bounds, evaluate
    from statevad.scoring import MOTION_KEYS, frame_scores, fuse, score_split
    from statevad.tensors import cube_motion
    from statevad.training import select_cubes
    from statevad.workdir import open_split

    model, ckpt = load_checkpoint(args.model, device="cpu")
    test = open_split(args.work, "test")
    eps = ckpt.preset.score.epsilon if args.epsilon is None else args.epsilon
    sc = dataclasses.replace(ckpt.preset.score, epsilon=eps)
    t0 = time.perf_counter()
    e_raw, e_flow = score_split(model, test, sc, progress=True)
    seconds = time.perf_counter() - t0
    bounds = clip_bounds(test.clips)
    stats = dict(ckpt.stats)
    motion_stats = "checkpoint"
    motion = cube_motion(test.flow)
    if not all(k in stats for k in MOTION_KEYS):
        train = open_split(args.work, "train")
        tr = ckpt.preset.train
        m = cube_motion(train.flow[select_cubes(len(train.flow), tr.max_cubes, tr.seed)])
        stats.update(motion_mean=float(m.mean()), motion_std=float(m.std(ddof=0)))
        motion_stats = "computed from the work dir's training cubes"
    rows = []
    for w in (float(v) for v in args.w_raw.split(",") if v):
        m = evaluate(frame_scores(test.frame, fuse(e_raw, e_flow, stats, w, 1.0), test.n_frames),
                     test.labels, bounds)
        rows.append({"w_raw": w, "w_flow": 1.0, "w_motion": 0.0, "micro_auroc": m["micro_auroc"],
                     "macro_auroc": m["macro_auroc"]})
        print(f"w_raw {w:4g} : w_flow 1  micro {m['micro_auroc']:.4f}  macro {m['macro_auroc']:.4f}",
              flush=True)
    for w in (float(v) for v in args.w_motion.split(",") if v):
        m = evaluate(frame_scores(test.frame, fuse(e_raw, e_flow, stats, 1.0, 1.0, motion, w), test.n_frames),
                     test.labels, bounds)
        rows.append({"w_raw": 1.0, "w_flow": 1.0, "w_motion": w, "micro_auroc": m["micro_auroc"],
                     "macro_auroc": m["macro_auroc"]})
        print(f"w_motion {w:4g}  micro {m['micro_auroc']:.4f}  macro {m['macro_auroc']:.4f}", flush=True)
    command = "python benchmarks/ped2_weights.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    atomic_write_json(Path(args.out), {"benchmark": "ped2-fusion-weights", "model": str(args.model),
                                       "epsilon": eps, "score_seconds": round(seconds, 1), "rows": rows,
                                       "motion_statistics": motion_stats,
                                       "note": "weights chosen from this table are chosen on the test set",
                                       "command": command})
    return 0


if __name__ == "__main__":
    sys.exit(main())
