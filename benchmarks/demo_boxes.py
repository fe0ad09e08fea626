"""`statevad demo` with the whole-frame boxes (what it uses) against the ped2 preset's detector grid.

    python benchmarks/demo_boxes.py --rounds 2 --out benchmarks/results/demo-boxes.json

Each round runs the whole demo (prepare, train, score the held-out clip, report) once per variant, in turn
(whole, grid, whole, grid, ...), each in a fresh process and a fresh folder so nothing is cached:

* ``whole`` -- the demo as it is: the ped2 preset with ``config.WHOLE_FRAME_BOX`` (one detector call a frame);
* ``grid``  -- the same with the ped2 preset's own boxes (the whole frame and a 2x2 grid: five calls a frame).

Reported per run: the demo's minutes, its AUROC on the held-out clip, the streaming rate and latency of its
scoring step and its CPU seconds; per round the ratio grid / whole. The clip's labels only give the AUROC;
nothing is chosen on them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ped2 import write_study  # noqa: E402

VARIANTS = ("whole", "grid")


def one(variant: str, out: Path) -> dict[str, Any]:
    """Run the demo once in this process; ``grid`` gives it the ped2 preset's boxes."""
    from statevad import demo

    if variant == "grid":
        demo.whole_frame_box_sets = lambda: []  # the ped2 preset's detector grid, as prepared before
    res = demo.run_demo(out, demo.DemoOptions(progress=False))
    sc = res.score
    return {"variant": variant, "minutes": round(res.minutes, 2), "auroc": res.auroc,
            "events": len(sc.events), "frames": sc.n_frames, "objects": sc.n_objects,
            "scoring_frames_per_s": round(sc.n_frames / max(sc.loop_s, 1e-9), 2),
            "latency": sc.latency,
            "cpu_s": round(resource.getrusage(resource.RUSAGE_SELF).ru_utime
                           + resource.getrusage(resource.RUSAGE_SELF).ru_stime, 1)}


def run_child(variant: str, tmp: Path, i: int) -> dict[str, Any]:
    out = tmp / f"{variant}-{i}"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--one", variant, "--demo-out", str(out)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"demo ({variant}) failed:\n{proc.stderr[-2000:]}")
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    row["process_s"] = round(time.perf_counter() - t0, 1)
    row["load_at_end"] = round(os.getloadavg()[0], 2)
    print(f"{variant}: {row['minutes']} min, AUROC {row['auroc']}, scoring {row['scoring_frames_per_s']} "
          f"frames/s, load {row['load_at_end']}", file=sys.stderr)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", help="results JSON")
    ap.add_argument("--one", choices=VARIANTS, help=argparse.SUPPRESS)  # a child run
    ap.add_argument("--demo-out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        row = one(args.one, Path(args.demo_out))
        print(json.dumps(row))
        return 0
    if not args.out:
        ap.error("--out is required")
    t0 = time.perf_counter()
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="demo-boxes.") as td:
        for r in range(args.rounds):
            rounds.append({v: run_child(v, Path(td), r) for v in VARIANTS})
    ratio = {k: [round(row["grid"][k] / row["whole"][k], 3) for row in rounds]
             for k in ("minutes", "cpu_s")}
    ratio["scoring_frames_per_s"] = [round(row["whole"]["scoring_frames_per_s"]
                                           / row["grid"]["scoring_frames_per_s"], 3) for row in rounds]
    results = {"rounds": rounds,
               "grid / whole, per round (scoring: whole's rate / grid's)": ratio,
               "median": {k: statistics.median(v) for k, v in ratio.items()}}
    write_study(args.out, {"benchmark": "demo_boxes", "results": results}, "demo_boxes.py", argv, t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
