"""Objects followed from frame to frame, and the causal mean of a score along each object's track.

The matcher is the classic IoU tracker (Bochinski et al., AVSS 2017): the pairs of (previous box, current
box) are taken in decreasing IoU, each box at most once, while the IoU is at least ``iou_thr``; a box
left over starts a new track. No motion model, no memory of lost tracks: at 10-25 frames/s an object
moves a small part of its own size between frames, which is all this needs.

The streaming engine uses it to score each object's cube only every k-th frame, and both the engine and the
offline paths (``statevad test``, the calibration of thresholds) to average each object's fused score over
its last ``score.track_frames`` frames, or ``score.track_seconds`` at the footage's frame rate
(:meth:`statevad.config.ScoreConfig.track_window`; :func:`causal_track_mean`, :class:`TrackMeans`): an
anomaly lasts longer than the noise of one cube's reconstruction error (docs/ANALYSIS.md, section 12).
Causal, so a live stream gets the same scores as a file.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np

from statevad.boxes import iou_matrix  # one IoU for the whole package

__all__ = ["iou_matrix", "greedy_match", "IouTracker", "clip_track_ids", "causal_track_mean", "TrackMeans"]


def greedy_match(prev: np.ndarray, cur: np.ndarray, iou_thr: float) -> np.ndarray:
    """For each box of ``cur``, the index of its match in ``prev`` or -1 (pairs in decreasing IoU)."""
    match = np.full(len(cur), -1, np.int64)
    if not len(prev) or not len(cur):
        return match
    iou = iou_matrix(prev, cur)
    order = np.argsort(-iou, axis=None, kind="stable")
    used_p = np.zeros(len(prev), bool)
    for flat in order:
        p, c = divmod(int(flat), len(cur))
        if iou[p, c] < iou_thr:
            break
        if used_p[p] or match[c] >= 0:
            continue
        used_p[p], match[c] = True, p
    return match


class IouTracker:
    """Track ids for each frame's boxes, in frame order: ``update(boxes) -> (n,) int64 ids``."""

    def __init__(self, iou_thr: float = 0.3) -> None:
        self.iou_thr = iou_thr
        self._boxes = np.zeros((0, 4), np.float32)
        self._ids = np.zeros(0, np.int64)
        self._next = 0

    def peek(self, boxes: np.ndarray) -> np.ndarray:
        """The ids :meth:`update` would give ``boxes``, changing nothing (a caller that may still fail)."""
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        match = greedy_match(self._boxes, boxes, self.iou_thr)
        ids = self._ids[np.maximum(match, 0)] if len(self._ids) else np.zeros(len(boxes), np.int64)
        ids = np.where(match >= 0, ids, -1).astype(np.int64)
        new = ids < 0
        ids[new] = np.arange(self._next, self._next + int(new.sum()))
        return ids

    def commit(self, boxes: np.ndarray, ids: np.ndarray) -> None:
        """Make ``boxes`` (with the ids :meth:`peek` gave them) the frame the next one is matched to."""
        self._boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        self._ids = np.asarray(ids, np.int64)
        if len(self._ids):
            self._next = max(self._next, int(self._ids.max()) + 1)

    def update(self, boxes: np.ndarray) -> np.ndarray:
        ids = self.peek(boxes)
        self.commit(boxes, ids)
        return ids.copy()


def clip_track_ids(frame: np.ndarray, box: np.ndarray, iou_thr: float = 0.3) -> np.ndarray:
    """Track ids of one clip's objects (``frame`` (n,) frame indices, ``box`` (n, 4)), as the streaming
    tracker gives them: frames in order, every frame from the first to the last (a frame without objects
    ends every track, as it does in a stream)."""
    frame = np.asarray(frame, np.int64)
    box = np.asarray(box, np.float32).reshape(-1, 4)
    ids = np.full(len(frame), -1, np.int64)
    if not len(frame):
        return ids
    order = np.argsort(frame, kind="stable")
    tracker = IouTracker(iou_thr)
    bounds = np.searchsorted(frame[order], np.arange(frame.min(), frame.max() + 2))
    for a, b in zip(bounds[:-1], bounds[1:], strict=False):
        idx = order[a:b]
        ids[idx] = tracker.update(box[idx])
    return ids


