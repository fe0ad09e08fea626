"""Objects at the frame's border as a population of their own (issue 18; docs/ANALYSIS.md 20).

    python benchmarks/ped2_border.py --root ../shared/data/ped2 --work W --model W/model-seed5.pt \\
        [--model ...] --out OUT.json

Held-out normal cubes whose box touches the frame's border (people entering or leaving, cut by the edge) have
z-scores unlike the other cubes' (section 20). For each model (its terms as ``statevad test`` computes them,
:func:`ped2_frame_rule.model_terms`):

1. *No label*: each term's mean, population std and 95th percentile on the held-out normal border and interior
   cubes.
2. The rule of section 20, written down before it was scored: every term's z re-standardised by its own
   group's held-out mean and std (border: :func:`statevad.calibration.touches_border`, the box within
   ``--margin`` px of the edge, 1 as the border rule's), the fusion weights by
   the tail rule on the re-standardised held-out z, each object's score averaged along its track (10 frames),
   the frame max. Beside the model's own score; for the default (all terms) and STATE alone (raw + flow).
   Each frame score's lost pairs are split as in ``ped2_onsets.py`` (normal frames before an onset, after an
   offset, elsewhere) — the anomalies that enter the view are border cubes, so only the "elsewhere" pairs say
   whether the rule is better normality rather than a fit to the annotation's onsets.

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
STATE_TERMS = ("raw", "flow")


def group_stats(held: np.ndarray, held_border: np.ndarray) -> dict[str, tuple[float, float]]:
    """(mean, population std) of a term's held-out z, per group; a group without spread keeps (0, 1)."""
    out = {}
    for name, sel in (("border", held_border), ("interior", ~held_border)):
        v = np.asarray(held, np.float64)[sel]
        std = float(v.std()) if len(v) else 0.0
        out[name] = (float(v.mean()), std) if std > 0 else (0.0, 1.0)
    return out


def restandardise(z: np.ndarray, border: np.ndarray, stats: dict[str, tuple[float, float]]) -> np.ndarray:
    """``z`` with each group's cubes standardised by that group's held-out (mean, std)."""
    out = np.asarray(z, np.float64).copy()
    for name, sel in (("border", border), ("interior", ~border)):
        mean, std = stats[name]
        out[sel] = (out[sel] - mean) / std
    return out


def describe(held: dict[str, np.ndarray], held_border: np.ndarray) -> dict[str, dict[str, float]]:
    """Question 1: each term's mean, std and 95th percentile on the held-out border and interior cubes."""
    out: dict[str, dict[str, float]] = {}
    for t, v in held.items():
        for name, sel in (("border", held_border), ("interior", ~held_border)):
            x = np.asarray(v, np.float64)[sel]
            out.setdefault(t, {}).update({f"{name} mean": round(float(x.mean()), 3),
                                          f"{name} std": round(float(x.std()), 3),
                                          f"{name} q95": round(float(np.quantile(x, 0.95)), 3)})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="the Ped2 dataset (its test labels)")
    p.add_argument("--work", required=True, help="prepared Ped2 work directory")
    p.add_argument("--model", action="append", required=True, help="a model trained on --work (repeatable)")
    p.add_argument("--margin", type=float, default=None,
                   help="px from the edge that count as the border (default: the border rule's, 1)")
    p.add_argument("--out", required=True, help="results JSON")
    args = p.parse_args(argv)

    from statevad.calibration import BORDER_MARGIN_PX, probe_source, touches_border
    from statevad.scoring import frame_scores
    from statevad.selection import fused_terms, holdout_mask, tail_weights
    from statevad.tracks import split_track_mean
    from statevad.workdir import open_split

    t0 = time.perf_counter()
    work = Path(args.work)
    test, train = open_split(work, "test"), open_split(work, "train")
    labels, kind, clip_names = labelled_frames(args.root, WINDOW, test.labels)
    margin = BORDER_MARGIN_PX if args.margin is None else args.margin
    size_hw, _ = probe_source(str(test.clips[0]["source"]), None)
    if size_hw is None:
        raise SystemExit(f"{test.clips[0]['source']}: cannot read its frame size")
    height, width = size_hw

    held = np.flatnonzero(holdout_mask(np.asarray(train.clip), np.asarray(train.frame)))
    frame, clip, box = np.asarray(test.frame), np.asarray(test.clip), np.asarray(test.box)
    t_border = touches_border(box, size_hw, margin)
    h_border = touches_border(np.asarray(train.box)[held], size_hw, margin)

    def frames_of(cube_score: np.ndarray) -> np.ndarray:
        return frame_scores(frame, split_track_mean(cube_score, clip, frame, box, TRACK), test.n_frames)


    results: dict[str, object] = {
        "frame size": [width, height],
        "border cubes": {"held-out": int(h_border.sum()), "held-out, all": int(len(held)),
                         "test": int(t_border.sum()), "test, all": int(len(box))}}
    for m in args.model:
        print(f"{m} ...", file=sys.stderr, flush=True)
        (zt, _), (zh, _), info = model_terms(Path(m), test, held, train)
        terms = tuple(t for t in ("raw", "flow", "motion", "appearance") if t in zt)
        stats = {t: group_stats(zh[t], h_border) for t in terms}
        zt2 = {t: restandardise(zt[t], t_border, stats[t]) for t in terms}
        zh2 = {t: restandardise(zh[t], h_border, stats[t]) for t in terms}
        w_model = {t: float(info["weights"][t] or 0.0) for t in terms}
        w_state_model, _ = tail_weights(zh, STATE_TERMS)
        w_rule, _ = tail_weights(zh2, terms)
        w_state_rule, _ = tail_weights(zh2, STATE_TERMS)
        scores = {
            "the default (the model's weights)": fused_terms(zt, w_model),
            "the default, border-aware": fused_terms(zt2, w_rule),
            "STATE alone (tail weights of raw and flow)": fused_terms(zt, w_state_model),
            "STATE alone, border-aware": fused_terms(zt2, w_state_rule)}
        results[m] = {
            "held-out z by group (no label)": describe(zh, h_border),
            "group statistics (mean, std)": {t: {g: [round(v, 4) for v in s] for g, s in st.items()}
                                             for t, st in stats.items()},
            "weights": {"model": w_model, "border-aware": w_rule, "STATE alone": w_state_model,
                        "STATE alone, border-aware": w_state_rule},
            "scores": {name: split_losses(frames_of(s), labels, kind, clip_names)
                       for name, s in scores.items()}}
    doc = {"benchmark": "ped2_border", "margin_px": margin, "track_frames": TRACK, "window": WINDOW,
           "results": results}
    write_study(args.out, doc, "ped2_border.py", argv, t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
