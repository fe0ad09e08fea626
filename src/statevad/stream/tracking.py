"""Objects followed from frame to frame: greedy IoU matching of the boxes a frame already has.

Used by the streaming engine to score each object's cube only every k-th frame and carry its score in
between (the cubes of one object on neighbouring frames share 2l of their 2l+1 frames, so their scores
barely differ), and by the box stage to move detector boxes with the flow between detector frames.

The matcher is the classic IoU tracker (Bochinski et al., AVSS 2017): the pairs of (previous box, current
box) are taken in decreasing IoU, each box at most once, while the IoU is at least ``iou_thr``; a box
left over starts a new track. No motion model, no memory of lost tracks: at 10-25 frames/s an object
moves a small part of its own size between frames, which is all this needs.
"""

from __future__ import annotations

import numpy as np

from statevad.boxes import iou_matrix  # one IoU for the whole package

__all__ = ["iou_matrix", "greedy_match", "IouTracker"]


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
