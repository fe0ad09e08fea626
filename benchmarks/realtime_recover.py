"""Frame micro AUROC of ``benchmarks/realtime.py --auroc`` from the output folders its runs left (issue 20).

``realtime.py --auroc --test-per-clip`` stopped at the first all-anomalous clip (``statevad test --clips 08``
cannot evaluate one class; its scores.csv and objects.csv are written before that): this reads the folders
it had written (a copy of its temporary directory) -- ``test_NN`` (``statevad test --clips NN``: scores.csv,
objects.csv) and ``auc_CONFIG_NN`` (``statevad score``: scores.csv) -- and computes the same figures
``realtime.py`` would have: the micro AUROC of the concatenated frame scores of each configuration with all
12 clips, ``statevad test``'s with the border rule (its scores.csv) and without it (every cube of its
objects.csv counted).

    python benchmarks/realtime_recover.py --dir COPY_OF_TMP --work /tmp/w_ped2 --out benchmarks/results/X.json
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np
from ped2 import _git_commit  # the Ped2 benchmarks' commit + dirty flag
from realtime import CONFIGS, PED2, _normal_frame_stats

from statevad.files import atomic_write_json
from statevad.metrics import evaluate
from statevad.scoring import frame_scores
from statevad.workdir import open_split, select_clips


def _col(path: Path, name: str) -> np.ndarray:
    with open(path, newline="") as fh:
        return np.array([float(r[name]) for r in csv.DictReader(fh)])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    d = Path(args.dir)
    labels = np.load(PED2 / "gt" / "frame_labels_test.npy").astype(np.int64)
    names = [p.stem for p in sorted((PED2 / "video" / "testing").glob("*.mkv"))]
    split = open_split(args.work, "test")
    lengths = [int(c["n_frames"]) for c in split.clips]
    bounds, start = [], 0
    for n, k in zip(names, lengths, strict=True):
        bounds.append((n, start, start + k))
        start += k
    res: dict[str, Any] = {}

    def add(key: str, parts: list[np.ndarray | None], how: str) -> None:
        done = [p is not None and len(p) == k for p, k in zip(parts, lengths, strict=True)]
        row: dict[str, Any] = {"clips_done": int(sum(done)), "how": how}
        if all(done):
            m = evaluate(np.concatenate(parts), labels, bounds)  # type: ignore[arg-type]
            row.update(micro_auroc=round(float(m["micro_auroc"]), 5),
                       macro_auroc=round(float(m["macro_auroc"]), 5), frames=int(start))
        res[key] = row

    on, off = [], []
    for n in names:
        t = d / f"test_{n}"
        if not (t / "scores.csv").is_file():
            on.append(None)
            off.append(None)
            continue
        on.append(_col(t / "scores.csv", "score"))
        sub = select_clips(split, [n])
        off.append(frame_scores(sub.frame, _col(t / "objects.csv", "score"), sub.n_frames))
    add("statevad test", on, "`statevad test --clips NN` per clip (defaults: border rule on), scores.csv "
        "concatenated in clip order")
    add("statevad test, border rule off", off, "the same runs' objects.csv (6 digits), every cube counted: "
        "`statevad test --border-min-size 0`")
    streamed: dict[str, list[np.ndarray | None]] = {}
    for name in CONFIGS:
        parts = [(_col(d / f"auc_{name}_{n}" / "scores.csv", "score")
                  if (d / f"auc_{name}_{n}" / "scores.csv").is_file() else None) for n in names]
        if any(p is not None for p in parts):
            add(name, parts, f"statevad score with {CONFIGS[name]} per clip, scores.csv concatenated")
            streamed[name] = parts
    # the normal frames' upper quantiles at each configuration's threshold (events.json): whether a streaming
    # approximation shifts what a calibrated threshold means (labels say which frames are normal; nothing
    # is chosen on them)
    on_all = np.concatenate(on) if all(p is not None for p in on) else None
    for name in CONFIGS:
        ev = d / f"auc_{name}_{names[0]}" / "events.json"
        if name not in res or "micro_auroc" not in res[name] or not ev.is_file():
            continue
        thr = float(json.loads(ev.read_text())["threshold"])
        s = np.concatenate(streamed[name])  # type: ignore[arg-type]  (complete: it has an AUROC)
        res[name]["threshold"] = round(thr, 4)
        res[name]["normal_frames"] = _normal_frame_stats(s, labels, thr)
        if on_all is not None:
            res["statevad test"].setdefault("normal_frames at each configuration's threshold", {})[name] = \
                _normal_frame_stats(on_all, labels, thr)
    test = res["statevad test"].get("micro_auroc")
    for row in res.values():
        if test is not None and row.get("micro_auroc") is not None:
            row["points_vs_statevad_test"] = round(100 * (row["micro_auroc"] - test), 2)
    doc = {"benchmark": "realtime-auroc (recovered)",
           "command": "python benchmarks/realtime_recover.py "
                      + shlex.join(argv if argv is not None else sys.argv[1:]),
           "git_commit": _git_commit(), "chosen_on_test_labels": [], "auroc": res}
    atomic_write_json(args.out, doc)
    print({k: v.get("micro_auroc") for k, v in res.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
