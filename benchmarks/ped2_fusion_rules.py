"""How the terms of one trained Ped2 model should be fused: the label-free rules side by side (issue 18).

    python benchmarks/ped2_fusion_rules.py --work /tmp/w_ped2c \
        --model /tmp/w_ped2c/model-cpu-lf-appearance-seed0.pt \
        --out benchmarks/results/ped2-fusion-rules-seed0.json

Scores, at epsilon 0, the held-out normal training cubes and pseudo-anomalies made from them (the very sets
``statevad.selection.run_selection`` uses, plus motion ×1.25 and ×1.5 to see how the terms share moderate
speed-ups) and every test cube; then fuses the four terms (raw, flow, motion, appearance z-scores) by

* ``grid``: ``statevad.selection.select_grid`` (best grid point on the pseudo-anomalies: the first rule),
* ``tail``: ``statevad.selection.select_tail`` (1 / tail scale of each term's held-out z: the default),
* ``equal``: every term weight 1 (a-priori),
* ``fisher``: the sum of each term's surprise -log P(normal >= value), the normal distribution being the
  held-out cubes' with an exponential tail above their 95th percentile (non-linear; not in the package),

and reports frame micro / macro AUROC, each clip's anomalies against all normal frames, and the per-term
pseudo-anomaly AUROCs. Everything above is label-free; the test labels only compute AUROC. One extra row,
``oracle_linear``, IS chosen on the test labels (the best point of a weight grid by test micro AUROC): the
ceiling of any linear fusion of this model's terms, for information, listed in ``chosen_on_test_labels``.
"""

from __future__ import annotations

import argparse
import itertools
import shlex
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ped2 import _git_commit  # noqa: E402

TERMS = ("raw", "flow", "motion", "appearance")
EXTRA_FAST = (1.25, 1.5)


def _auroc(neg: np.ndarray, pos: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(np.r_[np.zeros(len(neg)), np.ones(len(pos))], np.r_[neg, pos]))


