"""Memory probe of `statevad serve`'s camera workers: RSS, malloc's counts, Python's allocations over time.

Runs N camera workers in this process (no HTTP server: the scoring, recording and database path of the
service) on looped copies of the bundled Ped2 sample clips, and samples every ``--every`` seconds: the
process RSS, glibc's ``mallinfo2`` (bytes handed out vs. kept free inside malloc's arenas) and the frames
scored. With ``--tracemalloc`` it also lists the source lines whose Python-visible allocations grew most
between the first third of the run and its end. Writes a results JSON.

    python benchmarks/serve_memprobe.py --cameras 1 --minutes 3 --out /tmp/probe-1cam.json
    python benchmarks/serve_memprobe.py --cameras 4 --minutes 3 --out /tmp/probe-4cam.json

Reading it: RSS that grows while ``in_use_mb`` stays flat is memory malloc keeps (fragmentation, arenas,
the trim threshold that :mod:`statevad.allocator` raises), not objects that are still referenced; growth in
``in_use_mb`` that tracemalloc does not see is native (torch, onnxruntime, OpenCV). The default model is the
soak's (``benchmarks/serve_soak.py``): the ped2 preset with random weights.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "benchmarks"), str(REPO / "tests")]

from serve_fixtures import serve_mjpeg, stop_mjpeg  # noqa: E402
from serve_soak import DEMO, _model  # noqa: E402

from statevad.io import read_frames  # noqa: E402


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                 "fsmblks", "uordblks", "fordblks", "keepcost")]


def _mallinfo() -> dict[str, float] | None:
    """glibc's totals over all arenas (None elsewhere): in use vs. free but kept, in MB."""
    try:
        fn = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = _MallInfo2
    m = fn()
    mb = 1024 * 1024
    return {"heap_mb": round(m.arena / mb, 1), "mmap_mb": round(m.hblkhd / mb, 1),
            "in_use_mb": round((m.uordblks + m.hblkhd) / mb, 1), "free_kept_mb": round(m.fordblks / mb, 1)}


def _rss_mb() -> float:
    text = Path("/proc/self/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", text).group(1)) / 1024  # type: ignore[union-attr]


