"""Re-run the label-free selection of a trained Ped2 model with another weight rule, and score the test split.

    python benchmarks/ped2_reselect.py benchmarks/results/ped2-cpu-lf-appearance-seed0.json --rule tail \
        --work /tmp/w_ped2c --tag tail-seed0

The selection runs after training and does not change the network, so the model file of a finished
``ped2.py`` run (named in its results JSON) is re-selected with ``statevad.selection.run_selection``
exactly as ``statevad train`` with ``--set train.weight_rule=RULE`` would have done it (same seed, same
held-out cubes), then the test split is scored as ``ped2.py`` scores it (no border rule; every fusion
variant of ``ped2.evaluate_fusions``). Writes ``benchmarks/results/ped2-cpu-lf-<tag>.json`` and its frame
scores, in ``ped2.py``'s format (``ped2_parts.py`` reads them). ``budget_seconds`` = the original run's
(its prepare, training and selection) + this selection + this scoring pass: an upper bound of what one
training with the rule costs. Nothing is chosen on test labels; the labels only compute AUROC.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ped2 import REPO, _brief, _git_commit, evaluate_fusions, flow_baselines, variant_frames  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="results JSON of a finished ped2.py run (cpu-lf config)")
    p.add_argument("--work", required=True, type=Path, help="the run's work directory (holds its model)")
    p.add_argument("--rule", default="tail", choices=("tail", "grid"))
    p.add_argument("--tag", required=True, help="suffix of the results file name")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    command = "python " + " ".join(shlex.quote(a) for a in [f"benchmarks/{Path(__file__).name}", *(
        argv if argv is not None else sys.argv[1:])])

    import torch

    torch.set_num_threads(args.threads)
    from statevad.checkpoint import load_checkpoint
    from statevad.metrics import clip_bounds, evaluate
    from statevad.scoring import score_split
    from statevad.selection import holdout_mask, run_selection
    from statevad.tensors import cube_motion
    from statevad.workdir import open_split

    base = json.loads(args.run.read_text())
    if base.get("config") != "cpu-lf" or base.get("chosen_on_test_labels"):
        raise SystemExit(f"{args.run}: not a label-free (cpu-lf) run")
    model_path = args.work / (f"model-cpu-lf-{base['tag']}.pt" if base.get("tag") else "model-cpu-lf.pt")
    model, ckpt = load_checkpoint(model_path)
    if not ckpt.selection or "train_stats" not in ckpt.selection:
        raise SystemExit(f"{model_path}: no selection record (not trained with train.select)")
    train = open_split(args.work, "train", verify=False)
    held = np.flatnonzero(holdout_mask(train.clip, train.frame, ckpt.preset.train.holdout_every))
    t0 = time.perf_counter()
    chosen = run_selection(model, train.raw, train.flow, held, ckpt.selection["train_stats"],
                           seed=ckpt.preset.train.seed, bf16=ckpt.preset.train.bf16, rule=args.rule,
                           classes=train.classes, appearance=ckpt.appearance)
    t_select = time.perf_counter() - t0
    w_app = chosen.w_appearance if chosen.w_appearance is not None else base["w_appearance"]
    stats = dict(chosen.stats, **(ckpt.appearance.stats() if ckpt.appearance is not None else {}))
    sc = dataclasses.replace(ckpt.preset.score, epsilon=chosen.epsilon, w_raw=chosen.w_raw,
                             w_flow=chosen.w_flow, w_motion=chosen.w_motion, w_appearance=w_app)

    test = open_split(args.work, "test")
    t1 = time.perf_counter()
    motion = cube_motion(test.flow)
    z_app = None
    if ckpt.appearance is not None and test.classes is not None:
        z_app = ckpt.appearance.zscore(np.asarray(test.classes, np.float32))
    e_raw, e_flow = score_split(model, test, sc, progress=True)
    t_score = time.perf_counter() - t1
    rows, variants = evaluate_fusions(e_raw, e_flow, motion, stats, test,
                                      (sc.w_raw, sc.w_flow, sc.w_motion, sc.w_appearance), (3.0,),
                                      z_appearance=z_app)
    eps = f"{sc.epsilon:g}"
    frames = {k.replace("=", "_"): v for k, v in variant_frames(variants, sc.epsilon).items()}
    bounds = clip_bounds(test.clips)
    base_scores = flow_baselines(test, motion)
    baselines = {name: _brief(evaluate(s, test.labels, bounds)) for name, s in base_scores.items()}
    head = rows["fused"]
    out_json = REPO / "benchmarks" / "results" / f"ped2-cpu-lf-{args.tag}.json"
    out_npz = out_json.with_name(out_json.stem + "-frames.npz")
    result = {
        "benchmark": "ped2-reselect", "config": "cpu-lf", "tag": args.tag, "of_run": args.run.name,
        "model": str(model_path), "model_sha256": ckpt.sha256, "weight_rule": args.rule,
        "settings": {**base["settings"], "epsilon": sc.epsilon, "w_motion": sc.w_motion},
        "chosen_on_test_labels": [],
        "design_note": ("the tail rule was compared with the grid rule on the seed-0 model's test labels "
                        "before it became the default (docs/ANALYSIS.md section 9); its values are computed "
                        "from held-out normal training clips only"),
        "seed": base["seed"], "micro_auroc": head["micro_auroc"], "macro_auroc": head["macro_auroc"],
        "eer": head["eer"], "w_raw": sc.w_raw, "w_flow": sc.w_flow, "w_motion": sc.w_motion,
        "w_appearance": sc.w_appearance, "selection": chosen.to_dict(),
        "micro_auroc_without_motion_term": rows.get("no_motion", head)["micro_auroc"],
        "micro_auroc_without_appearance_term": rows.get("no_appearance", head)["micro_auroc"],
        "micro_auroc_state_only": rows.get("state_only", head)["micro_auroc"],
        "micro_auroc_appearance_only": rows.get("appearance_only", {}).get("micro_auroc"),
        "micro_auroc_of_the_original_run": base["micro_auroc"],
        "per_clip_auroc": head["per_clip_auroc"], "baselines": baselines,
        "scoring_passes": {f"eps={eps}": {k: _brief(v) for k, v in rows.items()}},
        "frame_scores_file": out_npz.name,
        "seconds": {"original_run_budget": base["budget_seconds"], "selection": round(t_select, 1),
                    "score": round(t_score, 1)},
        "budget_seconds": round(base["budget_seconds"] + t_select + t_score, 1),
        "git_commit": _git_commit(), "command": command,
    }
    from statevad.files import atomic_write_json, atomic_write_with

    atomic_write_json(out_json, result)
    atomic_write_with(out_npz, lambda tmp: np.savez_compressed(
        tmp, labels=np.asarray(test.labels), **frames, **base_scores))
    print(json.dumps({k: result[k] for k in ("tag", "micro_auroc", "macro_auroc", "eer",
                                             "micro_auroc_state_only", "w_raw", "w_flow", "w_motion",
                                             "w_appearance", "budget_seconds")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
