"""How a frame's objects make its score (issue 18; docs/ANALYSIS.md, 12): the max, and the max corrected
for the number of objects in the frame.

    python benchmarks/ped2_frame_rule.py --work W --model W/model-seed5.pt [--model ...] --out OUT.json

(W = ``statevad prepare --root ../shared/data/ped2 --work W --jobs 2``.) The published frame score is the max
over the frame's object scores. A frame with 20 normal objects then scores higher than a frame with 2 by
chance alone: the max of more draws is larger. Ped2's crowded clips (12 above all) are where the learned score
loses to the box speed, so the candidate written down before scoring it is the multiple-testing correction of
the max (Sidak): with the object scores' normal tail exponential of scale tau (the tail rule's evidence, the
held-out normal cubes' mean excess over their 95th percentile, :func:`statevad.selection.tail_scale`), a
normal object exceeds s with probability ~ c exp(-s / tau), the max of N normal objects with N times that,
so the frame's evidence in nats is ``max_i s_i / tau - log N``: ``frame = max_i s_i - tau * log(N)``.
tau is measured on held-out *training* clips; nothing is chosen on test labels.

Each model's cube scores are computed as ``statevad test`` computes them (its stored epsilon and weights; no
border rule, as benchmarks/ped2.py). Reported per model, for the model's default score, STATE alone (raw +
flow term) and the box speed (no learning; its tau from the same held-out cubes): the max as published, the
corrected max, and each with the causal 10-frame track mean (ped2_cues study 5). The test labels are read
only to compute the AUROCs (``"chosen_on_test_labels": []``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ped2 import write_study  # noqa: E402
from ped2_cues import TRACK_CANDIDATE, track_ids  # noqa: E402

from statevad.tracks import causal_track_mean  # noqa: E402


def count_corrected(cube_frame: np.ndarray, cube_score: np.ndarray, n_frames: int, tau: float
                    ) -> np.ndarray:
    """Frame score = max of its cubes' scores - tau * log(number of its cubes); frames without cubes keep
    the package's empty-frame score."""
    from statevad.scoring import frame_scores

    frames = frame_scores(cube_frame, cube_score, n_frames)
    n = np.bincount(cube_frame, minlength=n_frames)
    has = n > 0
    frames[has] -= tau * np.log(n[has])
    return frames


