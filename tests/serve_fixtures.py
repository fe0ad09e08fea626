"""Shared pieces of the serve tests: a free port, an MJPEG camera on 127.0.0.1, a running service."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

CHROMIUM = Path("/usr/bin/chromium")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_mjpeg(frames: list[np.ndarray], fps: float) -> ThreadingHTTPServer:
    """An MJPEG camera (multipart/x-mixed-replace, as IP cameras send it) looping ``frames`` at ``fps``."""
    import cv2

    jpgs = [cv2.imencode(".jpg", f)[1].tobytes() for f in frames]

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            i = 0
            try:
                while not getattr(self.server, "stopped", False):
                    j = jpgs[i % len(jpgs)]
                    i += 1
                    self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                     + str(len(j)).encode() + b"\r\n\r\n" + j + b"\r\n")
                    time.sleep(1 / fps)
            except (BrokenPipeError, ConnectionResetError):
                pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def stop_mjpeg(srv: ThreadingHTTPServer) -> None:
    srv.stopped = True  # type: ignore[attr-defined]
    srv.shutdown()
    srv.server_close()


class Served:
    """``statevad serve --config CFG`` as a child process, its log in ``log``."""

    def __init__(self, config: Path, port: int, log: Path) -> None:
        self.port, self.log = port, log
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
        self.fh = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "statevad", "serve", "--config", str(config)],
                                     stdout=self.fh, stderr=subprocess.STDOUT, env=env)
        self.url = f"http://127.0.0.1:{port}"

    def wait_ready(self, timeout: float = 240) -> None:
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise AssertionError(f"serve did not answer within {timeout} s:\n{self.log.read_text()}")

    def stop(self, timeout: float = 180) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.fh.close()
        return int(self.proc.returncode)
