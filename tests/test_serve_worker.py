"""A camera that cannot be reached is shown down and retried with back-off, without touching the others; a
webhook is retried a bounded number of times; the live drop policy (stream.live) counts what it drops."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from helpers import tiny_model
from serve_fixtures import free_port

pytest.importorskip("sqlalchemy", reason="the serve extra is not installed (pip install -e '.[serve]')")


def _wait(pred, timeout: float = 60.0) -> bool:
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if pred():
            return True
        time.sleep(0.1)
    return False


def test_unreachable_camera_is_down_and_retried(tmp_path):
    from statevad.serve.config import CameraConfig
    from statevad.serve.db import Database
    from statevad.serve.media import MediaStore
    from statevad.serve.worker import CameraWorker, Recorder

    model = tiny_model(tmp_path / "m.pt")
    db = Database(f"sqlite:///{tmp_path / 'e.db'}")
    rec = Recorder()
    rec.start()
    cam = CameraConfig(name="gone", source=f"http://127.0.0.1:{free_port()}/cam.mjpg", model=str(model))
    w = CameraWorker(cam, db, MediaStore(tmp_path / "media"), rec, reconnect_max_s=0.5)
    w.start()
    try:
        assert _wait(lambda: w.status.reconnects >= 2), w.snapshot()
        snap = w.snapshot()
        assert snap["state"] == "down" and not snap["up"] and "cannot open stream" in snap["error"]
    finally:
        w.stop()
        w.join(30)
        rec.close()
        db.close()
    assert not w.is_alive()


def test_bad_model_fails_one_camera_only(tmp_path):
    from statevad.serve.config import CameraConfig
    from statevad.serve.db import Database
    from statevad.serve.media import MediaStore
    from statevad.serve.worker import CameraWorker, Recorder

    (tmp_path / "bad.pt").write_bytes(b"not a model")
    db = Database(f"sqlite:///{tmp_path / 'e.db'}")
    w = CameraWorker(CameraConfig(name="x", source="0", model=str(tmp_path / "bad.pt")), db,
                     MediaStore(tmp_path / "media"), Recorder())
    w.run()  # returns: the camera is marked failed, nothing raised into the service
    assert w.snapshot()["state"] == "failed" and w.snapshot()["error"]
    db.close()


def test_feed_drops_evenly_when_behind(tmp_path):
    import cv2

    from statevad.serve.feed import Feed

    path = tmp_path / "v.avi"
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 50, (32, 24))
    for i in range(40):
        out.write(np.full((24, 32, 3), i * 5, np.uint8))
    out.release()
    feed = Feed(str(path), paced=True, queue=2)
    got = []
    for a in feed:
        got.append(int(a.frame[0, 0, 0]))
        time.sleep(0.1)  # a slow scorer: 10 frames/s against 50 arriving
    feed.close()
    assert feed.dropped > 0 and len(got) + feed.dropped == 40
    assert got == sorted(got)  # in order (the live reader of `statevad score` thins evenly)
    whole = Feed(str(path), paced=False, queue=2)
    assert len(list(whole)) == 40 and whole.dropped == 0  # an unpaced file drops nothing


def test_webhook_retries_then_delivers(tmp_path):
    from statevad.serve.webhook import Webhook

    got, calls = [], {"n": 0}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_a: object) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802 - the http.server API
            calls["n"] += 1
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if calls["n"] == 1:  # the first attempt fails
                self.send_response(500)
            else:
                got.append(json.loads(body))
                self.send_response(204)
            self.end_headers()

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    hook = Webhook(f"http://127.0.0.1:{srv.server_address[1]}/hook", retries=2, backoff_s=0.05)
    hook.start()
    hook.notify("event.end", {"id": 7, "camera": "a"})
    assert _wait(lambda: hook.sent == 1, 20)
    assert got == [{"type": "event.end", "id": 7, "camera": "a"}] and calls["n"] == 2
    hook.close()
    srv.shutdown()
    srv.server_close()
    dead = Webhook(f"http://127.0.0.1:{free_port()}/hook", retries=1, backoff_s=0.05)
    dead.start()
    dead.notify("event.start", {"camera": "a"})
    assert _wait(lambda: dead.failed == 1, 20)  # bounded: 1 + 1 attempts, then given up
    dead.close()


def test_memory_releaser_runs_until_stopped():
    import platform

    from statevad.serve.worker import MemoryReleaser

    r = MemoryReleaser(0.05)
    r.start()
    glibc = platform.libc_ver()[0] == "glibc"
    assert _wait(lambda: r.n_released >= 2 or not glibc, 10)
    r.stop()
    r.join(5)
    assert not r.is_alive()
