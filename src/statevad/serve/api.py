"""The HTTP API and the dashboard: FastAPI on uvicorn, served by the same process as the cameras.

Everything under ``/api`` and ``/metrics`` needs the API token when one is set (``Authorization: Bearer
TOKEN``, or the HttpOnly cookie that ``POST /api/login`` sets for the dashboard, so the token never travels in
a URL: URLs end up in logs and browser histories). Every parameter is typed and bounded (bad ones are 422);
media are served only from paths the database holds, resolved inside the media folder, with their own types.
The access log written here names the method, the path and the status, never a query string or a header.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator, Callable
from importlib import resources
from typing import Any, Protocol

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from pydantic import BaseModel, Field

from statevad import __version__
from statevad.serve.db import Database
from statevad.serve.media import MEDIA_TYPES, MediaStore

log = logging.getLogger("statevad.serve.access")
COOKIE = "statevad_token"
CAMERA = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
MAX_ID = 2**62
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; media-src 'self'; "
                               "style-src 'self'; script-src 'self'; connect-src 'self'; "
                               "frame-ancestors 'none'",
}


class Camera(Protocol):
    def snapshot(self) -> dict[str, Any]: ...
    def points_after(self, seq: int) -> list[tuple[int, int, float, float]]: ...
    def latest_jpeg(self) -> bytes | None: ...


class Backend(Protocol):
    """What the API needs from the service (tests give a fake one)."""

    workers: dict[str, Camera]
    db: Database
    media: MediaStore
    token: str | None

    def stopping(self) -> bool: ...


class Ack(BaseModel):
    by: str = Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$",
                    description="who acknowledges the event (shown in the event list)")


class Login(BaseModel):
    token: str = Field(min_length=1, max_length=1024)


def create_app(svc: Backend) -> FastAPI:
    app = FastAPI(title="statevad serve", version=__version__, docs_url=None, redoc_url=None,
                  description="Cameras, events and live scores of a statevad monitoring service.")

    def auth(request: Request) -> None:
        if not svc.token:
            return
        header = request.headers.get("authorization", "")
        given = header[7:] if header[:7].lower() == "bearer " else request.cookies.get(COOKIE, "")
        if not given or not secrets.compare_digest(given.encode(), svc.token.encode()):
            raise HTTPException(401, "missing or wrong API token", headers={"WWW-Authenticate": "Bearer"})

    guarded = [Depends(auth)]

    @app.middleware("http")
    async def access(request: Request, call_next: Callable[..., Any]) -> Response:
        t0 = time.perf_counter()
        response = await call_next(request)
        for k, v in SECURITY_HEADERS.items():
            response.headers.setdefault(k, v)
        log.info("%s %s %d %.1f ms", request.method, request.url.path, response.status_code,
                 (time.perf_counter() - t0) * 1000)
        return response

    def worker(name: str) -> Camera:
        w = svc.workers.get(name)
        if w is None:
            raise HTTPException(404, f"no camera named {name!r}")
        return w

    def event_or_404(event_id: int) -> dict[str, Any]:
        ev = svc.db.get_event(event_id)
        if ev is None:
            raise HTTPException(404, f"no event {event_id}")
        return ev

    def media(rel: str | None) -> FileResponse:
        path = svc.media.resolve(rel)
        if path is None:
            raise HTTPException(404, "no such media")
        return FileResponse(path, media_type=MEDIA_TYPES[path.suffix],
                            headers={"Cache-Control": "private, max-age=3600"})

    camera_q = Query(None, pattern=CAMERA, description="camera name")
    event_path = Path(ge=1, le=MAX_ID)

    # -- pages ----------------------------------------------------------------------------------
    static = resources.files("statevad.serve") / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(str(static / "index.html"), media_type="text/html")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse(_openapi_page(app.openapi()))

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/api/login", summary="Check the token and set the dashboard's session cookie")
    def login(body: Login, response: Response) -> dict[str, bool]:
        if svc.token and not secrets.compare_digest(body.token.encode(), svc.token.encode()):
            raise HTTPException(401, "wrong API token")
        response.set_cookie(COOKIE, body.token, httponly=True, samesite="strict", path="/")
        return {"ok": True}

    @app.get("/api/auth", summary="Whether a token is needed, and whether this request carries it")
    def auth_state(request: Request) -> dict[str, bool]:
        try:
            auth(request)
            ok = True
        except HTTPException:
            ok = False
        return {"token_required": bool(svc.token), "authorized": ok}

    # -- cameras --------------------------------------------------------------------------------
    @app.get("/api/cameras", dependencies=guarded, summary="Every camera and its status")
    def cameras() -> list[dict[str, Any]]:
        return [w.snapshot() for w in svc.workers.values()]

    @app.get("/api/cameras/{name}", dependencies=guarded, summary="One camera's status")
    def camera(name: str = Path(pattern=CAMERA)) -> dict[str, Any]:
        return worker(name).snapshot()

    @app.get("/api/cameras/{name}/frame.jpg", dependencies=guarded, summary="The latest scored frame, boxed",
             response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
    def frame(name: str = Path(pattern=CAMERA)) -> Response:
        data = worker(name).latest_jpeg()
        if data is None:
            raise HTTPException(404, "no frame scored yet")
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    @app.get("/api/cameras/{name}/scores", dependencies=guarded, summary="Per-second score summaries")
    def scores(name: str = Path(pattern=CAMERA), since: float | None = Query(None, ge=0, allow_inf_nan=False),
               until: float | None = Query(None, ge=0, allow_inf_nan=False),
               limit: int = Query(600, ge=1, le=86400)) -> list[dict[str, Any]]:
        worker(name)
        return svc.db.list_scores(name, since, until, limit)

    # -- events ---------------------------------------------------------------------------------
    @app.get("/api/events", dependencies=guarded, summary="Events, newest first, with filters")
    def list_events(camera: str | None = camera_q, acked: bool | None = None,
                    min_score: float | None = Query(None, allow_inf_nan=False),
                    since: float | None = Query(None, ge=0, allow_inf_nan=False),
                    until: float | None = Query(None, ge=0, allow_inf_nan=False),
                    limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0, le=10**7)
                    ) -> list[dict[str, Any]]:
        return svc.db.list_events(camera=camera, acked=acked, min_score=min_score, since=since, until=until,
                                  limit=limit, offset=offset)

    @app.get("/api/events/{event_id}", dependencies=guarded, summary="One event")
    def get_event(event_id: int = event_path) -> dict[str, Any]:
        return event_or_404(event_id)

    @app.post("/api/events/{event_id}/ack", dependencies=guarded, summary="Acknowledge an event")
    def ack(body: Ack, event_id: int = event_path) -> dict[str, Any]:
        event_or_404(event_id)
        ev = svc.db.ack(event_id, body.by)
        assert ev is not None
        return ev

    @app.get("/api/events/{event_id}/thumb.jpg", dependencies=guarded, summary="Peak-frame thumbnail",
             response_class=FileResponse, responses={200: {"content": {"image/jpeg": {}}}})
    def thumb(event_id: int = event_path) -> FileResponse:
        return media(event_or_404(event_id)["thumb"])

    @app.get("/api/events/{event_id}/clip.mp4", dependencies=guarded, summary="H.264 clip around the peak",
             response_class=FileResponse, responses={200: {"content": {"video/mp4": {}}}})
    def clip(event_id: int = event_path) -> FileResponse:
        return media(event_or_404(event_id)["clip"])

    @app.get("/api/events/{event_id}/crops/{k}.jpg", dependencies=guarded,
             summary="Crop of the k-th most anomalous object at the peak",
             response_class=FileResponse, responses={200: {"content": {"image/jpeg": {}}}})
    def crop(event_id: int = event_path, k: int = Path(ge=0, le=63)) -> FileResponse:
        objs = event_or_404(event_id)["objects"]
        if k >= len(objs):
            raise HTTPException(404, f"event {event_id} has {len(objs)} object crop(s)")
        return media(objs[k].get("crop"))

    # -- live -----------------------------------------------------------------------------------
    @app.get("/api/live", dependencies=guarded, summary="Live scores and camera status (server-sent events)",
             response_class=StreamingResponse, responses={200: {"content": {"text/event-stream": {}}}})
    async def live(request: Request, camera: str | None = camera_q) -> StreamingResponse:
        if camera:
            worker(camera)  # 404 for an unknown camera
        names = [camera] if camera else list(svc.workers)
        return StreamingResponse(_live(request, svc, names), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    # -- metrics --------------------------------------------------------------------------------
    registry = CollectorRegistry()
    registry.register(_Collector(svc))

    @app.get("/metrics", dependencies=guarded, summary="Prometheus metrics", response_class=Response,
             responses={200: {"content": {"text/plain": {}}}})
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


async def _live(request: Request, svc: Backend, names: list[str]) -> AsyncIterator[str]:
    seen = {n: 0 for n in names}
    last_status = 0.0
    yield "retry: 2000\n\n"
    while not svc.stopping():
        if await request.is_disconnected():
            return
        for name in names:
            pts = svc.workers[name].points_after(seen[name])
            if pts:
                seen[name] = pts[-1][0]
                doc = {"camera": name, "points": [[f, round(t, 3), _num(s)] for _q, f, t, s in pts[-200:]]}
                yield f"event: scores\ndata: {json.dumps(doc)}\n\n"
        if time.monotonic() - last_status >= 1.0:
            last_status = time.monotonic()
            doc = {"cameras": [svc.workers[n].snapshot() for n in names]}
            yield f"event: status\ndata: {json.dumps(doc, default=_num)}\n\n"
        await asyncio.sleep(0.25)


def _num(v: Any) -> Any:
    """JSON has no NaN or infinity: an empty frame's score goes out as null."""
    return v if isinstance(v, (int, float)) and math.isfinite(v) else None


