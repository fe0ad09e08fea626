"""Detector boxes moved by the optical flow between detector frames (:func:`flow_shift`), for the streaming
box stage; the IoU tracker the engine follows objects with is :mod:`statevad.tracks` (its names are
re-exported here)."""

from __future__ import annotations

import numpy as np

from statevad.tracks import IouTracker, greedy_match, iou_matrix  # re-exported: the streaming names

__all__ = ["iou_matrix", "greedy_match", "IouTracker", "flow_shift"]


# A pixel "moves" when its flow is at least this long (pixels per frame): the object inside a box, not the
# background around it, sets the box's shift.
MOVING_PX = 0.5


def flow_shift(boxes: np.ndarray, flow: np.ndarray, min_moving: float = 0.1) -> np.ndarray:
    """``boxes`` (n, 4) of frame t-1 moved to frame t by ``flow`` (H, W, 2), the optical flow t-1 -> t.

    Each box moves by the median flow (dx, dy) of its pixels that move (``|flow| >= MOVING_PX``); when fewer
    than ``min_moving`` of its pixels move, by the median of all of them (a still object stays put). The
    moved boxes are clipped to the frame; a box left under 1 px wide or high (moved out of view) is dropped.
    Pure: float32 (m, 4), m <= n, in the input's order.
    """
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    h, w = flow.shape[:2]
    out = b.copy()
    for j, (x1, y1, x2, y2) in enumerate(b.tolist()):
        xa, xb = int(np.clip(np.floor(x1), 0, w)), int(np.clip(np.ceil(x2), 0, w))
        ya, yb = int(np.clip(np.floor(y1), 0, h)), int(np.clip(np.ceil(y2), 0, h))
        patch = np.asarray(flow[ya:yb, xa:xb], np.float32).reshape(-1, 2)
        if not len(patch):
            continue
        moving = patch[np.hypot(patch[:, 0], patch[:, 1]) >= MOVING_PX]
        dx, dy = np.median(moving if len(moving) >= min_moving * len(patch) else patch, axis=0)
        if np.isfinite(dx) and np.isfinite(dy):
            out[j] += np.array([dx, dy, dx, dy], np.float32)
    out[:, 0::2] = out[:, 0::2].clip(0, w)
    out[:, 1::2] = out[:, 1::2].clip(0, h)
    return out[((out[:, 2] - out[:, 0]) >= 1) & ((out[:, 3] - out[:, 1]) >= 1)]