def causal_track_mean(score: np.ndarray, frame: np.ndarray, ids: np.ndarray, n: int) -> np.ndarray:
    """Each object's score averaged with the scores of its track's up to ``n - 1`` previous objects (a
    causal window along the track; shorter at its start); ``n`` <= 1: the scores unchanged."""
    score = np.asarray(score, np.float64)
    if n <= 1 or not len(score):
        return score.copy()
    out = np.empty_like(score)
    order = np.lexsort((np.asarray(frame), np.asarray(ids)))
    for grp in np.split(order, np.flatnonzero(np.diff(np.asarray(ids)[order])) + 1):
        s = np.cumsum(np.r_[0.0, score[grp]])
        k = np.arange(1, len(grp) + 1)
        lo = np.maximum(0, k - n)
        out[grp] = (s[k] - s[lo]) / (k - lo)
    return out


class TrackMeans:
    """The streaming form of :func:`causal_track_mean`: ``peek(ids, scores)`` gives the means with the
    frame's scores added, changing nothing; ``commit`` keeps them (so a step that fails after peeking
    leaves the windows as they were). Each track keeps its last ``n - 1`` scores; the owner drops the
    tracks that ended (``forget``: the streaming engine, with its other per-track state)."""

    def __init__(self, n: int) -> None:
        self.n = max(1, int(n))
        self._win: dict[int, deque[float]] = {}

    def copy(self) -> TrackMeans:
        new = TrackMeans(self.n)
        new._win = {k: deque(v, maxlen=self.n - 1) for k, v in self._win.items()}
        return new

    def peek(self, ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        out = np.empty(len(scores), np.float64)
        for j, (tid, s) in enumerate(zip(np.asarray(ids).tolist(), np.asarray(scores).tolist(), strict=True)):
            win = self._win.get(tid, ())
            out[j] = (sum(win) + s) / (len(win) + 1)
        return out

    def commit(self, ids: np.ndarray, scores: np.ndarray) -> None:
        for tid, s in zip(np.asarray(ids).tolist(), np.asarray(scores).tolist(), strict=True):
            self._win.setdefault(tid, deque(maxlen=self.n - 1)).append(float(s))

    def forget(self, ids: list[int]) -> None:
        for k in ids:
            self._win.pop(k, None)


def split_track_mean(score: np.ndarray, clip: np.ndarray, frame: np.ndarray, box: np.ndarray,
                     n: int | Sequence[int], keep: np.ndarray | None = None) -> np.ndarray:
    """:func:`causal_track_mean` over a prepared split's cubes (``clip``/``frame``/``box`` per cube), clip by
    clip, with the tracks a stream of each clip would have: only the ``keep`` cubes (those the border rule
    scores; a stream never sees the others) are tracked and averaged, the rest are returned unchanged.
    ``n``: the window in frames, one for all clips or one per clip index (clips of other frame rates,
    :meth:`statevad.config.ScoreConfig.track_window`)."""
    score = np.asarray(score, np.float64)
    out = score.copy()
    if not len(score) or (isinstance(n, int | np.integer) and n <= 1):
        return out
    clip, frame = np.asarray(clip), np.asarray(frame)
    box = np.asarray(box, np.float32).reshape(-1, 4)
    use = np.ones(len(score), bool) if keep is None else np.asarray(keep, bool)
    for c in np.unique(clip[use]):
        window = int(n) if isinstance(n, int | np.integer) else int(n[int(c)])
        if window <= 1:
            continue
        idx = np.flatnonzero((clip == c) & use)
        ids = clip_track_ids(frame[idx], box[idx])
        out[idx] = causal_track_mean(score[idx], frame[idx], ids, window)
    return out