class _Collector:
    """Prometheus metrics read from the workers at scrape time (nothing to keep in sync)."""

    def __init__(self, svc: Backend) -> None:
        self.svc = svc

    def collect(self) -> Any:
        snaps = [w.snapshot() for w in self.svc.workers.values()]
        gauges = {
            "statevad_camera_up": ("1 when the camera is being scored", lambda s: 1.0 if s["up"] else 0.0),
            "statevad_camera_fps": ("frames scored per second (recent)", lambda s: s["fps"]),
            "statevad_camera_latency_p50_seconds": ("arrival to score, median", lambda s: s["latency_p50_s"]),
            "statevad_camera_latency_p95_seconds": ("arrival to score, 95th percentile",
                                                    lambda s: s["latency_p95_s"]),
        }
        for name, (doc, get) in gauges.items():
            g = GaugeMetricFamily(name, doc, labels=["camera"])
            for s in snaps:
                v = get(s)
                if v is not None:
                    g.add_metric([s["name"]], float(v))
            yield g
        counters = {"statevad_frames": ("frames scored", "frames"),
                    "statevad_dropped_frames": ("live frames dropped (scorer behind)", "dropped"),
                    "statevad_events": ("events found", "events"),
                    "statevad_reconnects": ("source reconnections", "reconnects")}
        for name, (doc, key) in counters.items():
            c = CounterMetricFamily(name, doc, labels=["camera"])
            for s in snaps:
                c.add_metric([s["name"]], float(s[key]))
            yield c


def _openapi_page(spec: dict[str, Any]) -> str:
    """A self-contained page of the OpenAPI document (no CDN script: the service may be offline)."""
    rows = []
    for path, ops in spec.get("paths", {}).items():
        for method, op in ops.items():
            params = ", ".join(f"{p['name']} ({p['in']})" for p in op.get("parameters", []))
            rows.append(f"<tr><td><code>{method.upper()}</code></td><td><code>{html.escape(path)}</code></td>"
                        f"<td>{html.escape(op.get('summary', ''))}</td><td>{html.escape(params)}</td></tr>")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>statevad serve API</title>"
            "<link rel='stylesheet' href='/static/style.css'></head><body class='docs'>"
            f"<h1>statevad serve API {html.escape(spec['info']['version'])}</h1>"
            "<p>The machine-readable document: <a href='/openapi.json'>/openapi.json</a>. With a token, send "
            "<code>Authorization: Bearer TOKEN</code>.</p><table><tr><th>method</th><th>path</th>"
            "<th>what</th><th>parameters</th></tr>" + "".join(rows) + "</table></body></html>")
