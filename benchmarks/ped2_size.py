"""A size-aware raw term (issue 18; docs/ANALYSIS.md 21).

    python benchmarks/ped2_size.py --root ../shared/data/ped2 --work W --model W/model-seed5.pt \\
        [--model ...] --out OUT.json

On held-out normal cubes the raw error grows with the box height (a near walker's patch holds more
texture), so the raw term ranks normal near walkers above small far anomalies. The rule of section 21, written
down before it was scored: the raw error divided by h^b (h the box height, b the slope of log e_raw on log h
over the selection's held-out normal cubes), z-scored on the same cubes; the other terms unchanged; the tail
rule's weights on the held-out z. For each model (its terms as ``statevad test`` computes them,
:func:`ped2_frame_rule.model_terms`):

1. *No label*: the share of small boxes among the test and the held-out cubes, the slope, each term's
   Spearman rho with the box height on the held-out cubes before and after, and the pseudo-anomaly objective
   (the selection's four kinds, made from the selection's cubes with its seed, scored at the model's epsilon)
   of raw alone, STATE alone (raw + flow) and the default (all terms), each with the model's raw term and
   with the size-aware one.
2. The frame AUROC of the same scores on the test clips (track mean 10, frame max), their lost pairs split as
   ``ped2_onsets.py`` does.

The test labels only score (``"chosen_on_test_labels": []``); nothing here sets a default.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ped2 import write_study  # noqa: E402
from ped2_frame_rule import model_terms  # noqa: E402
from ped2_onsets import WINDOW, labelled_frames, split_losses  # noqa: E402

TRACK = 10  # the ped2 preset's score.track_frames
TERMS = ("raw", "flow", "motion", "appearance")
SMALL_PX = 22  # box height: the small boxes a power law fitted on the bulk (27-32 px) extrapolates to
SCORES = {"raw alone": ("raw",), "STATE alone": ("raw", "flow"), "the default": TERMS}


def box_height(box: np.ndarray) -> np.ndarray:
    """Box heights in pixels, at least 1 (a degenerate box has no size to correct for)."""
    b = np.asarray(box, np.float64)
    return np.maximum(b[:, 3] - b[:, 1], 1.0)


def size_slope(e_raw: np.ndarray, height: np.ndarray) -> float:
    """b of the least-squares line log e_raw = a + b log h (normal cubes)."""
    b, _a = np.polyfit(np.log(height), np.log(np.maximum(e_raw, 1e-12)), 1)
    return float(b)


def raw_error(z_raw: np.ndarray, stats: dict[str, float]) -> np.ndarray:
    """The raw error back from its z-score by the model's statistics."""
    return np.asarray(z_raw, np.float64) * stats["raw_std"] + stats["raw_mean"]