def model_terms(model_path: Path, test, held_idx: np.ndarray, train) -> tuple[dict, dict, dict]:
    """Per split ("test", "held"): each term's z-scores as ``statevad test`` computes them (the model's
    epsilon), the box speed, and the model's settings."""
    from statevad.appearance import appearance_term
    from statevad.checkpoint import load_checkpoint
    from statevad.scoring import motion_zscore, score_cubes, zscores
    from statevad.tensors import cube_motion

    model, ckpt = load_checkpoint(model_path, device="cpu")
    cfg, st = ckpt.preset.score, ckpt.stats
    out = {}
    for name, split, idx in (("test", test, None), ("held", train, held_idx)):
        raw = split.raw if idx is None else split.raw[idx]
        flow = split.flow if idx is None else split.flow[idx]
        e_raw, e_flow = score_cubes(model, raw, flow, cfg, progress=False)
        z_raw, z_flow = zscores(e_raw, e_flow, st)
        speed = cube_motion(flow)
        terms = {"raw": z_raw, "flow": z_flow, "motion": motion_zscore(speed, st)}
        if cfg.w_appearance:
            classes = split.classes if idx is None else np.asarray(split.classes)[idx]
            terms["appearance"] = appearance_term(ckpt.appearance, classes, 1.0, "")
        out[name] = (terms, speed)
    weights = {"raw": cfg.w_raw, "flow": cfg.w_flow, "motion": cfg.w_motion,
               "appearance": cfg.w_appearance}
    settings = {"epsilon": cfg.epsilon, **{f"w_{k}": v for k, v in weights.items()},
                "flow_term": cfg.flow_term}
    return out["test"], out["held"], {"weights": weights, "settings": settings}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True, help="prepared Ped2 work directory")
    p.add_argument("--model", action="append", required=True, help="a model trained on --work (repeatable)")
    p.add_argument("--out", required=True, help="results JSON")
    args = p.parse_args(argv)

    from statevad.metrics import evaluate
    from statevad.scoring import frame_scores
    from statevad.selection import holdout_mask, tail_scale, tail_weights
    from statevad.workdir import open_split

    t0 = time.perf_counter()
    work = Path(args.work)
    test, train = open_split(work, "test"), open_split(work, "train")
    bounds = [(str(c["name"]), int(c["start"]), int(c["start"]) + int(c["n_frames"])) for c in test.clips]
    held = np.flatnonzero(holdout_mask(np.asarray(train.clip), np.asarray(train.frame)))  # all: whole tracks
    frame, h_frame = np.asarray(test.frame), np.asarray(train.frame)[held]
    ids = track_ids(frame, np.asarray(test.clip), np.asarray(test.box))
    h_ids = track_ids(h_frame, np.asarray(train.clip)[held], np.asarray(train.box)[held])

    def auc(frames: np.ndarray) -> dict[str, object]:
        r = evaluate(frames, test.labels, bounds)
        return {"micro": round(float(r["micro_auroc"]), 4), "macro": round(float(r["macro_auroc"]), 4),
                "per_clip": {k: (round(float(v), 4) if v is not None else None)
                             for k, v in r["per_clip_auroc"].items()}}

    def track(v: np.ndarray, held_split: bool = False) -> np.ndarray:
        return causal_track_mean(v, h_frame if held_split else frame, h_ids if held_split else ids,
                                 TRACK_CANDIDATE)

    def fused(terms: dict[str, np.ndarray], w: dict[str, float]) -> np.ndarray:
        return sum(w[k] * terms[k] for k in w)

    results = {}
    for m in args.model:
        print(f"{m} ...", file=sys.stderr, flush=True)
        (z_te, speed_te), (z_he, speed_he), info = model_terms(Path(m), test, held, train)
        w_model = {k: v for k, v in info["weights"].items() if k in z_te}
        rows: dict[str, object] = {"settings": info["settings"]}
        zt_te = {k: track(v) for k, v in z_te.items()}
        zt_he = {k: track(v, True) for k, v in z_he.items()}
        kinds = {"model default": (tuple(w_model), w_model),
                 "STATE alone (raw + flow term)": (("raw", "flow"), {"raw": w_model["raw"],
                                                                     "flow": w_model["flow"]})}
        for kind, (terms, w) in kinds.items():
            s_te, s_he = fused(z_te, w), fused(z_he, w)
            tau = tail_scale(s_he)
            w_tr, scales = tail_weights({k: zt_he[k] for k in terms}, terms)
            rows[kind] = {
                "weights (the model's)": w,
                "max (published)": auc(frame_scores(frame, s_te, test.n_frames)),
                "max - tau log N": auc(count_corrected(frame, s_te, test.n_frames, tau or 0.0)),
                "tau (held-out normal tail scale)": round(float(tau), 6) if tau else None,
                f"track mean {TRACK_CANDIDATE}, max": auc(frame_scores(frame, track(s_te), test.n_frames)),
                f"track mean {TRACK_CANDIDATE}, tail rule on held-out track means": {
                    **auc(frame_scores(frame, fused(zt_te, w_tr), test.n_frames)),
                    "weights": {k: round(float(v), 4) for k, v in w_tr.items()}, "tail_scales": scales}}
        base_tau = tail_scale(speed_he)
        rows["box speed (no learning)"] = {
            "max (published)": auc(frame_scores(frame, speed_te, test.n_frames)),
            "max - tau log N": auc(count_corrected(frame, speed_te, test.n_frames, base_tau or 0.0)),
            f"track mean {TRACK_CANDIDATE}, max": auc(frame_scores(frame, track(speed_te), test.n_frames))}
        results[m] = rows
        brief = {k: {kk: (vv["micro"] if isinstance(vv, dict) and "micro" in vv else vv)
                     for kk, vv in v.items()} for k, v in rows.items() if k != "settings"}
        print(json.dumps(brief, indent=1), file=sys.stderr, flush=True)

    doc = {"benchmark": "ped2_frame_rule", "work": str(work), "models": args.model,
           "chosen_on_test_labels": [], "results": results,
           "held_out": f"statevad.selection.holdout_mask: all {len(held)} cubes of the held-out clips"}
    write_study(args.out, doc, "ped2_frame_rule.py", argv, t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
