"""Learned motion normality on Ped2 vs the no-learning box-speed score (issue 18, study).

    python benchmarks/ped2_motion.py --work /tmp/w_ped2 --out benchmarks/results/ped2-motion-density.json

Fits densities of normal object motion (benchmarks/motion_density.py) on the training cubes of the clips
with index % 8 != 7 and normalises them on the held-out clips 08 and 16. The label-free objective is the
pseudo-anomaly AUROC on the held-out cubes (their flow doubled, negated, mirrored, or taken from another
held-out cube; normal = the unmodified cubes). Test micro/macro AUROC and per-clip wins against the
box-speed score use test labels: they are information, and no variant is chosen by them.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from motion_density import MotionDensity, features_from_stats, fit_normaliser, orientation_stats  # noqa: E402

PSEUDO = ("x2", "neg", "mirror", "swap")
# (name, feature options, density options): the study's representative rows, fixed before this script ran
VARIANTS = [
    ("8-bin mean, px, no position; kNN k=5", dict(hist="mean", agg="cube", norm="px", pos=False),
     dict(kind="knn", k=5)),
    ("8-bin mean, px, no position; GMM K=8", dict(hist="mean", agg="cube", norm="px", pos=False),
     dict(kind="gmm", n_components=8, covariance="full")),
    ("8-bin weighted, /height, position; kNN k=5 conditional",
     dict(hist="weighted", agg="cube", norm="height", pos=True), dict(kind="knn", k=5, conditional=True)),
    ("speed, px; GMM K=8 one-sided", dict(hist="speed", agg="cube", norm="px", pos=False),
     dict(kind="gmm", n_components=8, covariance="full", one_sided=True)),
    ("speed, px, position; GMM K=8 conditional one-sided",
     dict(hist="speed", agg="cube", norm="px", pos=True),
     dict(kind="gmm", n_components=8, covariance="full", conditional=True, one_sided=True)),
    ("mean (u, v), px, position; GMM K=8 conditional", dict(hist="vec", agg="cube", norm="px", pos=True),
     dict(kind="gmm", n_components=8, covariance="full", conditional=True)),
    ("mean (u, v) + speed, px, position; kNN k=10 conditional (label-free pick)",
     dict(hist="vecspeed", agg="cube", norm="px", pos=True), dict(kind="knn", k=10, conditional=True)),
]


def _auroc(neg: np.ndarray, pos: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(np.r_[np.zeros(len(neg)), np.ones(len(pos))], np.r_[neg, pos]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    from statevad.files import atomic_write_json
    from statevad.metrics import clip_bounds, evaluate
    from statevad.scoring import frame_scores
    from statevad.workdir import open_split

    t0 = time.perf_counter()
    tr, te = open_split(args.work, "train"), open_split(args.work, "test")
    hw = (240, 360)
    clip = np.asarray(tr.clip)
    fit, ho = np.flatnonzero(clip % 8 != 7), np.flatnonzero(clip % 8 == 7)
    st_tr, st_te = orientation_stats(tr.flow), orientation_stats(te.flow)
    flow_ho = np.asarray(tr.flow[ho[0]:ho[-1] + 1], np.float32)[ho - ho[0]]
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(ho))
    fr = np.asarray(tr.frame)[ho]
    bad = np.abs(fr[perm] - fr) < 10  # the "other object" must not be the same one a few frames apart
    while bad.any():
        perm[bad] = rng.integers(0, len(ho), int(bad.sum()))
        bad = np.abs(fr[perm] - fr) < 10
    pseudo = {"normal": flow_ho, "x2": 2 * flow_ho, "neg": -flow_ho,
              "mirror": flow_ho * np.array([-1, 1], np.float32), "swap": flow_ho[perm]}
    st_ho = {k: orientation_stats(v) for k, v in pseudo.items()}
    box_tr, box_te = np.asarray(tr.box), np.asarray(te.box)
    bounds = clip_bounds(te.clips)
    seconds_features = time.perf_counter() - t0

    def test_eval(cube: np.ndarray) -> dict:
        return evaluate(frame_scores(te.frame, cube, te.n_frames), te.labels, bounds)

    speed_te = st_te[0].sum((1, 2)) / (st_te[0].shape[1] * 1024)
    base = test_eval(speed_te)
    speed_ho = {k: v[0].sum((1, 2)) / (v[0].shape[1] * 1024) for k, v in st_ho.items()}
    rows = [{"variant": "box speed (no learning; the baseline)",
             "pseudo_auroc": {k: _auroc(speed_ho["normal"], speed_ho[k]) for k in PSEUDO},
             "test_micro": base["micro_auroc"], "test_macro": base["macro_auroc"]}]
    for name, fo, mo in VARIANTS:
        def feats(stats: tuple, boxes: np.ndarray, fo: dict = fo) -> np.ndarray:
            return features_from_stats(*stats, boxes, hw, **fo)

        model = MotionDensity(**mo, n_context=3 if fo["pos"] else 0)
        model.fit(feats(tuple(a[fit] for a in st_tr), box_tr[fit]))
        ho_scores = {k: model.score(feats(v, box_tr[ho])) for k, v in st_ho.items()}
        ev = test_eval(model.score(feats(st_te, box_te)))
        pc = {c: (v, base["per_clip_auroc"][c]) for c, v in ev["per_clip_auroc"].items() if v is not None}
        norm = fit_normaliser(ho_scores["normal"])
        rows.append({"variant": name, "features": fo, "density": mo,
                     "pseudo_auroc": {k: _auroc(ho_scores["normal"], ho_scores[k]) for k in PSEUDO},
                     "held_out_normal": {k: norm[k] for k in ("mean", "std", "median")},
                     "test_micro": ev["micro_auroc"], "test_macro": ev["macro_auroc"],
                     "per_clip_wins_losses_vs_speed": [sum(a > b + 1e-9 for a, b in pc.values()),
                                                       sum(a < b - 1e-9 for a, b in pc.values())]})
    for r in rows:
        r["pseudo_auroc"]["mean"] = float(np.mean([r["pseudo_auroc"][k] for k in PSEUDO]))
    # the direction of motion: share of cubes moving right (mean u > 0) in each split
    direction = {name: float((stats[2][..., 0].mean(1) > 0).mean()) for name, stats in
                 (("train_fit", tuple(a[fit] for a in st_tr)), ("held_out", st_ho["normal"]),
                  ("test", st_te))}
    from ped2 import _git_commit

    result = {"benchmark": "ped2-motion-density", "rows": rows, "share_moving_right": direction,
              "n_cubes": {"fit": int(len(fit)), "held_out": int(len(ho)), "test": int(len(te.frame))},
              "seconds": {"features": round(seconds_features, 1),
                          "total": round(time.perf_counter() - t0, 1)},
              "command": "python benchmarks/ped2_motion.py " + " ".join(shlex.quote(a) for a in
                                                                        (argv or sys.argv[1:])),
              "git_commit": _git_commit(), "chosen_on_test_labels": [],
              "note": "test_micro/test_macro use test labels: information only; no variant was chosen "
                      "by them"}
    atomic_write_json(args.out, result)
    for r in rows:
        print(f"{r['variant'][:70]:70s} pseudo mean {r['pseudo_auroc']['mean']:.3f} "
              f"[test] micro {r['test_micro']:.4f} macro {r['test_macro']:.4f}")
    print("share moving right:", json.dumps(direction))
    return 0


if __name__ == "__main__":
    sys.exit(main())