def size_aware(e_raw: np.ndarray, height: np.ndarray, slope: float, mean: float, std: float) -> np.ndarray:
    """z of e_raw / h^slope, by the held-out (mean, std) of that quotient."""
    return (np.asarray(e_raw, np.float64) / height ** slope - mean) / std


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="the Ped2 dataset (its test labels)")
    p.add_argument("--work", required=True, help="prepared Ped2 work directory")
    p.add_argument("--model", action="append", required=True, help="a model trained on --work (repeatable)")
    p.add_argument("--out", required=True, help="results JSON")
    args = p.parse_args(argv)

    from scipy.stats import spearmanr

    from statevad.checkpoint import load_checkpoint
    from statevad.scoring import frame_scores, motion_zscore, score_cubes, zscores
    from statevad.selection import (
        auroc,
        draw_cubes,
        fused_terms,
        holdout_mask,
        pseudo_anomalies,
        tail_weights,
    )
    from statevad.tensors import cube_motion
    from statevad.tracks import split_track_mean
    from statevad.workdir import open_split

    t0 = time.perf_counter()
    work = Path(args.work)
    test, train = open_split(work, "test"), open_split(work, "train")
    labels, kind, clip_names = labelled_frames(args.root, WINDOW, test.labels)

    held = np.flatnonzero(holdout_mask(np.asarray(train.clip), np.asarray(train.frame)))
    frame, clip, box = np.asarray(test.frame), np.asarray(test.clip), np.asarray(test.box)
    t_height = box_height(box)

    def frames_of(cube_score: np.ndarray) -> np.ndarray:
        return frame_scores(frame, split_track_mean(cube_score, clip, frame, box, TRACK), test.n_frames)


    results: dict[str, object] = {"box heights (no label)": {
        f"share under {SMALL_PX} px, test cubes": round(float((t_height < SMALL_PX).mean()), 3)}}
    for m in args.model:
        print(f"{m} ...", file=sys.stderr, flush=True)
        (zt, _), (zh, _), _info = model_terms(Path(m), test, held, train)
        model, ckpt = load_checkpoint(Path(m), device="cpu")
        st, cfg, seed = ckpt.stats, ckpt.preset.score, int(ckpt.preset.train.seed)
        terms = tuple(t for t in TERMS if t in zt)
        hold, base = draw_cubes(held, seed)  # the selection's own cubes
        at = np.searchsorted(held, hold)
        zs = {t: v[at] for t, v in zh.items()}  # the selection's held-out z (the model's stats are theirs)

        # the pseudo-anomalies of the selection, scored as its held-out cubes were
        b_height = box_height(np.asarray(train.box)[base])
        b_app = None
        if "appearance" in terms:
            b_app = ckpt.appearance.zscore(np.asarray(np.asarray(train.classes)[base], np.float32))
        zp: dict[str, dict[str, np.ndarray]] = {}
        ep_raw: dict[str, np.ndarray] = {}
        for name, (r, f) in pseudo_anomalies(np.asarray(train.raw[base]), np.asarray(train.flow[base]),
                                             seed).items():
            e_raw, e_flow = score_cubes(model, r, f, cfg, progress=False)
            z_raw, z_flow = zscores(e_raw, e_flow, st)
            zp[name] = {"raw": z_raw, "flow": z_flow, "motion": motion_zscore(cube_motion(f), st)}
            if b_app is not None:
                zp[name]["appearance"] = b_app
            ep_raw[name] = e_raw

        # the rule: e_raw / h^b, z-scored on the selection's held-out cubes
        h_height = box_height(np.asarray(train.box)[hold])
        e_hold = raw_error(zs["raw"], st)
        slope = size_slope(e_hold, h_height)
        q = e_hold / h_height ** slope
        fit = (slope, float(q.mean()), float(q.std()))
        zs2 = dict(zs, raw=size_aware(e_hold, h_height, *fit))
        zp2 = {k: dict(v, raw=size_aware(ep_raw[k], b_height, *fit)) for k, v in zp.items()}
        zt2 = dict(zt, raw=size_aware(raw_error(zt["raw"], st), t_height, *fit))

        no_label: dict[str, object] = {
            "slope b": round(slope, 4),
            "held-out rho with the box height (model's / size-aware)": {
                t: round(float(spearmanr(zs[t], h_height)[0]), 3) for t in terms} | {
                "raw, size-aware": round(float(spearmanr(zs2["raw"], h_height)[0]), 3)}}
        scores: dict[str, object] = {}
        weights: dict[str, object] = {}
        for label, use in SCORES.items():
            use = tuple(t for t in use if t in terms)
            for variant, (hz, pz, tz) in (("", (zs, zp, zt)), (", size-aware", (zs2, zp2, zt2))):
                w, _ = tail_weights(hz, use)
                neg = fused_terms(hz, w)
                per_kind = {k: round(auroc(neg, fused_terms(v, w)), 4) for k, v in pz.items()}
                no_label[f"objective, {label}{variant}"] = {
                    "mean": round(float(np.mean(list(per_kind.values()))), 4), **per_kind}
                weights[f"{label}{variant}"] = w
                frames = frames_of(fused_terms(tz, w))
                scores[f"{label}{variant}"] = split_losses(frames, labels, kind, clip_names)
        no_label[f"share under {SMALL_PX} px, the selection's held-out cubes"] = round(
            float((h_height < SMALL_PX).mean()), 3)
        results[m] = {"no label": no_label, "weights": weights, "scores": scores,
                      "epsilon": float(cfg.epsilon), "seed": seed, "held-out cubes": int(len(hold))}
    doc = {"benchmark": "ped2_size", "track_frames": TRACK, "window": WINDOW, "results": results}
    write_study(args.out, doc, "ped2_size.py", argv, t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
