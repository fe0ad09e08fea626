"""`statevad test` and `statevad score` give the same frame scores (issue 20): one Ped2 test clip scored both
ways with the same model -- `test` on the prepared cubes of a work directory, `score` on the clip's video --
and their frame scores compared frame by frame (both with their default border rule).

    OMP_NUM_THREADS=1 python benchmarks/test_vs_score.py --model MODEL --work /tmp/w_ped2 --clip 03 \\
        --out benchmarks/results/test-vs-score-clip03.json

or, from the output folders of two earlier commands (``statevad test --work W --model M --clips 03 --out T``
and ``statevad score .../03.mkv --model M --out S``), ``--compare T S`` (nothing is scored again).
"""

from __future__ import annotations

import argparse
import csv
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ped2 import _git_commit  # the Ped2 benchmarks' commit + dirty flag
from realtime import PED2

from statevad import stream
from statevad.evaluation import run_test
from statevad.files import atomic_write_json


def _scores(path: Path) -> np.ndarray:
    with open(path, newline="") as fh:
        return np.array([float(r["score"]) for r in csv.DictReader(fh)])


def compare(args: argparse.Namespace, argv: list[str] | None) -> int:
    import json

    t, sc = Path(args.compare[0]), Path(args.compare[1])
    a, b = _scores(t / "scores.csv"), _scores(sc / "scores.csv")
    m = json.loads((t / "metrics.json").read_text())
    ev = json.loads((sc / "events.json").read_text())
    with open(t / "objects.csv", newline="") as fh:
        counted = sum(int(r["scored"]) for r in csv.DictReader(fh))
    diff = np.abs(a - b) if len(a) == len(b) else None
    doc = {"benchmark": "test-vs-score",
           "command": "python benchmarks/test_vs_score.py "
                      + shlex.join(argv if argv is not None else sys.argv[1:]),
           "git_commit": _git_commit(), "model": m["model"], "clips": m["clips"], "chosen_on_test_labels": [],
           "statevad test": {"frames": int(len(a)), "cubes": m["n_cubes"], "cubes_counted": counted,
                             "border_rule": m["border_rule"], "micro_auroc": m["micro_auroc"]},
           "statevad score": {"frames": ev["frames scored"], "objects_scored": ev["objects scored"],
                              "border_rule": ev["border rule"], "input": ev["input"]},
           "frame_score_max_abs_difference": None if diff is None else round(float(diff.max()), 7),
           "frames_differing_by_more_than_1e-3": None if diff is None else int((diff > 1e-3).sum()),
           "note": "score's scores.csv holds 4 decimals, test's 6 significant digits: differences up to 5e-5 "
                   "are that rounding"}
    atomic_write_json(args.out, doc)
    print({k: doc[k] for k in ("frame_score_max_abs_difference", "frames_differing_by_more_than_1e-3")})
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model")
    ap.add_argument("--work", help="a prepared Ped2 work dir (statevad prepare)")
    ap.add_argument("--clip", default="03")
    ap.add_argument("--compare", nargs=2, metavar=("TEST_OUT", "SCORE_OUT"),
                    help="compare earlier `statevad test --clips CLIP` and `statevad score` outputs")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    if args.compare:
        return compare(args, argv)
    if not (args.model and args.work):
        ap.error("--model and --work are needed (or --compare)")
    doc: dict[str, Any] = {
        "benchmark": "test-vs-score",
        "command": "python benchmarks/test_vs_score.py "
                   + shlex.join(argv if argv is not None else sys.argv[1:]),
        "git_commit": _git_commit(), "model": args.model, "clip": args.clip, "chosen_on_test_labels": [],
        "torch_threads": torch.get_num_threads(), "loadavg_at_start": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="test-vs-score.") as td:
        t0 = time.perf_counter()
        m = run_test(args.work, args.model, out=Path(td) / "test", clips=[args.clip], progress=False)
        t1 = time.perf_counter()
        video = PED2 / "video" / "testing" / f"{args.clip}.mkv"
        res = stream.score(str(video), args.model, Path(td) / "score",
                           stream.ScoreOptions(progress=False, video=False))
        t2 = time.perf_counter()
        a, b = _scores(Path(td) / "test" / "scores.csv"), _scores(Path(td) / "score" / "scores.csv")
        with open(Path(td) / "test" / "objects.csv", newline="") as fh:
            counted = sum(int(r["scored"]) for r in csv.DictReader(fh))
    diff = np.abs(a - b) if len(a) == len(b) else None
    doc.update({
        "statevad test": {"frames": int(len(a)), "cubes": m["n_cubes"], "cubes_counted": counted,
                          "border_rule": m["border_rule"], "seconds": round(t1 - t0, 1)},
        "statevad score": {"frames": res.n_frames, "objects_scored": res.n_objects,
                           "seconds": round(t2 - t1, 1)},
        "frame_score_max_abs_difference": None if diff is None else float(diff.max()),
        "frames_differing_by_more_than_1e-3": None if diff is None else int((diff > 1e-3).sum()),
        "note": "score.csv holds 4 decimals, test's scores.csv 6 significant digits: differences up to 5e-5 "
                "are the rounding",
        "loadavg_at_end": os.getloadavg()})
    atomic_write_json(args.out, doc)
    print({k: doc[k] for k in ("frame_score_max_abs_difference", "frames_differing_by_more_than_1e-3")})
    return 0


if __name__ == "__main__":
    sys.exit(main())
