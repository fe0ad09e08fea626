"""Soak run of `statevad serve`: N cameras for M minutes on this machine, loopback only.

Half the cameras are looped video files read at their frame rate, half are MJPEG streams served here on
127.0.0.1 (as IP cameras send them); every camera is scored at the service's default settings (the model's
preset: detector boxes, test-time perturbation, the automatic threshold). Samples the service's RSS and the
cameras' status every ``--every`` seconds, stops it with SIGTERM, and checks that every event the workers
found is in the database. Writes a results JSON (command, git commit, settings, per-camera fps, latency p95,
drops, events, RSS drift).

    python benchmarks/serve_soak.py --cameras 4 --minutes 10 --out benchmarks/results/serve-soak-4cam.json

Without ``--model`` a network of the ped2 preset (``--size``, default tiny) with random weights and plausible
statistics is scored: its cost per frame is that of a trained one (the weights do not change the work), its
events are not meaningful. The clips are the bundled Ped2 sample (statevad/data/demo).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from serve_fixtures import free_port, serve_mjpeg, stop_mjpeg  # noqa: E402

from statevad.io import read_frames  # noqa: E402

DEMO = REPO / "src" / "statevad" / "data" / "demo"


def _model(path: Path, size: str) -> Path:
    import torch

    from statevad.checkpoint import save_checkpoint
    from statevad.config import get_preset, with_model_size
    from statevad.model import STATE

    p = get_preset("ped2")
    p.model = with_model_size(p.model, size)
    torch.manual_seed(0)
    save_checkpoint(path, STATE(p.model).eval(), p,
                    {"raw_mean": 50.0, "raw_std": 20.0, "flow_mean": 500.0, "flow_std": 300.0,
                     "motion_mean": 1.0, "motion_std": 1.0}, None)
    return path


def _rss_mb(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", text).group(1)) / 1024  # type: ignore[union-attr]


def _get(url: str) -> object:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cameras", type=int, default=4)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    ap.add_argument("--model", default=None, help="model file (default: ped2 preset, random weights)")
    ap.add_argument("--size", default="tiny", help="network size of the default model (tiny, fast, paper)")
    ap.add_argument("--out", required=True, help="results JSON")
    ap.add_argument("--note", default=None, help="a note stored in the JSON (e.g. the machine was shared)")
    args = ap.parse_args()
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    work = Path(tempfile.mkdtemp(prefix="serve-soak-"))
    model = Path(args.model) if args.model else _model(work / "model.pt", args.size)
    files = sorted((DEMO / "test").glob("*.mp4")) + sorted((DEMO / "train").glob("*.mp4"))
    servers, cams = [], []
    for i in range(args.cameras):
        clip = files[i % len(files)]
        if i % 2 == 0:
            cams.append((f"file{i}", str(clip), True))
        else:
            srv = serve_mjpeg(list(read_frames(clip)), fps=10)
            servers.append(srv)
            cams.append((f"mjpeg{i}", f"http://127.0.0.1:{srv.server_address[1]}/cam.mjpg", False))
    port = free_port()
    lines = [f'[serve]\nport = {port}\ndata = "{work / "data"}"\n']
    for name, src, loop in cams:
        lines.append(f'[[camera]]\nname = "{name}"\nsource = "{src}"\nmodel = "{model}"\n'
                     f"loop = {str(loop).lower()}\n" + ("" if loop else "fps = 10.0\n"))
    cfg = work / "cameras.toml"
    cfg.write_text("\n".join(lines))
    log = work / "serve.log"
    t0 = time.monotonic()
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "statevad", "serve", "--config", str(cfg)], stdout=fh,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    while True:
        try:
            _get(url + "/healthz")
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() - t0 > 300:
                raise SystemExit(f"serve did not start:\n{log.read_text()}") from None
            time.sleep(1)
    start_s = time.monotonic() - t0
    samples = []
    t_end = time.monotonic() + args.minutes * 60
    while time.monotonic() < t_end:
        time.sleep(args.every)
        cams_now = _get(url + "/api/cameras")
        samples.append({"t_s": round(time.monotonic() - t0, 1), "rss_mb": round(_rss_mb(proc.pid), 1),
                        "cameras": cams_now})
        print(f"{samples[-1]['t_s']:7.1f} s  rss {samples[-1]['rss_mb']:.0f} MB  " + "  ".join(
            f"{c['name']} {c['state']} {c['fps']:.2f}fps p95 {c['latency_p95_s']} drop {c['dropped']} "
            f"ev {c['events']}" for c in cams_now), flush=True)
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(600)
    for srv in servers:
        stop_mjpeg(srv)
    text = log.read_text()
    found = {m[0]: (int(m[1]), int(m[2]), int(m[3])) for m in re.findall(
        r"camera (\S+): (\d+) frames scored, (\d+) events found, (\d+) frames dropped", text)}
    stored = re.search(r"recorder: (\d+) failed writes; database holds (\d+) events", text)
    n_found = sum(v[1] for v in found.values())
    rss = np.array([s["rss_mb"] for s in samples])
    ts = np.array([s["t_s"] for s in samples])
    half = len(rss) // 2
    slope = float(np.polyfit(ts[half:], rss[half:], 1)[0] * 60) if len(rss) - half >= 2 else None
    last = {c["name"]: c for c in samples[-1]["cameras"]} if samples else {}
    per_cam = {}
    for name, *_ in cams:
        fps = [c["fps"] for s in samples[half:] for c in s["cameras"] if c["name"] == name]
        p95 = [c["latency_p95_s"] for s in samples[half:] for c in s["cameras"]
               if c["name"] == name and c["latency_p95_s"] is not None]
        frames, events, dropped = found.get(name, (None, None, None))
        per_cam[name] = {"fps_mean_second_half": round(float(np.mean(fps)), 3) if fps else None,
                         "latency_p95_s_max_second_half": max(p95) if p95 else None,
                         "latency_p95_s_last": last.get(name, {}).get("latency_p95_s"),
                         "frames_scored": frames, "events_found": events, "frames_dropped": dropped,
                         "state_last": last.get(name, {}).get("state")}
    load = os.getloadavg()
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "git_commit": commit,
        "settings": {"cameras": args.cameras, "minutes": args.minutes, "sources": [c[1].split("/")[-1] if c[2]
                     else "mjpeg@127.0.0.1 10 fps" for c in cams],
                     "model": str(args.model or f"ped2 preset, {args.size} network, random weights"),
                     "serve defaults": "detector boxes (bundled NanoDet), perturbation on, auto threshold, "
                     "queue 8, batch_frames 4, 1 torch thread per camera"},
        "machine": {"cpu_count": os.cpu_count(), "loadavg_at_end": [round(x, 2) for x in load],
                    "note": args.note},
        "startup_s": round(start_s, 1),
        "exit_code_after_sigterm": code,
        "rss_mb": {"first": float(rss[0]) if len(rss) else None, "second_half_start": float(rss[half])
                   if len(rss) else None, "last": float(rss[-1]) if len(rss) else None,
                   "max": float(rss.max()) if len(rss) else None,
                   "drift_mb_per_min_second_half": round(slope, 3) if slope is not None else None},
        "events": {"found_by_workers": n_found, "stored": int(stored.group(2)) if stored else None,
                   "failed_writes": int(stored.group(1)) if stored else None,
                   "none_lost": bool(stored) and int(stored.group(2)) == n_found
                   and int(stored.group(1)) == 0},
        "cameras": per_cam,
        "samples": samples,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=1))
    return 0 if code == 0 and result["events"]["none_lost"] else 1


if __name__ == "__main__":
    sys.exit(main())
