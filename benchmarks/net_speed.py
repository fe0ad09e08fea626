"""Network cost per cube on this CPU: batch size, perturbation (eps > 0 needs a backward pass) and bf16.

    python benchmarks/net_speed.py --model MODEL --work /tmp/w_ped2 --out benchmarks/results/net-speed.json

Interleaved rounds over the same 256 Ped2 test cubes (a shared machine slows every setting alike); per
setting, ms per cube of ``scoring.perturbed_errors`` on the BatchNorm-folded copy of the model, as
``statevad score`` runs it. Decides what the fast preset may use: bf16 autocast only pays on CPUs with
native bf16.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from ped2 import _git_commit  # the Ped2 benchmarks' commit + dirty flag

from statevad.checkpoint import load_checkpoint
from statevad.model import inference_copy
from statevad.scoring import perturbed_errors
from statevad.workdir import open_split


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, _ = load_checkpoint(args.model)
    model = inference_copy(model)
    te = open_split(args.work, "test")
    raw, flow = np.asarray(te.raw[:256]), np.asarray(te.flow[:256])
    settings = [(bs, eps, bf) for bs in (16, 64, 256) for eps in (0.01, 0.0) for bf in (False, True)
                if not (bf and bs != 64)]
    times: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for bs, eps, bf in settings:
            n_cubes = 128 if bs < 256 else 256
            t = time.perf_counter()
            for a in range(0, n_cubes, bs):
                perturbed_errors(model, raw[a:a + bs], flow[a:a + bs], epsilon=eps, bf16=bf)
            times.setdefault(f"batch {bs}, eps {eps}, {'bf16' if bf else 'fp32'}", []).append(
                (time.perf_counter() - t) / n_cubes * 1000)
    rows = {k: {"ms_per_cube_median": round(statistics.median(v), 2), "ms_per_cube": [round(x, 2) for x in v]}
            for k, v in times.items()}
    cpuinfo = Path("/proc/cpuinfo")
    flags = cpuinfo.read_text().split("flags")[1].split("\n")[0] if cpuinfo.exists() else ""
    out = {"benchmark": "net-speed", "command": "python " + shlex.join(sys.argv), "commit": _git_commit(),
           "model": args.model, "threads": args.threads, "rounds": args.rounds,
           "machine": {"platform": platform.platform(), "torch": torch.__version__,
                       "native_bf16": any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))},
           "rows": rows}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    for k, v in rows.items():
        print(f"{k:28s} {v['ms_per_cube_median']:7.2f} ms/cube")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
