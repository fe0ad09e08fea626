"""One training change, seed by seed: the label-free figures that decide it, the test figures that can veto.

    python benchmarks/ped2_pairs.py \
        --base benchmarks/results/ped2-cpu-lf-excess-grid2-track10-seed{5,6,7}.json \
        --new benchmarks/results/ped2-cpu-lf-ema1-grid2-track10-seed{5,6,7}.json \
        --out benchmarks/results/ped2-ema1-rule.json

Each ``--base`` run is paired with the ``--new`` run of the same seed (ped2.py results files). The rule of
docs/ANALYSIS.md 18, as it was written before the runs: the change is taken if, on the mean over the seeds,
(a) the held-out normal training clips' raw error (``selection.stats.raw_mean``) is lower and (b) the
selection's objective for STATE alone (``selection.state_only.objective``, the mean pseudo-anomaly AUROC on
those clips) is not lower -- both computed on training footage alone -- and (c) the test's mean default
micro AUROC is not below the base runs' mean. (c) uses the Ped2 test labels and can only veto. Every test
figure is reported beside them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ped2 import write_study  # noqa: E402

# test figures (Ped2 test labels; information, and the veto)
TEST = {
    "default": "micro_auroc",
    "macro": "macro_auroc",
    "eer": "eer",
    "state_alone": "micro_auroc_state_only",
    "without_appearance": "micro_auroc_without_appearance_term",
    "without_motion": "micro_auroc_without_motion_term",
    "appearance_alone": "micro_auroc_appearance_only",
    "default_untracked": "micro_auroc_untracked",
}


def label_free(run: dict[str, Any]) -> dict[str, float]:
    """What the run's own training-time selection measured on its held-out normal training clips."""
    sel = run.get("selection") or {}
    return {
        "held_out_raw_error": float(sel["stats"]["raw_mean"]),
        "state_only_objective": float(sel["state_only"]["objective"]),
        "objective": float(sel["objective"]),
        "epsilon": float(sel["epsilon"]),
    }


def test_figures(run: dict[str, Any]) -> dict[str, float]:
    out = {k: float(run[v]) for k, v in TEST.items() if run.get(v) is not None}
    out["box_speed_tracked"] = float(run["baselines"]["box_flow_magnitude_track10"]["micro_auroc"])
    out["box_speed"] = float(run["baselines"]["box_flow_magnitude"]["micro_auroc"])
    out["clip_12"] = float(run["per_clip_auroc"]["12"])
    return out


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    rows = [
        {
            "seed": r["seed"],
            "commit": r.get("git_commit"),
            "command": r.get("command"),
            "label_free": label_free(r),
            "test": test_figures(r),
        }
        for r in runs
    ]
    mean = {
        part: {k: float(np.mean([row[part][k] for row in rows])) for k in rows[0][part]}
        for part in ("label_free", "test")
    }
    return {"runs": rows, "mean": mean}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", nargs="+", required=True, help="ped2.py results files without the change")
    p.add_argument("--new", nargs="+", required=True, help="ped2.py results files with it, same seeds")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    base = sorted((json.loads(Path(f).read_text()) for f in args.base), key=lambda r: r["seed"])
    new = sorted((json.loads(Path(f).read_text()) for f in args.new), key=lambda r: r["seed"])
    if [r["seed"] for r in base] != [r["seed"] for r in new]:
        p.error("--base and --new must hold the same seeds")
    b, n = summary(base), summary(new)
    lb, ln = b["mean"]["label_free"], n["mean"]["label_free"]
    rule = {
        "a_held_out_raw_error_lower": ln["held_out_raw_error"] < lb["held_out_raw_error"],
        "b_state_only_objective_not_lower": ln["state_only_objective"] >= lb["state_only_objective"],
        "c_no_veto": n["mean"]["test"]["default"] >= b["mean"]["test"]["default"],
    }
    rule["taken"] = all(rule.values())
    note = ("label_free = the training-time selection's figures on held-out normal training clips; "
            "test = the Ped2 test labels (information, and the veto only)")
    write_study(args.out, {"benchmark": "ped2_pairs", "results": {"base": b, "new": n, "rule": rule},
                           "note": note}, "ped2_pairs.py", argv, t0)
    for name, s in (("base", b), ("new", n)):
        for row in s["runs"]:
            t, lf = row["test"], row["label_free"]
            print(
                f"{name} seed {row['seed']}: default {t['default']:.4f} state alone {t['state_alone']:.4f} "
                f"no-app {t['without_appearance']:.4f} box speed {t['box_speed_tracked']:.4f} | "
                f"held-out raw {lf['held_out_raw_error']:.2f} "
                f"state-only objective {lf['state_only_objective']:.4f}"
            )
    print(json.dumps(rule))
    return 0


if __name__ == "__main__":
    sys.exit(main())
