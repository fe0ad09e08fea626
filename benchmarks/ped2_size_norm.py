"""Ped2, issue 18: does normalising the raw error by the object's size (perspective) help? Label-free.

    python benchmarks/ped2_size_norm.py --work /tmp/w_ped2 --run /tmp/learned-s0 \
        --out benchmarks/results/ped2-size-norm-seed0.json

The raw error grows with the box height on normal cubes (docs/ANALYSIS.md section 4). Fit, on the training
subsample of ``errors.npz`` (``benchmarks/ped2_learned.py``; cubes the model was trained on), a line
log(error) = a + b * log(box height) per branch, take the residual as the normalised error and z-score
it on the held-out clips 08 and 16. Nothing is chosen on test labels (fixed a priori: log-log line, eps 0,
weights 1); the test labels are read only for AUROC.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ped2 import _git_commit  # noqa: E402  (the Ped2 benchmarks' commit + dirty flag)

from statevad.checkpoint import load_checkpoint  # noqa: E402
from statevad.metrics import clip_bounds, evaluate  # noqa: E402
from statevad.scoring import frame_scores  # noqa: E402
from statevad.workdir import open_split  # noqa: E402


def log_height(box: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(np.asarray(box, np.float64)[:, 3] - np.asarray(box, np.float64)[:, 1], 1.0))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", required=True)
    ap.add_argument("--run", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    d = np.load(Path(args.run) / "errors.npz")
    _model, ck = load_checkpoint(Path(args.run) / "model_ema.pt")
    st = ck.stats
    te = open_split(args.work, "test")
    bounds = clip_bounds(te.clips)

    def report(z: np.ndarray) -> dict[str, float]:
        r = evaluate(frame_scores(d["test_frame"], z, len(te.labels)), te.labels, bounds)
        return {"micro": round(r["micro_auroc"], 4), "macro": round(r["macro_auroc"], 4)}

    z = {}
    fits = {}
    for branch in ("raw", "flow"):
        x = log_height(d["trsub_box"])
        y = np.log(np.maximum(d[f"trsub_{branch}_0"], 1e-9))
        b, a = np.polyfit(x, y, 1)
        fits[branch] = {"intercept": float(a), "slope": float(b)}

        def resid(e: np.ndarray, box: np.ndarray, a: float = a, b: float = b) -> np.ndarray:
            return np.log(np.maximum(e, 1e-9)) - (a + b * log_height(box))

        h = resid(d[f"hold_{branch}_0"], d["hold_box"])
        z[f"{branch}_size"] = (resid(d[f"test_{branch}_0"], d["test_box"]) - h.mean()) / h.std()
        z[branch] = (d[f"test_{branch}_0"] - st[f"{branch}_mean"]) / st[f"{branch}_std"]
    hs = d["hold_speed"]
    z["speed"] = (d["test_speed"] - hs.mean()) / hs.std()
    rows = {name: report(v) for name, v in (
        ("raw (published z)", z["raw"]), ("raw, size-normalised", z["raw_size"]),
        ("flow (published z)", z["flow"]), ("flow, size-normalised", z["flow_size"]),
        ("raw + flow (published)", z["raw"] + z["flow"]),
        ("raw size-normalised + flow", z["raw_size"] + z["flow"]),
        ("raw + flow, both size-normalised", z["raw_size"] + z["flow_size"]),
        ("raw size-normalised + flow + speed", z["raw_size"] + z["flow"] + z["speed"]),
        ("speed (no learning)", z["speed"]))}
    out = {"benchmark": "ped2-size-norm", "command": "python " + shlex.join(sys.argv),
           "commit": _git_commit(),
           "run": args.run,
           "settings": {"epsilon": 0.0, "fit": "log error = a + b log height, training subsample",
                        "z": "held-out clips 08, 16"},
           "fits": fits, "chosen_on_test_labels": [], "rows": rows}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    for k, v in rows.items():
        print(f"{k:40s} micro {v['micro']:.4f} macro {v['macro']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
