"""One camera's worker: frames in, scores out, events into the database with their media.

A worker thread loads its model once, then makes passes over its source (:class:`statevad.serve.feed.Feed`):
each pass gets a fresh streaming engine and event tracker (a reconnected stream or a looped file starts a new
segment: flows must never pair the last frame of one pass with the first of the next), numbered on from the
frames before it. A source that cannot be opened or is lost marks the camera down and is retried with
exponential back-off; any failure stays inside this thread, so one camera never takes the others with it.

The scoring settings are those of ``statevad score`` (the model's preset, its recorded box and flow stages,
the same automatic threshold and event rules), so the events stored for a file equal the ones that command
finds. Media encoding and database writes go to the :class:`Recorder` thread so that scoring never waits on
them; nothing is dropped there (the queue blocks when full).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from statevad import visualize as viz
from statevad.errors import UserError
from statevad.events import Event, EventTracker
from statevad.serve.config import CameraConfig
from statevad.serve.db import Database, EventRow
from statevad.serve.feed import Arrival, Feed
from statevad.serve.media import MediaStore, crop, jpeg
from statevad.stream.driver import build_scorer
from statevad.stream.engine import FrameResult, InputChanged, StreamScorer

log = logging.getLogger("statevad.serve")
FPS_WINDOW_S = 10.0


class Scoring:
    """One camera's model made ready to score: :func:`statevad.stream.driver.build_scorer` with the camera's
    :class:`~statevad.stream.ScoreOptions`, the very function ``statevad score`` calls (stages, border rule,
    threshold, event rule), built once (the network and the detector are the slow parts)."""

    def __init__(self, cam: CameraConfig) -> None:
        self.cam = cam
        try:
            self.scorer = build_scorer(cam.model, cam.score_options(), config=cam.config)
        except UserError as exc:
            raise UserError(f"camera {cam.name}: {exc}") from None
        for note in self.scorer.notes:
            log.warning("camera %s: %s", cam.name, note)
        self.threshold = self.scorer.threshold
        self.box_desc = self.scorer.box_desc
        self._checked = False

    def engine(self, fps: float) -> StreamScorer:
        return self.scorer.engine(fps)

    def tracker(self, fps: float) -> EventTracker:
        return EventTracker(self.threshold, fps, *self.scorer.event_rule(fps))

    def check_input(self, frame: np.ndarray, fps: float, fps_known: bool) -> None:
        """The first frame against the model card, once per camera (a refusal fails this camera only)."""
        if self._checked:
            return
        for note in self.scorer.check_input(frame, fps, f"camera {self.cam.name}", fps_known=fps_known):
            log.warning("camera %s: %s", self.cam.name, note)
        self._checked = True


class Recorder(threading.Thread):
    """Runs the slow writes (clips, thumbnails, database rows, webhooks) in order, off the scoring threads."""

    def __init__(self) -> None:
        super().__init__(name="recorder", daemon=True)
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue(maxsize=1000)
        self.failed = 0

    def submit(self, job: Callable[[], None]) -> None:
        self._jobs.put(job)  # blocks when full: an event is never dropped

    def run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                job()
            except Exception:  # noqa: BLE001 - one failed write must not stop the others
                self.failed += 1
                log.exception("recording failed")

    def close(self, timeout: float = 60) -> None:
        self._jobs.put(None)
        self.join(timeout)


class MemoryReleaser(threading.Thread):
    """Hands malloc's free memory back to the OS every ``every_s`` seconds until stopped.

    The workers' tensors change size with every batch (the number of objects varies), so the heaps fragment
    and the process's RSS grows without end while the memory in use stays flat (``benchmarks/
    serve_memprobe.py`` measures both); a trim now and then keeps RSS near what is in use.
    """

    def __init__(self, every_s: float) -> None:
        super().__init__(name="memory-releaser", daemon=True)
        self.every_s = every_s
        self.stopping = threading.Event()
        self.n_released = 0

    def run(self) -> None:
        from statevad.allocator import release_free_memory

        while not self.stopping.wait(self.every_s):
            if not release_free_memory():
                return  # not glibc: nothing to do, ever
            self.n_released += 1

    def stop(self) -> None:
        self.stopping.set()


@dataclass
class CameraStatus:
    name: str
    state: str = "starting"  # starting | up | down | ended | failed
    error: str | None = None
    frames: int = 0
    dropped: int = 0
    events: int = 0
    reconnects: int = 0
    last_score: float | None = None
    last_frame_wall: float | None = None
    threshold: float | None = None
    fps_source: float | None = None
    _latency: deque[float] = field(default_factory=lambda: deque(maxlen=500))
    _emitted: deque[float] = field(default_factory=lambda: deque(maxlen=250))

    def snapshot(self, lock: threading.Lock) -> dict[str, Any]:
        with lock:
            lat = np.asarray(self._latency, np.float64)
            emitted = list(self._emitted)
        # frames scored in the last FPS_WINDOW_S seconds (results come in batches: a rate between two
        # results of one batch would be meaningless)
        now = time.monotonic()
        recent = [t for t in emitted if t > now - FPS_WINDOW_S]
        span = min(FPS_WINDOW_S, now - emitted[0]) if emitted else 0.0
        fps = len(recent) / span if span > 1.0 else 0.0
        return {"name": self.name, "state": self.state, "up": self.state == "up", "error": self.error,
                "frames": self.frames, "dropped": self.dropped, "events": self.events,
                "reconnects": self.reconnects, "fps": round(fps, 2),
                "latency_p50_s": round(float(np.percentile(lat, 50)), 4) if len(lat) else None,
                "latency_p95_s": round(float(np.percentile(lat, 95)), 4) if len(lat) else None,
                "last_score": self.last_score, "last_frame_time": self.last_frame_wall,
                "threshold": self.threshold, "source_fps": self.fps_source}


@dataclass
class _Peak:
    g: int
    frame: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray


class CameraWorker(threading.Thread):
    def __init__(self, cam: CameraConfig, db: Database, media: MediaStore, recorder: Recorder, *,
                 reconnect_max_s: float = 30.0, notify: Callable[[str, dict[str, Any]], None] | None = None
                 ) -> None:
        super().__init__(name=f"camera-{cam.name}", daemon=True)
        self.cam, self.db, self.media, self.recorder = cam, db, media, recorder
        self.reconnect_max_s = reconnect_max_s
        self.notify = notify or (lambda _kind, _doc: None)
        self.status = CameraStatus(cam.name)
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.scoring: Scoring | None = None
        self.points: deque[tuple[int, int, float, float]] = deque(maxlen=600)  # (seq, frame, wall, score)
        self._seq = 0
        self._latest: tuple[int, np.ndarray, np.ndarray, np.ndarray] | None = None
        self._latest_jpeg: tuple[int, bytes] | None = None
        self._offset = 0  # frames of the passes before this one
        self._feed: Feed | None = None  # the pass in progress (its drops are counted live)

    # -- the thread -------------------------------------------------------------------------------
    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        try:
            self.scoring = Scoring(self.cam)
        except (UserError, OSError, ValueError, RuntimeError) as exc:  # a bad model never gets better
            self.status.state, self.status.error = "failed", str(exc)
            log.error("camera %s: %s", self.cam.name, exc)
            return
        self.status.threshold = self.scoring.threshold
        backoff = 1.0
        while not self.stopping.is_set():
            try:
                feed = Feed(self.cam.source, paced=self.cam.paced, queue=self.cam.queue, fps=self.cam.fps)
            except (UserError, OSError) as exc:
                self._down(str(exc), backoff)
                backoff = min(backoff * 2, self.reconnect_max_s)
                continue
            self.status.state, self.status.error = "up", None
            self.status.fps_source = feed.fps
            self._feed = feed
            try:
                n = self._segment(feed)
            except UserError as exc:  # the camera is unlike the model's footage: reconnecting cannot help
                feed.close()
                self._feed = None
                self.status.state, self.status.error = "failed", str(exc)
                log.error("camera %s: %s", self.cam.name, exc)
                return
            except Exception as exc:  # noqa: BLE001 - a failing pass is retried, never fatal to the service
                log.exception("camera %s: scoring failed", self.cam.name)
                self.status.error, n = f"{type(exc).__name__}: {exc}", 0
            finally:
                feed.close()
                self._feed = None
                self.status.dropped += feed.dropped
            if self.stopping.is_set():
                break
            if not feed.live and not self.cam.loop and self.status.error is None:
                self.status.state = "ended"
                return
            if feed.live or self.status.error:
                backoff = 1.0 if n > 0 else backoff
                self._down(self.status.error or feed.end_reason or "stream ended", backoff)
                backoff = min(backoff * 2, self.reconnect_max_s)
        self.status.state = "stopped" if self.status.state != "failed" else "failed"

    def _down(self, why: str, wait: float) -> None:
        self.status.state, self.status.error = "down", why
        self.status.reconnects += 1
        log.warning("camera %s down (%s): retrying in %.0f s", self.cam.name, why, wait)
        self.stopping.wait(wait)

    # -- one pass ---------------------------------------------------------------------------------
    def _segment(self, feed: Feed) -> int:
        assert self.scoring is not None
        fps = feed.fps
        engine = self.scoring.engine(fps)
        seg = _Segment(self, self.scoring.tracker(fps), fps)  # the event rule of `statevad score`
        governor = self.scoring.scorer.governor() if feed.threaded else None
        try:
            for a in feed:
                if self.stopping.is_set():
                    break
                self.scoring.check_input(a.frame, fps, feed.fps_known)
                seg.arrived[engine.n_received] = a
                try:
                    results = engine.push(a.frame)
                except InputChanged:  # the frame size changed: a new segment starts with the next pass
                    break
                seg.emit(results)
                feed.govern(engine, governor)
                seg.emit(feed.flush_idle(engine))  # nothing waiting from a live source: score what is queued
            seg.emit(engine.finish())
        finally:
            seg.finish()
            self._offset += engine.n_received
        return engine.n_received

    # -- what the API reads -------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        doc = self.status.snapshot(self.lock)
        feed = self._feed
        if feed is not None:
            doc["dropped"] += feed.dropped
        doc["source"] = _display_source(self.cam.source)
        doc["model"] = self.cam.model.rsplit("/", 1)[-1]
        doc["boxes"] = self.scoring.box_desc if self.scoring else None
        return doc

    def points_after(self, seq: int) -> list[tuple[int, int, float, float]]:
        with self.lock:
            return [p for p in self.points if p[0] > seq]

    def latest_jpeg(self) -> bytes | None:
        with self.lock:
            latest, cached = self._latest, self._latest_jpeg
        if latest is None:
            return None
        if cached is not None and cached[0] == latest[0]:
            return cached[1]
        seq, frame, boxes, scores = latest
        thr = self.status.threshold or 0.0
        data = jpeg(viz.draw_boxes(frame, boxes, scores, thr), 80)
        with self.lock:
            self._latest_jpeg = (seq, data)
        return data


class _Segment:
    """The per-pass state: arrival times, the event tracker, the clip buffer, the per-second summary."""

    def __init__(self, w: CameraWorker, tracker: EventTracker, fps: float) -> None:
        self.w, self.tracker, self.fps = w, tracker, fps
        self.arrived: dict[int, Arrival] = {}
        self.half = max(1, round(w.cam.clip_s * fps / 2))
        self.buffer: deque[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = deque(maxlen=2 * self.half + 1)
        self.peak: _Peak | None = None
        self.clip: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] | None = None
        self.start_wall: float | None = None
        self.open_start = 0
        self.last_above_wall = 0.0
        self.started = False  # event.start sent for the open event
        self.second: int | None = None
        self.sec_scores: list[float] = []

    def emit(self, results: list[FrameResult]) -> None:
        for r in results:
            self._one(r)

    def _one(self, r: FrameResult) -> None:
        w, st = self.w, self.w.status
        a = self.arrived.pop(r.index)
        now = time.monotonic()
        g = w._offset + r.index
        score = r.score
        with w.lock:
            st._latency.append(now - a.t)
            st._emitted.append(now)
            w._seq += 1
            w.points.append((w._seq, g, a.wall, score))
            w._latest = (w._seq, r.frame, r.boxes, r.scores)
        st.frames += 1
        st.last_score, st.last_frame_wall = score, a.wall
        self._summary(a.wall, score)
        self.buffer.append((g, r.frame, r.boxes, r.scores))
        thr = self.tracker.threshold
        if score > thr:
            self.last_above_wall = a.wall
        closed = self.tracker.update(score)
        for e in closed:
            self._closed(e)
        self._track_open(r, g, a.wall, score > thr)

    def _track_open(self, r: FrameResult, g: int, wall: float, above: bool) -> None:
        peak = self.tracker.open_peak_frame
        if peak is None:
            self.start_wall, self.started = None, False
            return
        if self.start_wall is None:
            self.start_wall = wall
            self.open_start = g
        if peak == r.index:
            self.peak, self.clip = _Peak(g, r.frame, r.boxes, r.scores), None
        if self.peak is not None and g == self.peak.g + self.half:  # the clip is centred on the peak
            self.clip = list(self.buffer)
        if above and not self.started and g - self.open_start + 1 >= self.tracker.min_len:
            self.started = True  # it is an event from now on, whatever follows (min_len reached)
            self.w.notify("event.start", {"camera": self.w.cam.name, "start_frame": self.open_start,
                                          "start_time": self.start_wall})

    def finish(self) -> None:
        for e in self.tracker.finish():
            self._closed(e)
        self._flush_second()

    def _summary(self, wall: float, score: float) -> None:
        sec = int(wall)
        if self.second is not None and sec != self.second:
            self._flush_second()
        self.second = sec
        if np.isfinite(score):
            self.sec_scores.append(score)

    def _flush_second(self) -> None:
        if self.second is None or not self.sec_scores:
            return
        s = np.asarray(self.sec_scores)
        row = (self.second, len(s), float(s.max()), float(s.mean()))
        self.sec_scores = []
        cam, db = self.w.cam.name, self.w.db
        self.w.recorder.submit(lambda: db.add_scores(cam, [row]))

    def _closed(self, e: Event) -> None:
        w = self.w
        off = w._offset
        g_peak = off + e.peak_frame
        peak = self.peak if self.peak is not None and self.peak.g == g_peak else None
        clip = self.clip if self.clip is not None and peak is not None else \
            [b for b in self.buffer if b[0] >= g_peak - self.half]
        start_wall = self.start_wall if self.start_wall is not None else self.last_above_wall
        row = EventRow(camera=w.cam.name, start_frame=off + e.start, end_frame=off + e.end, peak_frame=g_peak,
                       start_time=start_wall, end_time=max(self.last_above_wall, start_wall),
                       peak_score=float(e.peak_score), threshold=float(self.tracker.threshold), thumb=None,
                       clip=None, objects=[])
        self.peak, self.clip, self.start_wall, self.started = None, None, None, False
        w.status.events += 1
        w.recorder.submit(lambda: _record(w, row, peak, clip, self.fps))


def _record(w: CameraWorker, row: EventRow, peak: _Peak | None,
            clip: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]], fps: float) -> None:
    """Encode the event's media and store it (on the recorder thread)."""
    thr = row.threshold
    crops: list[bytes] = []
    thumb = None
    if peak is not None:
        thumb = viz.thumbnail_jpeg(peak.frame, peak.boxes, peak.scores, thr)
        order = np.argsort(-peak.scores, kind="stable")[: w.cam.n_crops]
        crops = [jpeg(crop(peak.frame, peak.boxes[i])) for i in order]
        row.objects = [{"box": [round(float(v), 1) for v in peak.boxes[i]], "score": float(peak.scores[i])}
                       for i in order]
    frames = [viz.draw_boxes(f, b, s, thr) for _g, f, b, s in clip]
    key = f"{int(row.start_time * 1000)}-{row.start_frame}"
    row.thumb, crop_paths, row.clip = w.media.save_event(w.cam.name, key, thumb, crops, frames, fps)
    for obj, path in zip(row.objects, crop_paths, strict=False):
        obj["crop"] = path
    event_id = w.db.add_event(row)
    w.notify("event.end", {"id": event_id, "camera": row.camera, "start_frame": row.start_frame,
                           "end_frame": row.end_frame, "peak_frame": row.peak_frame,
                           "peak_score": row.peak_score, "start_time": row.start_time,
                           "end_time": row.end_time})


def _display_source(source: str) -> str:
    """The source without credentials (rtsp://user:pass@host/...): it is shown on the dashboard."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(source)
    except ValueError:
        return "(source)"
    if parts.password or parts.username:
        host = parts.hostname or ""
        netloc = host + (f":{parts.port}" if parts.port else "")
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    return source
