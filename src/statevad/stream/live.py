"""The live-source policy: read a camera or stream at its own pace, hand the scorer what it can keep up with.

A live source does not wait: a camera delivers its frames whether or not the scorer is ready, and OpenCV's
own buffer (or the network's) fills up when nobody reads, so the scorer would see older and older frames
and its lag would grow without bound. :class:`LiveReader` reads the source in its own thread, as fast as it
delivers, stamps every frame with its arrival time, and keeps a short queue for the scorer. When the
scorer is slower than the source, frames are dropped **explicitly and evenly**:

* a *stride* ``s`` keeps one frame in ``s`` (the kept frames are ``s`` source frames apart, never a burst of
  consecutive losses); ``s`` is the smallest integer with ``busy <= s * interval * headroom``, where
  ``busy`` is the scorer's measured time per kept frame (the time between taking one frame and asking for
  the next, so it includes any back-pressure of a pipeline behind it) and ``interval`` the source's
  measured time between frames (both exponential moving averages); it goes down again when the scorer
  speeds up;
* a full queue (a sudden slow-down before the averages follow) is thinned evenly: every other queued frame
  is dropped and the stride doubles, so the queue, and with it the lag, stays bounded by ``max_queue``.

Every dropped frame's source index is recorded (:attr:`LiveReader.dropped`, in order); nothing is dropped
silently. Files never go through this reader: a file is scored completely, as fast as possible.

Interface::

    reader = LiveReader(frames, fps=src.fps)   # frames: any iterable of BGR frames (read in a thread)
    for item in reader:                        # LiveFrame(index=source index, arrival=monotonic s, frame)
        ...score item.frame...
    reader.close()                             # stops the thread (also on an early exit)
    reader.dropped, reader.n_read, reader.stride, reader.max_queued, reader.error

``clock`` is :func:`time.monotonic` (latency = ``clock()`` when a score is written minus ``arrival``).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Moving-average weight of the newest sample (scorer time per frame, source interval): reacts within a few
# frames to a real change, ignores one slow batch.
EMA_ALPHA = 0.25


@dataclass(frozen=True)
class LiveFrame:
    """One kept frame: its index in the source (dropped frames counted) and when it was read."""

    index: int
    arrival: float  # clock() right after the source delivered it
    frame: np.ndarray


@dataclass
class _Ema:
    value: float | None = None

    def add(self, x: float) -> None:
        self.value = x if self.value is None else (1 - EMA_ALPHA) * self.value + EMA_ALPHA * x


@dataclass
class LiveReader:
    """Reads ``source`` in a daemon thread; iterate to get the kept frames (:class:`LiveFrame`) in order.

    ``fps`` (the source's nominal rate, None if unknown) seeds the interval estimate until the first
    frames have been measured. ``max_queue`` bounds the frames waiting for the scorer; ``headroom`` < 1
    leaves the scorer some slack so the queue drains instead of hovering at full.
    """

    source: Iterable[np.ndarray]
    fps: float | None = None
    max_queue: int = 4
    headroom: float = 0.9
    clock: Callable[[], float] = time.monotonic
    dropped: list[int] = field(default_factory=list)
    n_read: int = 0
    stride: int = 1
    max_stride: int = 1
    max_queued: int = 0
    error: BaseException | None = None  # what ended the source, if it raised (re-raised by nothing)
    # False: count the dropped frames without keeping their indices (a service reading a camera for weeks
    # would otherwise keep one int per dropped frame, and re-sort the list on every thinning)
    keep_dropped: bool = True
    # True while the scorer can still relieve itself without losing frames (CarryGovernor): the stride stays
    # 1; a full queue is still thinned, so the lag stays bounded whatever the scorer does
    hold_stride: bool = False

    def __post_init__(self) -> None:
        if self.max_queue < 2:
            raise ValueError("max_queue >= 2 is required (one frame waiting, one being thinned)")
        self._queue: deque[LiveFrame] = deque()
        self._cond = threading.Condition()
        self._stop = False
        self._ended = False
        self._last_kept: int | None = None
        self._last_arrival: float | None = None
        self._interval = _Ema(1.0 / self.fps if self.fps and self.fps > 0 else None)
        self._busy = _Ema()
        self._idle_s = 0.0  # the scorer's waits with no frame waiting since it took its last frame
        self._thread = threading.Thread(target=self._read, name="statevad-live-reader", daemon=True)
        self._started = False
        self._n_dropped = 0

    # -- the reader thread ---------------------------------------------------------------------
    def _read(self) -> None:
        try:
            for frame in self.source:
                now = self.clock()
                with self._cond:
                    if self._stop:
                        return
                    self._arrive(frame, now)
        except BaseException as exc:  # the scorer thread decides what a lost source means
            self.error = exc
        finally:
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    def _arrive(self, frame: np.ndarray, now: float) -> None:
        i = self.n_read
        self.n_read += 1
        if self._last_arrival is not None:
            self._interval.add(now - self._last_arrival)
        self._last_arrival = now
        self.stride = self._wanted_stride()
        if self._last_kept is not None and i - self._last_kept < self.stride:
            self._drop([i])
            return
        if len(self._queue) >= self.max_queue:
            self._thin()
            if self._last_kept is not None and i - self._last_kept < self.stride:
                self._drop([i])
                return
        self._queue.append(LiveFrame(i, now, frame))
        self._last_kept = i
        self.max_queued = max(self.max_queued, len(self._queue))
        self._cond.notify_all()

    def _wanted_stride(self) -> int:
        busy, interval = self._busy.value, self._interval.value
        if busy is None or not interval:
            return self.stride
        if self.hold_stride:
            return 1
        s = max(1, math.ceil(busy / (interval * self.headroom)))
        self.max_stride = max(self.max_stride, s)
        return s

    def _thin(self) -> None:
        """Full queue: drop every other waiting frame (oldest first), double the stride."""
        kept = list(self._queue)
        keep = kept[len(kept) - 1::-2][::-1]  # the newest and every second one before it
        gone = sorted({f.index for f in kept} - {f.index for f in keep})
        self._drop(gone)
        if self.keep_dropped:
            self.dropped.sort()  # a thinned frame is older than the frames dropped by the stride since
        self._queue = deque(keep)
        self.stride *= 2
        self.max_stride = max(self.max_stride, self.stride)
        # the averages must agree with the doubled stride, or the next arrival would undo it
        if self._interval.value:
            floor = self.stride * self._interval.value * self.headroom
            self._busy.value = max(self._busy.value or 0.0, floor)

    # -- the scorer's side -----------------------------------------------------------------------
    def __iter__(self) -> Iterator[LiveFrame]:
        if not self._started:
            self._started = True
            self._thread.start()
        handed: float | None = None
        while True:
            with self._cond:
                if handed is not None:  # the scorer's time for the frame it took last, its idle waits out
                    self._busy.add(max(0.0, self.clock() - handed - self._idle_s))
                self._idle_s = 0.0
                while not self._queue and not self._ended and not self._stop:
                    self._cond.wait(0.1)
                if not self._queue:
                    return
                item = self._queue.popleft()
            handed = self.clock()
            yield item

    def idle_for(self, seconds: float) -> None:
        """The scorer waited ``seconds`` with no frame waiting (for its network pass to land, see
        :func:`flush_idle`): slack, not its time per frame, so it does not count towards the stride."""
        with self._cond:
            self._idle_s += max(0.0, seconds)

    def _drop(self, indices: list[int]) -> None:
        self._n_dropped += len(indices)
        if self.keep_dropped:
            self.dropped.extend(indices)

    @property
    def n_dropped(self) -> int:
        return self._n_dropped

    @property
    def load(self) -> float | None:
        """The scorer's time per kept frame over the time it may take (source interval x headroom): above 1
        it falls behind; None until both have been measured."""
        with self._cond:
            busy, interval = self._busy.value, self._interval.value
        return None if busy is None or not interval else busy / (interval * self.headroom)

    @property
    def waiting(self) -> int:
        """Frames read and kept but not taken yet (0: the scorer may as well flush its batch now)."""
        with self._cond:
            return len(self._queue)

    def close(self, timeout: float = 2.0) -> bool:
        """Stop reading; True when the reader thread has ended (the source may then be released)."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._started:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True


@dataclass
class CarryGovernor:
    """Keep up with a live source by scoring each object less often before dropping any frame.

    Dropping frames is the last resort: the kept frames are then ``s`` source frames apart, so every flow
    spans ``s`` frames and every object looks ``s`` times faster than in training, which is what a speed
    anomaly looks like. Carrying an object's network errors for more frames (the engine's ``score_every``)
    keeps every frame, its boxes, flow and speed term; only the network passes thin out. So when the scorer's
    load (:attr:`LiveReader.load`) stays above 1, ``k`` goes up by one, up to ``k_max``; below ``low`` it
    comes back down by one, never under the configured ``k0``. A change waits ``patience`` frames for the
    moving averages to show its effect. While ``k`` can still rise, the reader keeps all frames
    (:attr:`LiveReader.hold_stride`); at ``k_max`` its stride takes over. :attr:`frames_at` counts the frames
    pushed at each ``k`` (the record in events.json).
    """

    k0: int
    k_max: int
    low: float = 0.7
    patience: int = 8
    k: int = 0
    frames_at: dict[int, int] = field(default_factory=dict)
    _since: int = 0

    def __post_init__(self) -> None:
        if self.k0 < 1 or self.k_max < self.k0:
            raise ValueError("1 <= k0 <= k_max is required")
        self.k = self.k0

    def update(self, load: float | None) -> int:
        """One frame pushed at the current ``k`` with the reader's ``load``; the ``k`` for the next frame."""
        self.frames_at[self.k] = self.frames_at.get(self.k, 0) + 1
        self._since += 1
        if load is None or self._since < self.patience:
            return self.k
        if load > 1.0 and self.k < self.k_max:
            self.k, self._since = self.k + 1, 0
        elif load < self.low and self.k > self.k0:
            self.k, self._since = self.k - 1, 0
        return self.k

    @property
    def can_relieve(self) -> bool:
        return self.k < self.k_max

    def step(self, reader: LiveReader, engine: Any) -> None:
        """After each frame taken from ``reader``: the engine's ``score_every`` (``set_score_every``) and
        the reader's ``hold_stride`` as the reader's load says."""
        k = self.update(reader.load)
        if k != engine.score_every:
            engine.set_score_every(k)
        reader.hold_stride = self.can_relieve


def flush_idle(engine: Any, reader: LiveReader | None) -> list[Any]:
    """With a live source and no frame waiting: the engine's queued cubes scored now and the pass in flight
    landed as soon as it ends, until a frame is waiting (:meth:`StreamScorer.flush` with ``idle``); the time
    spent waiting is reported to the reader as idle (:meth:`LiveReader.idle_for`), or the reader would take
    it for a slow scorer and drop frames. A file (no reader) is never flushed early."""
    if reader is None or reader.waiting:
        return []
    before = engine.idle_wait_s
    try:
        return engine.flush(lambda: reader.waiting == 0)
    finally:
        reader.idle_for(engine.idle_wait_s - before)


def latency_summary(latencies_s: Iterable[float]) -> dict[str, float | int]:
    """p50 / p95 / max of frame arrival -> score written, in seconds (rounded to the millisecond)."""
    a = np.asarray(list(latencies_s), np.float64)
    if not len(a):
        return {"frames": 0}
    return {"frames": int(len(a)), "p50_s": round(float(np.percentile(a, 50)), 3),
            "p95_s": round(float(np.percentile(a, 95)), 3), "max_s": round(float(a.max()), 3)}


def index_ranges(indices: Iterable[int]) -> list[list[int]]:
    """Sorted indices as inclusive ``[first, last]`` runs (a compact record of the dropped frames)."""
    out: list[list[int]] = []
    for i in sorted(indices):
        if out and i == out[-1][1] + 1:
            out[-1][1] = i
        else:
            out.append([i, i])
    return out
