"""Events: anomalous intervals of a frame-score series, found online, and the interval <-> label helpers.

The streaming path (``statevad score``) needs events and peak-frame thumbnails *while* frames go by (it never
keeps the video in memory), so event detection is an online state machine (:class:`EventTracker`); the
offline :func:`events` simply runs that same machine over an array, which guarantees both paths agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from statevad.io import DEFAULT_FPS, fps_or_default


@dataclass(frozen=True)
class Event:
    """One anomalous interval: frames ``start..end`` inclusive, times in seconds from the first frame."""

    start: int
    end: int
    start_s: float
    end_s: float
    peak_score: float
    peak_frame: int

    @property
    def n_frames(self) -> int:
        return self.end - self.start + 1

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["n_frames"] = self.n_frames
        return d


@dataclass
class _Open:
    start: int
    last_above: int
    peak_score: float
    peak_frame: int


@dataclass
class EventTracker:
    """Online event detection: feed frame scores in order, get each event as soon as it is final.

    A frame is *above* when its score is strictly greater than ``threshold`` (NaN counts as below).
    Runs of above frames separated by fewer than ``min_gap`` below frames are merged, because a
    detector that flickers around the threshold for one or two frames describes a single incident;
    merged runs shorter than ``min_len`` frames are dropped as noise. An event is final once
    ``min_gap`` below frames have followed it (or at :meth:`finish`), so the delay is bounded.
    """

    threshold: float
    fps: float = DEFAULT_FPS
    min_gap: int = 1
    min_len: int = 1
    _open: _Open | None = field(default=None, init=False, repr=False)
    _next: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.min_gap < 1 or self.min_len < 1:
            raise ValueError("min_gap and min_len must be >= 1")
        self.fps = fps_or_default(self.fps)

    @property
    def open_peak_frame(self) -> int | None:
        """Peak frame of the event being built (for peak thumbnails in streaming), else None."""
        return None if self._open is None else self._open.peak_frame

    def update(self, score: float) -> list[Event]:
        """Consume the next frame's score; return the events that became final (0 or 1)."""
        t = self._next
        self._next += 1
        above = bool(score > self.threshold)  # NaN > x is False
        out: list[Event] = []
        if above:
            if self._open is None:
                self._open = _Open(t, t, float(score), t)
            else:
                self._open.last_above = t
                if score > self._open.peak_score:
                    self._open.peak_score, self._open.peak_frame = float(score), t
        elif self._open is not None and t - self._open.last_above >= self.min_gap:
            out.extend(self._close())
        return out

    def finish(self) -> list[Event]:
        """End of the stream: close the event in progress, if any."""
        return self._close() if self._open is not None else []

    def _close(self) -> list[Event]:
        o, self._open = self._open, None
        assert o is not None
        if o.last_above - o.start + 1 < self.min_len:
            return []
        return [Event(o.start, o.last_above, o.start / self.fps, (o.last_above + 1) / self.fps,
                      o.peak_score, o.peak_frame)]


def events(scores: Sequence[float] | np.ndarray, threshold: float, fps: float = DEFAULT_FPS,
           min_gap: int = 1, min_len: int = 1) -> list[Event]:
    """Anomalous intervals of a frame-score series (see :class:`EventTracker` for the rules)."""
    tracker = EventTracker(threshold, fps, min_gap, min_len)
    found: list[Event] = []
    for s in np.asarray(scores, dtype=np.float64).ravel():
        found.extend(tracker.update(float(s)))
    found.extend(tracker.finish())
    return found


def label_intervals(labels: Sequence[int] | np.ndarray) -> list[tuple[int, int]]:
    """Inclusive ``(start, end)`` frame runs where ``labels == 1`` (unknown ``-1`` counts as normal)."""
    lab = np.asarray(labels).ravel() == 1
    if not lab.any():
        return []
    d = np.diff(np.concatenate([[0], lab.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1) - 1
    return [(int(a), int(b)) for a, b in zip(starts, ends, strict=True)]


def intervals_to_labels(intervals: Sequence[Sequence[int]], n: int | None, *, first: int = 0,
                        where: str = "") -> np.ndarray:
    """Inclusive ``[start, end]`` intervals (``first``-based) -> per-frame 0/1 ``uint8`` labels of ``n``
    frames (``n=None``: up to the last interval's end). An interval that is reversed, starts before
    ``first`` or ends past the last frame raises ``ValueError`` quoting the interval's own numbers;
    ``where`` (e.g. ``" of clip 01"``) says whose interval it is."""
    pairs = [(int(a), int(b)) for a, b in intervals]
    size = n if n is not None else max((b - first + 1 for _, b in pairs), default=0)
    labels = np.zeros(size, np.uint8)
    for a, b in pairs:
        if a < first or b < a or (n is not None and b > n - 1 + first):
            bound = f" <= {n - 1 + first}" if n is not None else ""
            raise ValueError(f"anomalous interval [{a}, {b}]{where} lies outside its {size} frames (expected "
                             f"{first} <= start <= end{bound}, {first}-based inclusive)")
        labels[a - first:b - first + 1] = 1
    return labels