def _slope_per_min(ts: np.ndarray, ys: np.ndarray) -> float | None:
    half = len(ys) // 2
    return round(float(np.polyfit(ts[half:], ys[half:], 1)[0] * 60), 2) if len(ys) - half >= 2 else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cameras", type=int, default=1)
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    ap.add_argument("--paced", action="store_true", help="read the files at their frame rate (the soak's "
                    "looped cameras; frames are dropped when scoring is slower), else every frame is scored")
    ap.add_argument("--mjpeg", action="store_true", help="every second camera an MJPEG stream served here at "
                    "10 frames/s (as in the soak run) instead of a looped file")
    ap.add_argument("--boxes", default=None, help="box source (default: the model's, i.e. the detector)")
    ap.add_argument("--no-perturb", action="store_true")
    ap.add_argument("--trim-every", type=float, default=None, metavar="S",
                    help="release malloc's free memory every S seconds, as `statevad serve` does "
                    "(default: the service's release_memory_s; 0 = never)")
    ap.add_argument("--malloc", choices=["serve", "keep"], default="serve",
                    help="serve: large blocks mapped and returned when freed, as `statevad serve` sets it "
                    "(statevad.allocator.return_large_blocks); keep: every other statevad command's setting "
                    "(keep_freed_memory)")
    ap.add_argument("--mmap-mib", type=float, default=None,
                    help="with --malloc serve: the mmap threshold in MiB (default: return_large_blocks')")
    ap.add_argument("--tracemalloc", action="store_true", help="also trace Python allocations (slower)")
    ap.add_argument("--model", default=None, help="model file (default: ped2 preset, random weights)")
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--out", required=True, help="results JSON")
    args = ap.parse_args()

    import torch

    from statevad.allocator import keep_freed_memory, return_large_blocks
    from statevad.serve.config import CameraConfig, ServeConfig
    from statevad.serve.db import Database
    from statevad.serve.media import MediaStore
    from statevad.serve.worker import CameraWorker, MemoryReleaser, Recorder

    malloc_kept = keep_freed_memory()  # as the CLI does before any command (STATEVAD_MALLOC=default: not)
    kw = {} if args.mmap_mib is None else {"mmap_threshold": int(args.mmap_mib * (1 << 20))}
    malloc_serve = return_large_blocks(**kw) if args.malloc == "serve" else False  # as `statevad serve`
    torch.set_num_threads(1)  # as `statevad serve` (torch_threads = 1)
    work = Path(tempfile.mkdtemp(prefix="serve-memprobe-"))
    model = Path(args.model) if args.model else _model(work / "model.pt", args.size)
    files = sorted((DEMO / "test").glob("*.mp4")) + sorted((DEMO / "train").glob("*.mp4"))
    db = Database(f"sqlite:///{work / 'e.db'}")
    rec = Recorder()
    rec.start()
    workers, servers = [], []
    for i in range(args.cameras):
        clip = files[i % len(files)]
        if args.mjpeg and i % 2 == 1:
            servers.append(serve_mjpeg(list(read_frames(clip)), fps=10))
            source, fps = f"http://127.0.0.1:{servers[-1].server_address[1]}/cam.mjpg", 10.0
        else:
            source, fps = str(clip), None
        cam = CameraConfig(name=f"cam{i}", source=source, model=str(model), loop=True, fps=fps,
                           realtime=args.paced, boxes=args.boxes, perturb=not args.no_perturb)
        workers.append(CameraWorker(cam, db, MediaStore(work / "media"), rec))
    if args.tracemalloc:
        tracemalloc.start(8)
    trim_s = ServeConfig().release_memory_s if args.trim_every is None else args.trim_every
    releaser = MemoryReleaser(trim_s) if trim_s > 0 else None
    for w in workers:
        w.start()
    if releaser is not None:
        releaser.start()
    t0 = time.monotonic()
    samples, snap_early = [], None
    t_end = t0 + args.minutes * 60
    while time.monotonic() < t_end:
        time.sleep(args.every)
        t = time.monotonic() - t0
        s = {"t_s": round(t, 1), "rss_mb": round(_rss_mb(), 1), "malloc": _mallinfo(),
             "frames": [w.status.frames for w in workers],
             "dropped": [w.snapshot()["dropped"] for w in workers],
             "events": [w.status.events for w in workers], "threads": threading.active_count()}
        samples.append(s)
        print(f"{s['t_s']:7.1f} s  rss {s['rss_mb']:.0f} MB  malloc {s['malloc']}  frames {s['frames']}  "
              f"dropped {s['dropped']}", flush=True)
        if args.tracemalloc and snap_early is None and t >= args.minutes * 60 / 3:
            snap_early = tracemalloc.take_snapshot()
    growth = []
    if args.tracemalloc and snap_early is not None:
        diff = tracemalloc.take_snapshot().compare_to(snap_early, "traceback")
        for st in diff[:10]:
            growth.append({"kib": round(st.size_diff / 1024, 1), "count": st.count_diff,
                           "where": [f"{f.filename.replace(str(REPO) + '/', '')}:{f.lineno}"
                                     for f in st.traceback[:4]]})
    if releaser is not None:
        releaser.stop()
    for w in workers:
        w.stop()
    for w in workers:
        w.join(60)
    rec.close()
    db.close()
    for srv in servers:
        stop_mjpeg(srv)
    ts = np.array([s["t_s"] for s in samples])
    rss = np.array([s["rss_mb"] for s in samples])
    frames = np.array([sum(s["frames"]) for s in samples])
    in_use = np.array([s["malloc"]["in_use_mb"] for s in samples]) if samples and samples[0]["malloc"] \
        else None
    half = len(samples) // 2
    d_frames = int(frames[-1] - frames[half]) if len(samples) > 1 else 0
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "git_commit": subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                                     text=True).stdout.strip(),
        "settings": {"cameras": args.cameras, "minutes": args.minutes, "paced": args.paced,
                     "mjpeg (every second camera)": args.mjpeg, "release_memory_s": trim_s,
                     "boxes": args.boxes or "the model's (detector)", "perturb": not args.no_perturb,
                     "malloc_kept (statevad.allocator)": malloc_kept,
                     "malloc_large_blocks_returned (serve)": malloc_serve, "mmap_mib": args.mmap_mib,
                     "STATEVAD_MALLOC": os.environ.get("STATEVAD_MALLOC"),
                     "MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX"),
                     "model": str(args.model or f"ped2 preset, {args.size} network, random weights")},
        "machine": {"cpu_count": os.cpu_count(), "loadavg_at_end": [round(x, 2) for x in os.getloadavg()]},
        "frames_scored": int(frames[-1]) if len(frames) else 0,
        "rss_mb": {"first": float(rss[0]), "last": float(rss[-1]), "max": float(rss.max()),
                   "drift_mb_per_min_second_half": _slope_per_min(ts, rss),
                   "drift_mb_per_100_frames_second_half":
                       round(float(rss[-1] - rss[half]) / d_frames * 100, 2) if d_frames else None}
        if len(rss) else None,
        "malloc_in_use_drift_mb_per_min_second_half": _slope_per_min(ts, in_use) if in_use is not None
        else None,
        "tracemalloc_growth_top10": growth,
        "samples": samples,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
