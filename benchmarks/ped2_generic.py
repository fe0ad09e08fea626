"""Ped2 as a user's own footage: the `generic` preset's defaults, through the command line (issue 18).

    python benchmarks/ped2_generic.py --root ../shared/data/ped2 --work W [--jobs 2] [--seed N] \\
        --out benchmarks/results/ped2-generic.json

The held-out check of issue 18 runs the package as a user would on a scene it was never tuned on: a folder of
own footage, the `generic` preset, no flag but the paths. This is that procedure on Ped2, the only real scene
here: exactly these three commands, each timed,

    statevad prepare --root ROOT --work W --preset generic --jobs J
    statevad train --work W
    statevad test --work W --out W/results

and the JSON keeps what `statevad test` reports (frame micro/macro AUROC, EER, the fusion's parts: STATE
alone, the box speed without learning, ...) with the commands, the commit and the minutes. Nothing is set by
hand: every scoring setting is the model's label-free selection (``"chosen_on_test_labels": []``). Ped2 is not
a held-out scene for the project (its presets were measured on it): what differs from the ped2 benchmark's
label-free default (`ped2.py --config cpu-lf`) are the generic preset's whole-frame boxes, the track window in
seconds and the border rule of `statevad test`; the training recipe (the tiny network, nine epochs, the
moving average) is the one measured there (docs/ANALYSIS.md 19, 22).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ped2 import write_study  # noqa: E402


def run(cmd: list[str]) -> float:
    """Run one statevad command (its progress on this terminal); its minutes. Stops the study if it fails."""
    print("$ " + shlex.join(cmd), file=sys.stderr, flush=True)
    t = time.perf_counter()
    rc = subprocess.run(cmd).returncode
    if rc:
        raise SystemExit(f"{shlex.join(cmd)}: exit {rc}")
    return round((time.perf_counter() - t) / 60, 2)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="the Ped2 dataset")
    p.add_argument("--work", required=True, help="work directory (a new one times the whole procedure)")
    p.add_argument("--jobs", type=int, default=2, help="statevad prepare --jobs (default 2: both cores)")
    p.add_argument("--seed", type=int, default=None,
                   help="statevad train --seed N, the model and results beside the default run's in --work "
                   "(default: no flag, the user's seed 0)")
    p.add_argument("--out", required=True, help="results JSON")
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    work = Path(args.work)
    model = str(work / f"model-seed{args.seed}.pt")
    seeded = [] if args.seed is None else ["--seed", str(args.seed), "--out", model]
    tested = [] if args.seed is None else ["--model", model]
    results = work / ("results" if args.seed is None else f"results-seed{args.seed}")
    commands = {
        "prepare": ["statevad", "prepare", "--root", args.root, "--work", str(work), "--preset", "generic",
                    "--jobs", str(args.jobs)],
        "train": ["statevad", "train", "--work", str(work), *seeded],
        "test": ["statevad", "test", "--work", str(work), *tested, "--out", str(results)],
    }
    minutes = {name: run(cmd) for name, cmd in commands.items()}
    metrics = json.loads((results / "metrics.json").read_text())
    doc = {"benchmark": "ped2_generic", "preset": "generic", "seed": 0 if args.seed is None else args.seed,
           "commands": {k: shlex.join(v) for k, v in commands.items()},
           "minutes": minutes | {"total": round(sum(minutes.values()), 2)},
           "results": {k: metrics[k] for k in ("micro_auroc", "macro_auroc", "eer", "parts", "border_rule",
                                                "track_mean", "chosen_on_test_labels") if k in metrics},
           "metrics.json": metrics}
    if metrics.get("chosen_on_test_labels"):
        doc["chosen_on_test_labels"] = metrics["chosen_on_test_labels"]
    write_study(args.out, doc, "ped2_generic.py", argv, t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
