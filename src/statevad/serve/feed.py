"""Frames of one camera with their arrival times, and the live-source drop policy.

A live source (camera, stream URL, a file played at its frame rate) does not wait for the scorer: a reader
thread keeps only the newest ``queue`` frames and drops the oldest when the scorer falls behind, counting
every drop, so latency stays bounded instead of growing without end. A file read as fast as possible
(``paced=False``) drops nothing: every frame is scored, as ``statevad score`` does.

The worker sees only :class:`Feed` (an iterator of :class:`Arrival` with ``dropped``), so another reader
(issue 20's live reader) replaces this one in one place.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from statevad.io import fps_or_default, open_source


@dataclass
class Arrival:
    frame: np.ndarray  # BGR uint8 (H, W, 3)
    t: float  # time.monotonic() when the frame arrived
    wall: float  # time.time() at arrival: event times in the database


class Feed:
    """One pass over a source (a stream until it ends or fails; a file once)."""

    def __init__(self, spec: str, *, paced: bool, queue: int, fps: float | None = None) -> None:
        self.spec = spec
        self.src: Any = open_source(spec, strict=False)
        self.fps = float(fps) if fps else fps_or_default(getattr(self.src, "fps", None))
        self.live = getattr(self.src, "n_frames", None) is None  # cameras and URLs
        self.threaded = self.live or paced
        self.paced = paced and not self.live  # a live source is paced by itself
        self.dropped = 0
        self.error: str | None = None
        self._queue: deque[Arrival] = deque()
        self._max = queue
        self._cond = threading.Condition()
        self._done = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __iter__(self) -> Iterator[Arrival]:
        if not self.threaded:
            yield from self._read()
            return
        self._thread = threading.Thread(target=self._reader, name=f"feed-{self.spec}", daemon=True)
        self._thread.start()
        while True:
            with self._cond:
                while not self._queue and not self._done:
                    self._cond.wait(0.5)
                if not self._queue and self._done:
                    return
                item = self._queue.popleft()
            yield item

    def _read(self) -> Iterator[Arrival]:
        period = 1.0 / self.fps
        t_next = time.monotonic()
        try:
            for f in self.src:
                if self._stop.is_set():
                    return
                if self.paced:  # a file standing in for a camera: frames arrive at the file's rate
                    t_next += period
                    wait = t_next - time.monotonic()
                    if wait > 0:
                        self._stop.wait(wait)
                    else:
                        t_next = time.monotonic()  # fell behind: do not burst to catch up
                yield Arrival(np.ascontiguousarray(f, np.uint8), time.monotonic(), time.time())
        except Exception as exc:  # noqa: BLE001 - a lost source ends this pass; the worker reconnects
            self.error = f"{type(exc).__name__}: {exc}"

    def _reader(self) -> None:
        try:
            for item in self._read():
                with self._cond:
                    self._queue.append(item)
                    while len(self._queue) > self._max:  # the scorer is behind: drop the oldest
                        self._queue.popleft()
                        self.dropped += 1
                    self._cond.notify()
        finally:
            with self._cond:
                self._done = True
                self._cond.notify()

    @property
    def end_reason(self) -> str | None:
        return self.error or getattr(self.src, "end_reason", None)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for name in ("close", "release"):
            fn = getattr(self.src, name, None)
            if callable(fn):
                fn()
                return