def surprise(x: np.ndarray, held: np.ndarray, q: float) -> np.ndarray:
    """-log of the held-out normal survival function at ``x``: empirical below the ``q``-quantile, an
    exponential tail above it, of the tail rule's scale (statevad.selection.tail_scale)."""
    from statevad.selection import tail_scale

    h = np.sort(np.asarray(held, np.float64))
    u = np.quantile(h, q)
    beta = tail_scale(h, q) or 1e-9
    sf = np.maximum(1 - np.searchsorted(h, x, side="right") / (len(h) + 1), 1 - q)
    sf = np.where(x > u, (1 - q) * np.exp(-(x - u) / beta), sf)
    return -np.log(sf)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True, type=Path)
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    command = "python " + " ".join(shlex.quote(a) for a in [f"benchmarks/{Path(__file__).name}", *(
        argv if argv is not None else sys.argv[1:])])

    import torch

    torch.set_num_threads(args.threads)
    from statevad.checkpoint import load_checkpoint
    from statevad.config import ScoreConfig
    from statevad.metrics import clip_bounds, evaluate
    from statevad.scoring import frame_scores, score_cubes
    from statevad.selection import (
        PSEUDO_KINDS,
        TAIL_QUANTILE,
        Errors,
        draw_cubes,
        holdout_mask,
        pseudo_anomalies,
        select_grid,
        select_tail,
    )
    from statevad.tensors import cube_motion
    from statevad.workdir import open_split

    t0 = time.perf_counter()
    model, ckpt = load_checkpoint(args.model)
    if ckpt.appearance is None or not ckpt.selection:
        raise SystemExit(f"{args.model}: needs a model with the appearance term and a selection record")
    cfg = ScoreConfig(epsilon=0.0, batch_size=256)
    train = open_split(args.work, "train")
    held_idx = np.flatnonzero(holdout_mask(train.clip, train.frame, ckpt.preset.train.holdout_every))
    hold, base = draw_cubes(held_idx, ckpt.preset.train.seed)  # run_selection's cubes
    raw_b, flow_b = train.raw[base], train.flow[base]
    sets = {"held_out": (train.raw[hold], train.flow[hold]),
            **pseudo_anomalies(raw_b, flow_b, ckpt.preset.train.seed)}
    for f in EXTRA_FAST:
        sets[f"fast×{f:g}"] = (raw_b, (flow_b.astype(np.float32) * f).astype(flow_b.dtype))
    z_hold = ckpt.appearance.zscore(np.asarray(train.classes[hold], np.float32))
    z_base = ckpt.appearance.zscore(np.asarray(train.classes[base], np.float32))
    errors = {}
    for name, (r, f) in sets.items():
        e_raw, e_flow = score_cubes(model, r, f, cfg, progress=False)
        errors[name] = Errors(e_raw, e_flow, cube_motion(f), z_hold if name == "held_out" else z_base)
    test = open_split(args.work, "test")
    e_raw, e_flow = score_cubes(model, test.raw, test.flow, cfg, progress=True)
    test_e = Errors(e_raw, e_flow, cube_motion(test.flow),
                    ckpt.appearance.zscore(np.asarray(test.classes, np.float32)))
    t_score = time.perf_counter() - t0

    held = errors["held_out"]
    pseudo = {k: v for k, v in errors.items() if k in PSEUDO_KINDS}
    grid = select_grid({0.0: held}, {0.0: pseudo}, ckpt.selection["train_stats"])
    tail = select_tail({0.0: held}, {0.0: pseudo})
    st = tail.stats  # held-out statistics; a linear rule's ranking does not depend on the means

    def z(e: Errors, stats: dict[str, float]) -> dict[str, np.ndarray]:
        return {"raw": (e.raw - stats["raw_mean"]) / stats["raw_std"],
                "flow": (e.flow - stats["flow_mean"]) / stats["flow_std"],
                "motion": (e.speed - stats["motion_mean"]) / stats["motion_std"],
                "appearance": np.asarray(e.appearance, np.float64)}

    grid_st = dict(grid.stats)
    for k in ("motion_mean", "motion_std"):
        grid_st.setdefault(k, st[k])
    zt, zh = z(test_e, st), z(held, st)
    zt_grid = z(test_e, grid_st)
    bounds = clip_bounds(test.clips)
    labels = np.asarray(test.labels)

    def report(cube: np.ndarray) -> dict[str, object]:
        frames = frame_scores(test.frame, cube, test.n_frames)
        res = evaluate(frames, labels, bounds)
        neg = frames[labels == 0]
        clips = {}
        for name, a, b in bounds:
            pos = frames[a:b][labels[a:b] == 1]
            clips[name] = round(_auroc(neg, pos), 4) if len(pos) else None
        return {"micro_auroc": round(res["micro_auroc"], 4), "macro_auroc": round(res["macro_auroc"], 4),
                "eer": round(res["eer"], 4), "clip_anomalies_vs_all_normal": clips}

    def linear(w: dict[str, float], zz: dict[str, np.ndarray]) -> np.ndarray:
        return sum((w[t] * zz[t] for t in w if w[t]), np.zeros(len(zz["raw"])))

    rows: dict[str, dict[str, object]] = {}
    from statevad.training import appearance_weight

    w_grid = {"raw": grid.w_raw, "flow": grid.w_flow, "motion": grid.w_motion,
              "appearance": appearance_weight(ScoreConfig(w_raw=grid.w_raw, w_flow=grid.w_flow,
                                                          w_motion=grid.w_motion))}
    w_tail = {"raw": tail.w_raw, "flow": tail.w_flow, "motion": tail.w_motion,
              "appearance": tail.w_appearance}
    rows["grid (+ appearance by the a-priori rule)"] = {"weights": w_grid, **report(linear(w_grid, zt_grid))}
    rows["tail"] = {"weights": w_tail, **report(linear(w_tail, zt))}
    rows["equal"] = {"weights": dict.fromkeys(TERMS, 1.0), **report(linear(dict.fromkeys(TERMS, 1.0), zt))}
    s_test = {t: surprise(zt[t], zh[t], TAIL_QUANTILE) for t in TERMS}
    rows["fisher"] = report(sum(s_test.values()))
    for t in TERMS:
        rows[f"{t} alone"] = report(zt[t])
    rows["STATE alone, tail (raw + flow)"] = {
        "weights": {"raw": tail.state_only["w_raw"], "flow": tail.state_only["w_flow"]},
        **report(linear({"raw": tail.state_only["w_raw"], "flow": tail.state_only["w_flow"]}, zt))}
    rows["STATE alone, equal (raw + flow)"] = report(zt["raw"] + zt["flow"])
    rows["tail without appearance"] = report(linear({**w_tail, "appearance": 0.0}, zt))
    rows["tail without motion"] = report(linear({**w_tail, "motion": 0.0}, zt))
    rows["fisher without appearance"] = report(s_test["raw"] + s_test["flow"] + s_test["motion"])

    # the ceiling of linear fusion for this model, chosen ON THE TEST LABELS (information only)
    best = None
    for w in itertools.product((0, 0.5, 1, 2), (0, 0.5, 1, 2), (0, 0.5, 1, 2, 4), (0, 0.5, 1, 2)):
        if not any(w):
            continue
        wd = dict(zip(TERMS, map(float, w), strict=True))
        frames = frame_scores(test.frame, linear(wd, zt), test.n_frames)
        micro = evaluate(frames, labels, bounds)["micro_auroc"]
        if best is None or micro > best[0]:
            best = (micro, wd)
    assert best is not None
    rows["oracle_linear (CHOSEN ON TEST LABELS)"] = {"weights": best[1], **report(linear(best[1], zt))}

    per_term = {t: {k: round(_auroc(zh[t], z(v, st)[t]), 4) for k, v in errors.items() if k != "held_out"}
                for t in TERMS}
    result = {
        "benchmark": "ped2-fusion-rules", "model": str(args.model), "model_sha256": ckpt.sha256,
        "seed": ckpt.preset.train.seed, "epsilon": 0.0,
        "chosen_on_test_labels": ["oracle_linear row: its weights"],
        "rows": rows, "pseudo_anomaly_auroc_per_term": per_term,
        "tail_scales": tail.tail_scales, "objective": {"grid": grid.objective, "tail": tail.objective},
        "n_held_out": len(hold), "n_pseudo_per_kind": len(base), "n_test_cubes": len(test.raw),
        "seconds": round(time.perf_counter() - t0, 1), "scoring_seconds": round(t_score, 1),
        "git_commit": _git_commit(), "command": command,
    }
    from statevad.files import atomic_write_json

    atomic_write_json(args.out, result)
    for name, row in rows.items():
        print(f"{name:45s} micro {row['micro_auroc']:.4f} macro {row['macro_auroc']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
