"""The serve API against a fake service (no model): the token, parameter checks, media paths and types,
metrics, live scores, and the bind rule of `statevad serve`."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import fails_one_line, tiny_model

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install -e '.[serve]')")
pytest.importorskip("httpx", reason="httpx (the dev extra) is needed by FastAPI's test client")

from fastapi.testclient import TestClient  # noqa: E402

from statevad.serve.api import create_app  # noqa: E402
from statevad.serve.db import Database, EventRow  # noqa: E402
from statevad.serve.media import MediaStore, jpeg, write_clip  # noqa: E402

TOKEN = "s3cret-token-abcdefghijklmnop"


class FakeCamera:
    def __init__(self, name: str) -> None:
        self.name = name

    def snapshot(self) -> dict:
        return {
            "name": self.name,
            "state": "up",
            "up": True,
            "error": None,
            "frames": 10,
            "dropped": 2,
            "events": 1,
            "reconnects": 0,
            "fps": 5.0,
            "latency_p50_s": 0.2,
            "latency_p95_s": 0.4,
            "last_score": 1.5,
            "last_frame_time": time.time(),
            "threshold": 1.0,
            "source_fps": 10.0,
        }

    def points_after(self, seq: int) -> list:
        return [(s, s - 1, 1000.0 + s, float(s)) for s in range(seq + 1, 4)]

    def latest_jpeg(self) -> bytes:
        return jpeg(np.zeros((24, 32, 3), np.uint8))


class FakeService:
    def __init__(self, root: Path, token: str | None) -> None:
        self.workers = {"a": FakeCamera("a")}
        self.db = Database(f"sqlite:///{root / 'db.sqlite'}")
        self.media = MediaStore(root / "media")
        self.token = token
        self.checks = 0

    def stopping(self) -> bool:
        self.checks += 1
        return self.checks > 2  # the live stream ends after two rounds


def _event(svc: FakeService, thumb: str | None, clip: str | None, crop: str | None) -> int:
    return svc.db.add_event(
        EventRow(
            "a",
            3,
            9,
            5,
            1000.0,
            1001.0,
            4.2,
            1.0,
            thumb,
            clip,
            [{"box": [1, 2, 3, 4], "score": 4.2, "crop": crop}],
        )
    )


@pytest.fixture()
def served(tmp_path):
    svc = FakeService(tmp_path, TOKEN)
    frame = np.full((32, 48, 3), 80, np.uint8)
    thumb, crops, clip = svc.media.save_event(
        "a", "k1", jpeg(frame), [jpeg(frame[:8, :8])], [frame] * 5, 10.0
    )
    good = _event(svc, thumb, clip, crops[0])
    (tmp_path / "secret.jpg").write_bytes(b"not for the API")
    outside = (tmp_path / "secret.jpg").resolve()
    (svc.media.root / "a" / "link.jpg").symlink_to(outside)
    bad = _event(svc, "../secret.jpg", str(outside), "a/link.jpg")  # what a tampered database could hold
    client = TestClient(create_app(svc))
    client.headers["Authorization"] = f"Bearer {TOKEN}"
    yield client, svc, good, bad
    client.close()
    svc.db.close()


def test_wrong_or_missing_token_is_401(served):
    client, _svc, good, _bad = served
    bare = TestClient(client.app)
    for path in (
        "/api/cameras",
        f"/api/events/{good}",
        f"/api/events/{good}/thumb.jpg",
        "/metrics",
        "/api/live",
    ):
        assert bare.get(path).status_code == 401, path
        assert bare.get(path, headers={"Authorization": "Bearer wrong-token-0123456789"}).status_code == 401
    assert bare.post(f"/api/events/{good}/ack", json={"by": "x"}).status_code == 401
    assert bare.post("/api/login", json={"token": "wrong"}).status_code == 401
    assert bare.get("/").status_code == 200  # the page itself holds no data
    assert bare.post("/api/login", json={"token": TOKEN}).status_code == 200  # sets the HttpOnly cookie
    assert bare.get("/api/cameras").status_code == 200
    assert client.get("/api/cameras").json()[0]["name"] == "a"


MALFORMED = [
    "/api/events/abc",
    "/api/events/0",
    "/api/events/-1",
    "/api/events/99999999999999999999",
    "/api/events?limit=0",
    "/api/events?limit=100000",
    "/api/events?offset=-1",
    "/api/events?min_score=nan",
    "/api/events?since=inf",
    "/api/events?camera=../etc",
    "/api/events?acked=maybe",
    "/api/cameras/a/scores?limit=0",
    "/api/events/1/crops/-1.jpg",
    "/api/events/1/crops/x.jpg",
    "/api/cameras/..%2F..%2Fetc%2Fpasswd/frame.jpg",
    "/api/live?camera=a%00b",
]


def test_malformed_parameters_are_4xx(served):
    client = served[0]
    for path in MALFORMED:
        code = client.get(path).status_code
        assert 400 <= code < 500, (path, code)


def test_no_request_reaches_outside_the_media_folder(served, tmp_path):
    client, svc, good, bad = served
    before = sorted(p for p in tmp_path.rglob("*") if "media" not in p.parts and p.suffix != ".sqlite")
    for path in (
        f"/api/events/{bad}/thumb.jpg",
        f"/api/events/{bad}/clip.mp4",
        f"/api/events/{bad}/crops/0.jpg",
        "/static/../../secret.jpg",
        "/static/%2e%2e/%2e%2e/secret.jpg",
        "/static/..%2f..%2fsecret.jpg",
        "/../secret.jpg",
        "/api/events/1/crops/1.jpg",
    ):
        r = client.get(path)
        assert r.status_code in (404, 422) and b"not for the API" not in r.content, (path, r.status_code)
    for body in ({}, {"by": ""}, {"by": "x" * 129}, {"by": "a\nb"}, {"by": 3}):
        assert client.post(f"/api/events/{good}/ack", json=body).status_code == 422, body
    assert client.post("/api/events/12345/ack", json={"by": "x"}).status_code == 404
    after = sorted(p for p in tmp_path.rglob("*") if "media" not in p.parts and p.suffix != ".sqlite")
    assert before == after and (tmp_path / "secret.jpg").read_bytes() == b"not for the API"
    assert svc.db.get_event(good)["acked_at"] is None


def test_media_types_and_ack(served):
    client, _svc, good, _bad = served
    for path, kind in (
        (f"/api/events/{good}/thumb.jpg", "image/jpeg"),
        (f"/api/events/{good}/clip.mp4", "video/mp4"),
        (f"/api/events/{good}/crops/0.jpg", "image/jpeg"),
        ("/api/cameras/a/frame.jpg", "image/jpeg"),
    ):
        r = client.get(path)
        assert r.status_code == 200 and r.headers["content-type"] == kind, path
        assert r.headers["x-content-type-options"] == "nosniff" and len(r.content) > 100
    assert client.get(f"/api/events/{good}/clip.mp4").content[4:8] == b"ftyp"
    ev = client.post(f"/api/events/{good}/ack", json={"by": "night shift"}).json()
    assert ev["acked"] and ev["acked_by"] == "night shift"
    assert [e["id"] for e in client.get("/api/events?acked=true").json()] == [good]
    assert client.get("/api/events?camera=b").json() == []
    assert client.get("/api/events?min_score=5").json() == []


def test_metrics_live_and_docs(served):
    client, _svc, _good, _bad = served
    text = client.get("/metrics").text
    assert (
        'statevad_camera_up{camera="a"} 1.0' in text and 'statevad_dropped_frames_total{camera="a"}' in text
    )
    body = client.get("/api/live?camera=a").text
    assert "event: scores" in body and '"camera": "a"' in body and "event: status" in body
    assert client.get("/api/live?camera=zz").status_code == 404
    assert "/api/events/{event_id}/ack" in client.get("/openapi.json").json()["paths"]
    assert "statevad serve API" in client.get("/docs").text


def test_token_never_in_logs(served, caplog):
    client, *_ = served
    with caplog.at_level(logging.DEBUG):
        client.get("/api/cameras")
        client.cookies.set("statevad_token", TOKEN)
        client.get("/api/events")
        client.post("/api/login", json={"token": TOKEN})
        client.get("/api/events?token=" + TOKEN)  # even a token wrongly put in a URL is not logged
    server = [r.getMessage() for r in caplog.records if r.name.startswith(("statevad", "uvicorn", "fastapi"))]
    assert any("GET /api/cameras 200" in m for m in server)
    assert not [m for m in server if TOKEN in m]


def test_non_loopback_bind_needs_a_token(tmp_path, capsys, monkeypatch):
    model = str(tiny_model(tmp_path / "m.pt"))
    monkeypatch.delenv("STATEVAD_TOKEN", raising=False)
    base = ["serve", "--camera", "a=0", "--model", model, "--data", str(tmp_path / "d")]
    fails_one_line([*base, "--host", "0.0.0.0"], capsys, "0.0.0.0", "token")
    fails_one_line([*base, "--host", "192.168.1.10"], capsys, "token")
    (tmp_path / "short").write_text("abc\n")
    fails_one_line([*base, "--host", "0.0.0.0", "--token-file", str(tmp_path / "short")], capsys, "shorter")
    fails_one_line([*base, "--token-file", str(tmp_path / "absent")], capsys, "--token-file")
    fails_one_line(["serve", "--camera", "a/b=0", "--model", model], capsys, "camera name")
    fails_one_line(["serve", "--camera", "a=0"], capsys, "--model")
    fails_one_line(["serve"], capsys, "no camera")
    cfg = tmp_path / "c.toml"
    cfg.write_text('[[camera]]\nname = "a"\nsource = "0"\nmodel = "m.pt"\nqueue = "x"\n')
    fails_one_line(["serve", "--config", str(cfg)], capsys, "queue")
    # the scoring fields are checked by `statevad score`'s own option check, named as the file's fields
    for field, value, said in (("border_min_size", "-1.0", "border_min_size"),
                               ("false_alarms_per_hour", "0.0", "false_alarms_per_hour"),
                               ("max_objects", "-3", "max_objects"),
                               ("threshold", "2.0\nfalse_alarms_per_hour = 1.0", "false_alarms_per_hour")):
        cfg.write_text(f'[[camera]]\nname = "a"\nsource = "0"\nmodel = "{model}"\n{field} = {value}\n')
        fails_one_line(["serve", "--config", str(cfg)], capsys, said)
    cfg.write_text('[serve]\nrelease_memory_s = -1.0\n'
                   f'[[camera]]\nname = "a"\nsource = "0"\nmodel = "{model}"\n')
    fails_one_line(["serve", "--config", str(cfg)], capsys, "release_memory_s")
    assert not (tmp_path / "d").exists()  # nothing written by a refused start
    assert os.environ.get("STATEVAD_TOKEN") is None


def test_media_store_writes_playable_clip(tmp_path):
    import cv2

    store = MediaStore(tmp_path / "m")
    frames = [np.full((37, 51, 3), i * 20, np.uint8) for i in range(6)]  # odd sizes: made even
    write_clip(tmp_path / "m" / "c.mp4", frames, 12.5)
    cap = cv2.VideoCapture(str(tmp_path / "m" / "c.mp4"))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    assert n == 6
    assert store.resolve("c.mp4") is not None and store.resolve("../m/c.mp4") is not None
    assert (
        store.resolve("/etc/passwd") is None
        and store.resolve("c.txt") is None
        and store.resolve(None) is None
    )
