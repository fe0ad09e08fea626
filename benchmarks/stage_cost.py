"""What one frame's box and flow stages cost on this CPU, single-threaded (where the main thread's time goes).

    python benchmarks/stage_cost.py --out benchmarks/results/stage-cost.json

The first ``--frames`` frames of one Ped2 test video, at its own size and resized to 640x360 (Avenue's): per
frame, the detector's pass (``BoxExtractor.detect``: NanoDet + its decoding and filters), the motion boxes
(spec 3.3, outside the detections) and the DIS flow of the Ped2 preset, OpenCV and onnxruntime on one thread
each, as ``statevad score`` runs them. ms per frame, mean over the frames.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from ped2 import _git_commit  # the Ped2 benchmarks' commit + dirty flag

from statevad.boxes import BoxExtractor, motion_boxes
from statevad.config import get_preset
from statevad.files import atomic_write_json
from statevad.flow import FlowEstimator

HERE = Path(__file__).resolve().parent
VIDEO = HERE.parent.parent / "shared" / "data" / "ped2" / "video" / "testing" / "01.mkv"


def read(video: Path, n: int, size: tuple[int, int] | None) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(video))
    frames: list[np.ndarray] = []
    while len(frames) < n:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(cv2.resize(f, size, interpolation=cv2.INTER_LINEAR) if size else f)
    cap.release()
    return frames


def stage_ms(frames: list[np.ndarray]) -> dict[str, float]:
    p = get_preset("ped2")
    ext, flow = BoxExtractor(p.box, "detector+motion"), FlowEstimator(p.flow)
    total = {"detector": 0.0, "motion_boxes": 0.0, "flow": 0.0}
    for i in range(1, len(frames) - 1):
        prev, cur, nxt = frames[i - 1], frames[i], frames[i + 1]
        t0 = time.perf_counter()
        dets = ext.detect(cur)[0]
        t1 = time.perf_counter()
        motion_boxes(prev, cur, nxt, dets, p.box)
        t2 = time.perf_counter()
        flow(cur, nxt)
        t3 = time.perf_counter()
        total["detector"] += t1 - t0
        total["motion_boxes"] += t2 - t1
        total["flow"] += t3 - t2
    n = max(len(frames) - 2, 1)
    return {k: round(1000 * v / n, 2) for k, v in total.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--video", type=Path, default=VIDEO)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    if not args.video.is_file():
        raise SystemExit(f"{args.video} not found: this benchmark needs ../shared/data/ped2")
    cv2.setNumThreads(1)
    given = argv if argv is not None else sys.argv[1:]
    doc = {"command": "python benchmarks/stage_cost.py " + shlex.join(given),
           "git_commit": _git_commit(), "chosen_on_test_labels": [],
           "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                       "loadavg_at_start": os.getloadavg()},
           "unit": "ms per frame, one thread"}
    for name, size in (("native", None), ("640x360", (640, 360))):
        doc[name] = stage_ms(read(args.video, args.frames, size))
        print(name, doc[name], file=sys.stderr)
    doc["machine"]["loadavg_at_end"] = os.getloadavg()
    atomic_write_json(args.out, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
