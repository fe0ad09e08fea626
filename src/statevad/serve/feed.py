"""Frames of one camera with their arrival times; live sources go through ``statevad score``'s live policy.

A live source (camera, stream URL, a file played at its frame rate) does not wait for the scorer: it is read
by :class:`statevad.stream.live.LiveReader`, the reader ``statevad score`` uses, which keeps a short queue and
drops frames evenly (and counts them) when the scorer falls behind, so latency stays bounded instead of
growing without end. A file read as fast as possible (``paced=False``) drops nothing: every frame is scored,
as ``statevad score`` does.

The worker sees only :class:`Feed` (an iterator of :class:`Arrival` with ``dropped``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from statevad.io import fps_or_default, open_source, valid_fps
from statevad.stream.live import CarryGovernor, LiveReader, flush_idle


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
        own = valid_fps(getattr(self.src, "fps", None))
        self.fps = float(fps) if fps else fps_or_default(own)
        self.fps_known = bool(fps) or own is not None  # else the rate is assumed (a warning, as in score)
        self.live = getattr(self.src, "n_frames", None) is None  # cameras and URLs
        self.threaded = self.live or paced
        self.paced = paced and not self.live  # a live source is paced by itself
        self.error: str | None = None
        self._max = max(2, queue)  # LiveReader needs room for one waiting frame and one being thinned
        self._stop = threading.Event()
        self._reader: LiveReader | None = None

    def __iter__(self) -> Iterator[Arrival]:
        if not self.threaded:
            for f in self._frames():
                yield Arrival(f, time.monotonic(), time.time())
            return
        self._reader = LiveReader(self._frames(), fps=self.fps, max_queue=self._max, keep_dropped=False)
        for item in self._reader:
            # the wall time of the arrival (event times), from the monotonic stamp the reader took
            yield Arrival(item.frame, item.arrival, time.time() - (time.monotonic() - item.arrival))

    def _frames(self) -> Iterator[np.ndarray]:
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
                yield np.ascontiguousarray(f, np.uint8)
        except Exception as exc:  # noqa: BLE001 - a lost source ends this pass; the worker reconnects
            self.error = f"{type(exc).__name__}: {exc}"

    @property
    def dropped(self) -> int:
        return self._reader.n_dropped if self._reader is not None else 0

    def govern(self, engine: Any, governor: CarryGovernor | None) -> None:
        """After each frame of a live source: objects scored less often before any frame is dropped
        (:class:`statevad.stream.live.CarryGovernor`, as in ``statevad score``)."""
        if governor is not None and self._reader is not None:
            governor.step(self._reader, engine)

    def flush_idle(self, engine: Any) -> list[Any]:
        """:func:`statevad.stream.live.flush_idle` with this feed's reader (nothing for a file)."""
        return flush_idle(engine, self._reader)

    @property
    def end_reason(self) -> str | None:
        return self.error or getattr(self.src, "end_reason", None)

    def close(self) -> None:
        self._stop.set()
        if self._reader is not None and not self._reader.close(timeout=10):
            return  # the reader thread is still inside a read: it keeps the source it reads
        for name in ("close", "release"):
            fn = getattr(self.src, name, None)
            if callable(fn):
                fn()
                return
