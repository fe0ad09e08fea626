"""What each part of the score adds on Ped2, clip by clip (issue 18's table), from ped2.py's frame scores.

    python benchmarks/ped2_parts.py benchmarks/results/ped2-cpu-lf-appearance-seed0.json [more seeds ...] \
        --out benchmarks/results/ped2-parts-cpu-lf-appearance.json

The published metric is the micro AUROC over all 2010 test frames, where a clip's frames compete with every
other clip's: clips 08-11 are anomalous throughout and have no AUROC of their own. So the per-clip figure here
is the AUROC of *that clip's anomalous frames against all normal frames of the split* — how well the clip's
anomalies rank above normal footage anywhere, which is what they contribute to the micro AUROC. Columns: the
model's score (all its terms), without the appearance term, without the motion term, STATE alone (raw +
flow), the appearance term alone, and the no-learning per-box flow magnitude. Several results files (seeds)
are averaged. Test labels are read only to compute AUROC; nothing is chosen here.
"""

from __future__ import annotations

import argparse
import ast
import json
import shlex
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GT = ROOT.parent / "shared" / "data" / "ped2" / "gt" / "frame_labels_test.json"

# column -> key prefix in the frames npz (ped2.py), "{eps}" filled with the run's epsilon
PARTS = {"model": "model_eps_{eps}", "no appearance": "no_appearance_eps_{eps}",
         "no motion": "no_motion_eps_{eps}", "STATE alone": "state_eps_{eps}",
         "appearance alone": "appearance_only_eps_{eps}", "box speed (no learning)": "box_flow_magnitude",
         # runs with score.track_frames: the box speed averaged along the same tracks (like for like)
         "box speed, track mean": "box_flow_magnitude_track{track}"}


def clip_lengths(gt: Path = GT) -> list[tuple[str, int]]:
    doc = json.loads(gt.read_text())
    clips = doc["clips"] if isinstance(doc["clips"], dict) else ast.literal_eval(doc["clips"])
    return [(name, int(c["frames"])) for name, c in sorted(clips.items())]


def auroc(neg: np.ndarray, pos: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    if not len(neg) or not len(pos):
        return None
    return float(roc_auc_score(np.r_[np.zeros(len(neg)), np.ones(len(pos))], np.r_[neg, pos]))


def parts_of_run(result: Path) -> dict[str, dict[str, float | None]]:
    """{column: {"micro": AUROC, clip: AUROC of its anomalies vs all normal frames}} of one ped2.py run."""
    d = json.loads(result.read_text())
    frames = np.load(result.with_name(d["frame_scores_file"]))
    labels = frames["labels"].astype(bool)
    eps = f"{float(d['settings']['epsilon']):g}"
    bounds, start = [], 0
    for name, n in clip_lengths():
        bounds.append((name, start, start + n))
        start += n
    if start != len(labels):
        raise SystemExit(f"{result}: {len(labels)} frame labels, the Ped2 ground truth has {start}")
    out: dict[str, dict[str, float | None]] = {}
    for col, key in PARTS.items():
        key = key.format(eps=eps, track=int(d.get("track_frames") or 0))
        if key not in frames.files:
            continue
        s = frames[key]
        normal = s[~labels]
        row: dict[str, float | None] = {"micro": auroc(normal, s[labels])}
        for name, a, b in bounds:
            row[name] = auroc(normal, s[a:b][labels[a:b]])
        out[col] = row
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="+", help="ped2.py results JSON files (their frames .npz beside them)")
    ap.add_argument("--out", default=None, help="write the table as JSON here")
    args = ap.parse_args(argv)
    runs = [parts_of_run(Path(r)) for r in args.results]
    cols = [c for c in PARTS if all(c in r for r in runs)]
    keys = ["micro"] + [name for name, _ in clip_lengths()]

    def mean(col: str, key: str) -> float | None:
        vals = [r[col][key] for r in runs if r[col][key] is not None]
        return float(np.mean(vals)) if vals else None

    table = {col: {k: mean(col, k) for k in keys} for col in cols}
    print("| clip | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for k in keys:
        cells = [("-" if table[c][k] is None else f"{table[c][k]:.4f}") for c in cols]
        print(f"| {k} | " + " | ".join(cells) + " |")
    if args.out:
        from ped2 import _git_commit

        doc = {"benchmark": "ped2-parts", "command": "python " + shlex.join(sys.argv),
               "commit": _git_commit(), "results": [str(r) for r in args.results], "n_runs": len(runs),
               "metric": "AUROC of each clip's anomalous frames against all normal test frames; micro = "
                         "all anomalous frames (the published micro AUROC)",
               "chosen_on_test_labels": [], "table": table, "per_run": runs}
        Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
