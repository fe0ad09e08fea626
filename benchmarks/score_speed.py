"""End-to-end speed of ``statevad score`` on a 360x240 Ped2 test video, by stage, per model size.

For every size in ``config.MODEL_SIZES`` and with/without the test-time perturbation, an *untrained* STATE
network (timing does not depend on the weights) is saved as a checkpoint with unit training statistics, and
the streaming scorer runs on the first N frames of a Ped2 test clip exactly as ``statevad score`` does
(decode -> boxes -> flow -> cubes -> network -> outputs incl. annotated.mp4). Stage times come from the
scorer's own counters; frames/s is frames scored / wall time of the scoring loop (model loading excluded).

    python benchmarks/score_speed.py                       # all sizes, both modes -> results/score_speed.json
    python benchmarks/score_speed.py --sizes fast --frames 30 --modes perturb

Run it on an otherwise idle machine if you can: every stage is CPU-bound.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from statevad import stream
from statevad.config import MODEL_SIZES, get_preset, with_model_size
from statevad.files import atomic_write_json
from statevad.model import STATE
from statevad.training import save_checkpoint

HERE = Path(__file__).resolve().parent
DEFAULT_VIDEO = HERE.parent.parent / "shared" / "data" / "ped2" / "video" / "testing" / "01.mkv"
# Frames per run: enough for a stable rate, few enough that the slowest configuration stays ~1-2 minutes.
DEFAULT_FRAMES = {("paper", True): 8, ("paper", False): 16, ("fast", True): 16, ("fast", False): 30,
                  ("tiny", True): 20, ("tiny", False): 40}


def make_checkpoint(size: str, path: Path, seed: int = 0) -> None:
    """An untrained model of ``size`` with the Ped2 preset and unit statistics (z = raw SSE)."""
    preset = get_preset("ped2")
    preset.model = with_model_size(preset.model, size)
    torch.manual_seed(seed)
    model = STATE(preset.model).eval()
    stats = {"raw_mean": 0.0, "raw_std": 1.0, "flow_mean": 0.0, "flow_std": 1.0}
    save_checkpoint(path, model, preset, stats, None)


def run_one(video: str, size: str, perturb: bool, frames: int, tmp: Path, device: str,
            batch_frames: int = 4, bf16: bool = False) -> dict:
    ckpt = tmp / f"{size}.pt"
    if not ckpt.exists():
        make_checkpoint(size, ckpt)
    out = tmp / f"out_{size}_{int(perturb)}"
    opts = stream.ScoreOptions(max_frames=frames, perturb=perturb, device=device,
                               batch_frames=batch_frames, bf16=bf16 or None, progress=False)
    res = stream.score(video, ckpt, out, opts)
    n = res.n_frames
    stages = {k: round(1000 * v / n, 1) for k, v in res.timing.items()}
    loop_s = sum(res.timing.values())
    return {"size": size, "perturb": perturb, "batch_frames": batch_frames, "bf16": bf16,
            "frames": n, "objects": res.n_objects,
            "objects_per_frame": round(res.n_objects / n, 2), "wall_s": round(res.wall_s, 2),
            "frames_per_s": round(n / loop_s, 3), "cpu_s_per_frame": round(res.cpu_s / n, 3),
            "ms_per_frame_by_stage": stages,
            "network_ms_per_object": round(1000 * res.timing["network"] / max(res.n_objects, 1), 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--video", default=str(DEFAULT_VIDEO))
    ap.add_argument("--sizes", nargs="+", default=list(MODEL_SIZES), choices=list(MODEL_SIZES))
    modes = ["perturb", "no-perturb"]
    ap.add_argument("--modes", nargs="+", default=modes, choices=modes)
    ap.add_argument("--frames", type=int, default=None, help="frames per run (default: per configuration)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-frames", type=int, default=4, help="as `statevad score --batch-frames`")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast, as `statevad score --bf16`")
    ap.add_argument("--out", default=str(HERE / "results" / "score_speed.json"))
    args = ap.parse_args(argv)
    if not Path(args.video).is_file():
        print(f"video not found: {args.video} (pass --video)", file=sys.stderr)
        return 2
    rows = []
    with tempfile.TemporaryDirectory(prefix="score_speed.") as td:
        for size in args.sizes:
            for mode in args.modes:
                perturb = mode == "perturb"
                n = args.frames or DEFAULT_FRAMES[(size, perturb)]
                t0 = time.perf_counter()
                row = run_one(args.video, size, perturb, n, Path(td), args.device,
                              args.batch_frames, args.bf16)
                print(json.dumps(row), f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
                rows.append(row)
    doc = {
        "command": "python benchmarks/score_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "video": args.video, "device": args.device,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(), "loadavg_at_end": os.getloadavg()},
        "results": rows,
    }
    atomic_write_json(args.out, doc)
    print(f"{'size':6} {'perturb':7} {'fps':>6} {'cpu_s/f':>7} {'obj/f':>5}  "
          "ms/frame: decode boxes flow cubes network outputs")
    for r in rows:
        s = r["ms_per_frame_by_stage"]
        print(f"{r['size']:6} {str(r['perturb']):7} {r['frames_per_s']:6.2f} {r['cpu_s_per_frame']:7.2f} "
              f"{r['objects_per_frame']:5.1f}  "
              f"{s['decode']:6.1f} {s['boxes']:6.1f} {s['flow']:5.1f} {s['cubes']:5.1f} {s['network']:8.1f} "
              f"{s['outputs']:6.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
