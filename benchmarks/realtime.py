"""Real-time scoring (issue 20): today's streaming path and the new ones side by side, in one process.

Speed: the same first ``--frames`` frames of one Ped2 test video (optionally resized, e.g. to Avenue's
640x360) are scored by each configuration in interleaved rounds (A B C A B C ...), so a shared, noisy
machine slows all of them alike; the ratio to ``today`` is taken per round and its median reported with the
spread. Configurations (``--set`` values of ``statevad score``, the same model file for all):

* ``today``   -- the path before issue 20: no overlap, every cube every frame (score.overlap=false);
* ``default`` -- the current defaults;
* ``overlap`` -- the defaults with the network pass overlapped with the next frames' boxes and flow (off by
  default until the signal tests pass with it);
* ``fast``    -- the documented fast settings (config.FAST_SCORE: cubes every 3rd frame, no perturbation,
  overlapped).

Accuracy (``--auroc``): all 12 Ped2 test clips scored by each configuration through ``statevad score``
(frame micro AUROC of the concatenated frame scores against the official labels) and by ``statevad test`` on
a prepared work directory with the same model. Per-stage times come from the scorer's counters.

    python benchmarks/realtime.py --model /tmp/h20/model.pt --frames 60 --rounds 3 \\
        --out benchmarks/results/realtime-ped2.json
    python benchmarks/realtime.py --model /tmp/h20/model.pt --size 640x360 --configs today fast \\
        --out benchmarks/results/realtime-640x360.json
    python benchmarks/realtime.py --model /tmp/h20/model.pt --auroc --work /tmp/w_ped2 --frames 0 \\
        --out benchmarks/results/realtime-auroc.json
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from statevad import stream
from statevad.config import fast_score_sets
from statevad.files import atomic_write_json
from statevad.metrics import frame_auroc

HERE = Path(__file__).resolve().parent
PED2 = HERE.parent.parent / "shared" / "data" / "ped2"
CONFIGS: dict[str, list[str]] = {
    "today": ["score.overlap=false", "score.score_every=1"],
    "default": [],
    "overlap": ["score.overlap=true"],
    "fast": fast_score_sets(),
}


def untrained_model(path: Path) -> str:
    """A tiny untrained network with the Ped2 preset and plausible statistics (speed does not depend on the
    weights; the box and flow stages are the preset's: NanoDet + motion boxes, DIS flow)."""
    from statevad.checkpoint import save_checkpoint
    from statevad.config import get_preset, with_model_size
    from statevad.model import STATE

    p = get_preset("ped2")
    p.model = with_model_size(p.model, "tiny")
    torch.manual_seed(0)
    save_checkpoint(path, STATE(p.model).eval(), p,
                    {"raw_mean": 50.0, "raw_std": 20.0, "flow_mean": 500.0, "flow_std": 300.0,
                     "motion_mean": 1.0, "motion_std": 1.0}, None)
    return str(path)


def resized_copy(video: Path, size: tuple[int, int], frames: int, tmp: Path) -> Path:
    """The first ``frames`` frames of ``video`` resized to ``size`` (W, H), as a lossless-enough MJPEG."""
    out = tmp / f"{video.stem}_{size[0]}x{size[1]}.avi"
    cap = cv2.VideoCapture(str(video))
    fps = cap.get(cv2.CAP_PROP_FPS) or 10.0
    wr = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    n = 0
    while n < frames or frames <= 0:
        ok, f = cap.read()
        if not ok:
            break
        wr.write(cv2.resize(f, size, interpolation=cv2.INTER_LINEAR))
        n += 1
    cap.release()
    wr.release()
    return out


def run(video: str, model: str, sets: list[str], frames: int, out: Path, labels: np.ndarray | None = None
        ) -> dict[str, Any]:
    opts = stream.ScoreOptions(max_frames=frames or None, progress=False, labels=labels, overwrite=True)
    res = stream.score(video, model, out, opts, sets=sets)
    n = max(res.n_frames, 1)
    return {"frames": res.n_frames, "objects": res.n_objects, "loop_s": round(res.loop_s, 3),
            "frames_per_s": round(res.n_frames / max(res.loop_s, 1e-9), 3),
            "cpu_s_per_frame": round(res.cpu_s / n, 4),
            "ms_per_frame_by_stage": {k: round(1000 * v / n, 1) for k, v in res.timing.items()},
            "latency": res.latency, "scores": res.scores}


def speed(args: argparse.Namespace, video: str, tmp: Path) -> dict[str, Any]:
    rounds: list[dict[str, Any]] = []
    for r in range(args.rounds):
        row = {}
        for name in args.configs:
            t0 = time.perf_counter()
            res = run(video, args.model, CONFIGS[name], args.frames, tmp / f"out_{name}")
            res.pop("scores")
            row[name] = res
            print(f"round {r + 1} {name}: {res['frames_per_s']:.2f} frames/s "
                  f"({time.perf_counter() - t0:.0f} s, load {os.getloadavg()[0]:.1f})", file=sys.stderr)
        rounds.append(row)
    summary: dict[str, Any] = {}
    for name in args.configs:
        fps = [row[name]["frames_per_s"] for row in rounds]
        summary[name] = {"frames_per_s_median": round(statistics.median(fps), 3), "frames_per_s": fps}
        if "today" in args.configs and name != "today":
            ratio = [row[name]["frames_per_s"] / row["today"]["frames_per_s"] for row in rounds]
            summary[name]["ratio_to_today_median"] = round(statistics.median(ratio), 3)
            summary[name]["ratio_to_today"] = [round(x, 3) for x in ratio]
    return {"rounds": rounds, "summary": summary}


def auroc(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Micro AUROC over the 12 test clips: each streaming configuration, and `statevad test`."""
    labels = np.load(PED2 / "gt" / "frame_labels_test.npy").astype(np.int64)
    clips = sorted((PED2 / "video" / "testing").glob("*.mkv"))
    out: dict[str, Any] = {}
    for name in args.configs:
        scores = []
        for clip in clips:
            res = run(str(clip), args.model, CONFIGS[name], 0, tmp / f"auc_{name}")
            scores.append(res["scores"])
            print(f"auroc {name} {clip.name}: {res['frames']} frames", file=sys.stderr)
        s = np.concatenate(scores)
        out[name] = {"micro_auroc": round(float(frame_auroc(labels, s)), 5), "frames": int(len(s))}
    if args.work:
        from statevad.evaluation import run_test

        m = run_test(args.work, args.model, out=tmp / "test", progress=False)
        out["statevad test"] = {"micro_auroc": round(float(m["micro_auroc"]), 5)} if "micro_auroc" in m \
            else {"metrics": {k: v for k, v in m.items() if "auroc" in k.lower()}}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="a model file written by `statevad train`, or 'untrained' "
                    "(a tiny untrained Ped2-preset network: speed only)")
    ap.add_argument("--video", default=str(PED2 / "video" / "testing" / "01.mkv"))
    ap.add_argument("--size", help="resize the input to WxH first (e.g. 640x360, Avenue's size)")
    ap.add_argument("--frames", type=int, default=60, help="frames per speed run (0: the whole video)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--auroc", action="store_true", help="score all 12 Ped2 test clips (no speed rounds)")
    ap.add_argument("--work", help="with --auroc: a prepared Ped2 work dir for `statevad test`")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    commit = subprocess.run(["git", "-C", str(HERE), "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    doc: dict[str, Any] = {
        "command": "python benchmarks/realtime.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "git_commit": commit, "model": args.model, "configs": {k: CONFIGS[k] for k in args.configs},
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(), "loadavg_at_start": os.getloadavg()},
    }
    with tempfile.TemporaryDirectory(prefix="realtime.") as td:
        tmp = Path(td)
        if args.model == "untrained":
            args.model = untrained_model(tmp / "untrained.pt")
        if args.auroc:
            doc["auroc"] = auroc(args, tmp)
        else:
            video = args.video
            if args.size:
                w, h = (int(v) for v in args.size.lower().split("x"))
                video = str(resized_copy(Path(video), (w, h), args.frames, tmp))
            doc["input"] = {"video": args.video, "size": args.size or "native", "frames": args.frames}
            doc["speed"] = speed(args, video, tmp)
    doc["machine"]["loadavg_at_end"] = os.getloadavg()
    atomic_write_json(args.out, doc)
    print(doc.get("speed", {}).get("summary") or doc.get("auroc"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
