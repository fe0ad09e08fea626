"""Cost of the annotated video: H.264 through PyAV (what ``statevad score`` writes now) against OpenCV's
MPEG-4 Part 2 writer (what it wrote before, which browsers do not play), as a ratio measured in one run.

Both writers get the same annotated frames (the demo clip's frames, boxes drawn, strip and caption) in
interleaved rounds, so machine load hits both alike; each round writes, finishes and reads back one file per
codec. Reported: median wall and CPU seconds per frame of each (annotation included: it is the same work in
both), their ratios, and the file sizes.

    python benchmarks/video_codec.py                   # -> results/video_codec.json
    python benchmarks/video_codec.py --rounds 5 --frames 60
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from statevad import video as vid
from statevad import visualize as viz
from statevad.files import atomic_write_json
from statevad.io import read_frames

HERE = Path(__file__).resolve().parent
CLIP = HERE.parent / "src" / "statevad" / "data" / "demo" / "test" / "02.mp4"


def _write(frames: list[np.ndarray], dest: Path, fallback: bool) -> tuple[float, float, int]:
    """Wall and process-CPU seconds (all threads: libx264 encodes on several) to encode + finish + read back
    ``frames`` with one codec; the file size."""
    real = vid.pick_encoder
    if fallback:
        vid.pick_encoder = lambda: None  # the OpenCV mp4v path, exactly as the writer falls back to it
    try:
        h, w = frames[0].shape[:2]
        t0, c0 = time.perf_counter(), time.process_time()
        wr = viz.AnnotatedVideoWriter(dest, 10.0, (w, h), threshold=2.0)
        hist: list[float] = []
        for i, f in enumerate(frames):
            hist.append(float(np.sin(i / 5.0) * 3))
            wr.write(f, np.array([[20, 30, 60, 110], [150, 40, 190, 120]], np.float32),
                     np.array([hist[-1], 1.0]), np.asarray(hist))
        wr.close()
        return time.perf_counter() - t0, time.process_time() - c0, dest.stat().st_size
    finally:
        vid.pick_encoder = real


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--out", default=str(HERE / "results" / "video_codec.json"))
    a = ap.parse_args(argv)
    frames = list(read_frames(str(CLIP), max_frames=a.frames))
    picked = vid.pick_encoder()
    times: dict[str, list[float]] = {"browser": [], "mp4v": []}
    cpu: dict[str, list[float]] = {"browser": [], "mp4v": []}
    sizes: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            order = ("browser", "mp4v") if r % 2 == 0 else ("mp4v", "browser")  # interleaved rounds
            for name in order:
                t, c, size = _write(frames, Path(tmp) / f"{name}{r}.mp4", fallback=name == "mp4v")
                times[name].append(t / len(frames))
                cpu[name].append(c / len(frames))
                sizes[name] = size
    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    commit = subprocess.run(["git", "-C", str(HERE), "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    doc = {
        "command": "python benchmarks/video_codec.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "git_commit": commit, "machine": platform.platform(), "python": platform.python_version(),
        "settings": {"rounds": a.rounds, "frames": len(frames), "size": list(frames[0].shape[1::-1]),
                     "browser_encoder": picked[0] if picked else None,
                     "browser_options": picked[1] if picked else None},
        "s_per_frame_median": med, "s_per_frame_all": times, "cpu_s_per_frame_median": med_cpu,
        "cpu_s_per_frame_all": cpu, "bytes": sizes,
        "ratio_browser_over_mp4v": med["browser"] / med["mp4v"],
        "cpu_ratio_browser_over_mp4v": med_cpu["browser"] / med_cpu["mp4v"],
    }
    atomic_write_json(a.out, doc)
    print(f"{picked[0] if picked else 'none'}: {med['browser'] * 1e3:.2f} ms/frame, mp4v: "
          f"{med['mp4v'] * 1e3:.2f} ms/frame (wall ratio {doc['ratio_browser_over_mp4v']:.2f}, CPU ratio "
          f"{doc['cpu_ratio_browser_over_mp4v']:.2f}); "
          f"sizes {sizes}; -> {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
