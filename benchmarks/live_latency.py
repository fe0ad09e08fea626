"""Live-source latency (issue 20): Ped2 test frames served as an MJPEG stream on 127.0.0.1 at a camera's
rate, scored by ``statevad score URL`` (the command a user runs), latency and drops read from events.json.

A separate process plays the camera: it sends the frames of the chosen Ped2 test clips (their order, looped
if needed) as ``multipart/x-mixed-replace`` JPEGs, one every 1/fps s on a fixed schedule (a late frame does
not shift the next ones), as IP cameras do. For each configuration (``realtime.py``'s names: ``fast`` is
``config.FAST_SCORE``), ``statevad score http://127.0.0.1:PORT/cam.mjpg --fps FPS --max-frames N --no-video``
runs as a subprocess with those ``--set`` values; its events.json gives the latency (frame arrival -> score
written) p50/p95/max, the frames read and the frames dropped by the live-source policy (docs/REALTIME.md).

    python benchmarks/live_latency.py --model MODEL --configs fast --frames 300 \\
        --out benchmarks/results/realtime-live-latency.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ped2 import _git_commit  # the Ped2 benchmarks' commit + dirty flag
from realtime import CONFIGS, PED2

from statevad.files import atomic_write_json


def _camera(clips: list[str], fps: float, port_q: Any) -> None:
    """The MJPEG camera process: serves the clips' frames at ``fps`` to every client, looped."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import cv2

    jpgs: list[bytes] = []
    for clip in clips:
        cap = cv2.VideoCapture(clip)
        while True:
            ok, f = cap.read()
            if not ok:
                break
            jpgs.append(cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes())
        cap.release()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            t0, i = time.monotonic(), 0
            try:
                while True:
                    j = jpgs[i % len(jpgs)]
                    self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                     + str(len(j)).encode() + b"\r\n\r\n" + j + b"\r\n")
                    self.wfile.flush()
                    i += 1
                    time.sleep(max(0.0, t0 + i / fps - time.monotonic()))  # a fixed schedule
            except (BrokenPipeError, ConnectionResetError):
                pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    port_q.put((srv.server_address[1], len(jpgs)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    while True:
        time.sleep(3600)


def score_live(url: str, model: str, sets: list[str], fps: float, frames: int, out: Path) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "statevad", "score", url, "--model", model, "--out", str(out), "--fps",
           f"{fps:g}", "--max-frames", str(frames), "--no-video", "--quiet"]
    for s in sets:
        cmd += ["--set", s]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"statevad score failed ({proc.returncode}): {proc.stderr[-2000:]}")
    ev = json.loads((out / "events.json").read_text())
    keep = ("frames scored", "objects scored", "ended", "latency (frame arrival -> score written)",
            "frames read from the live source", "frames dropped (live source faster than scoring)",
            "dropped frames (source indices, first-last)", "objects scored every k-th frame",
            "detector every k-th frame (boxes moved by the flow in between)", "perturbation epsilon",
            "objects carried (network errors from the track's last scored frame)",
            "live source behind: frames pushed at each k (objects scored every k-th frame)")
    res: dict[str, Any] = {k: ev[k] for k in keep if k in ev}
    read = ev.get("frames read from the live source") or 0
    res["dropped_fraction"] = round(ev.get("frames dropped (live source faster than scoring)", 0) / read, 4) \
        if read else None
    res["command_wall_s"] = round(wall, 1)
    res["summary_line"] = proc.stdout.strip().splitlines()[0] if proc.stdout.strip() else ""
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="a model file written by `statevad train`")
    # the configurations made of `statevad score --set` values only (threads= is realtime.py's own)
    cli_configs = [k for k, v in CONFIGS.items() if not any(x.startswith("threads=") for x in v)]
    ap.add_argument("--configs", nargs="+", default=["fast"], choices=cli_configs)
    ap.add_argument("--clips", default="01,02", help="Ped2 test clips the camera plays, in order (looped)")
    ap.add_argument("--fps", type=float, default=10.0, help="the camera's rate (Ped2's own: 10)")
    ap.add_argument("--frames", type=int, default=300, help="frames scored per configuration")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    clips = [str(PED2 / "video" / "testing" / f"{c}.mkv") for c in args.clips.split(",") if c]
    doc: dict[str, Any] = {
        "benchmark": "realtime-live-latency",
        "command": "python benchmarks/live_latency.py "
                   + shlex.join(argv if argv is not None else sys.argv[1:]),
        "git_commit": _git_commit(), "model": args.model,
        "configs": {k: CONFIGS[k] for k in args.configs},
        "source": {"kind": "MJPEG over HTTP on 127.0.0.1 (multipart/x-mixed-replace), a separate process",
                   "clips": clips, "fps": args.fps, "jpeg_quality": 95},
        "frames_per_config": args.frames, "chosen_on_test_labels": [],
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "loadavg_at_start": os.getloadavg()},
        "results": {},
    }
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    cam = ctx.Process(target=_camera, args=(clips, args.fps, q), daemon=True)
    cam.start()
    try:
        port, n = q.get(timeout=120)
        doc["source"]["frames_in_loop"] = n
        url = f"http://127.0.0.1:{port}/cam.mjpg"
        with tempfile.TemporaryDirectory(prefix="live-latency.") as td:
            for name in args.configs:
                res = score_live(url, args.model, CONFIGS[name], args.fps, args.frames, Path(td) / name)
                res["loadavg_after"] = os.getloadavg()
                doc["results"][name] = res
                lat = res.get("latency (frame arrival -> score written)", {})
                print(f"{name}: latency p50 {lat.get('p50_s')} s, p95 {lat.get('p95_s')} s, dropped "
                      f"{res.get('frames dropped (live source faster than scoring)')} of "
                      f"{res.get('frames read from the live source')} read", file=sys.stderr)
                atomic_write_json(args.out, doc)
    finally:
        cam.terminate()
        cam.join(10)
    doc["machine"]["loadavg_at_end"] = os.getloadavg()
    atomic_write_json(args.out, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
