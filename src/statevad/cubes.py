"""Spatio-temporal cubes (spec section 4): elastic windows, ceil crops resized to PxP, the motion filter.

For a target frame t with boxes B_t, the cube of a box is the same box cropped from every frame of t's
window (2l+1 frames, shifted -- not padded -- to stay inside the clip, so t is off-centre near the clip
edges) and from the flow of those frames, each crop resized to PxP with cv2 bilinear. The box always
comes from the target frame (no tracking).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

from statevad.boxes import N_CLASSES
from statevad.config import CubeConfig
from statevad.errors import UserError


class ClipTooShort(UserError):
    """A clip shorter than the cube length 2l+1 has no valid window; callers skip it with a warning."""


def elastic_window(t: int, n_frames: int, length: int) -> np.ndarray:
    """Clip-local frame indices of t's window: [t-l, t+l] shifted into [0, n_frames) (spec 4.1)."""
    size = 2 * length + 1
    if n_frames < size:
        raise ClipTooShort(f"a clip of {n_frames} frames is shorter than the cube length {size} "
                           f"(2*{length}+1); use a smaller --length or a longer clip")
    if not 0 <= t < n_frames:
        raise IndexError(f"frame {t} outside a clip of {n_frames} frames")
    start = min(max(t - length, 0), n_frames - size)
    return np.arange(start, start + size, dtype=np.int64)


def box_slices(box: np.ndarray, height: int, width: int) -> tuple[slice, slice]:
    """Rows/cols of a box crop: ceil of each coordinate, end-exclusive (spec 4.2), at least 1 px.

    Boxes are clamped to the frame first; a degenerate (empty) box keeps 1 px so that every box yields a
    cube instead of crashing cv2.resize.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    c0 = min(max(math.ceil(x1), 0), width - 1)
    r0 = min(max(math.ceil(y1), 0), height - 1)
    c1 = min(max(math.ceil(x2), c0 + 1), width)
    r1 = min(max(math.ceil(y2), r0 + 1), height)
    return slice(r0, r1), slice(c0, c1)


def crop_resize(image: np.ndarray, box: np.ndarray, patch: int = 32) -> np.ndarray:
    """Crop ``box`` from an (H, W[, C]) image and resize to patch x patch with cv2 bilinear (dtype kept)."""
    rows, cols = box_slices(box, image.shape[0], image.shape[1])
    out = cv2.resize(np.ascontiguousarray(image[rows, cols]), (patch, patch), interpolation=cv2.INTER_LINEAR)
    return out.reshape((patch, patch) + image.shape[2:])


def window_crops(window: Sequence[np.ndarray] | np.ndarray, boxes: np.ndarray, patch: int = 32) -> np.ndarray:
    """T frames (H, W, C) of a window -> (n, T, P, P, C): each box's T crops resized to patch x patch, dtype
    kept. ``window`` is an array (T, H, W, C) or a sequence of T frames: only the crops are copied (a
    streaming window is never stacked whole); the T crops of a box go through one cv2 call, stacked along
    the channels (cv2 resizes every channel independently, so this equals T separate resizes)."""
    first = window[0]
    t_len, (h, w, c) = len(window), first.shape
    out = np.empty((len(boxes), t_len, patch, patch, c), first.dtype)
    for i, box in enumerate(boxes):
        rows, cols = box_slices(box, h, w)
        out[i] = _stack_resize([f[rows, cols] for f in window], patch)
    return out


def _stack_resize(crops: Sequence[np.ndarray], patch: int) -> np.ndarray:
    """T crops (h, w, C) -> (T, P, P, C) with one cv2.resize on their (h, w, T*C) channel stack (cv2 resizes
    every channel independently, so this equals T separate resizes)."""
    t_len, c = len(crops), crops[0].shape[2]
    img = np.concatenate(crops, axis=2)  # channels frame-major: (frame 0: C), (frame 1: C), ...
    out = cv2.resize(img, (patch, patch), interpolation=cv2.INTER_LINEAR)
    return out.reshape(patch, patch, t_len, c).transpose(2, 0, 1, 3)


def motion_energy(flow_cubes: np.ndarray) -> np.ndarray:
    """Spec 4.4: mean over the T frames of the per-frame sum of squared flow, one value per cube."""
    f = np.asarray(flow_cubes, np.float32)
    return (f.astype(np.float64) ** 2).sum(axis=(2, 3, 4)).mean(axis=1)


class TargetCubes(NamedTuple):
    """The cubes of one target frame after the motion filter, and which of the frame's boxes they are."""

    raw: np.ndarray  # (k, T, P, P, 3) uint8
    flow: np.ndarray  # (k, T, P, P, 2) float16
    boxes: np.ndarray  # (k, 4) float32, the boxes kept
    keep: np.ndarray  # (n,) bool over the frame's boxes: per-box data (class descriptions) follows it

    @property
    def n_dropped(self) -> int:
        return int((~self.keep).sum())


def target_cubes(win_frames: np.ndarray, win_flows: np.ndarray, boxes: np.ndarray, cfg: CubeConfig
                 ) -> TargetCubes:
    """The cubes of one target frame that pass the motion filter (spec 4.4): raw uint8, flow float16 (the
    filter sees the float32 values before the cast), the boxes kept and the mask of them.

    ``statevad prepare`` (:func:`clip_cubes`) and the streaming scorer both cube through here (the scorer
    through its two halves, :func:`flow_cubes` then :func:`window_crops` of the boxes it scores), which is
    what makes a scored file give exactly the cubes of a prepared one.
    """
    fl, keep = flow_cubes(win_flows, boxes, cfg)
    return TargetCubes(window_crops(win_frames, boxes[keep], cfg.patch), fl, boxes[keep], keep)


def flow_cubes(win_flows: Sequence[np.ndarray] | np.ndarray, boxes: np.ndarray, cfg: CubeConfig
               ) -> tuple[np.ndarray, np.ndarray]:
    """The flow half of :func:`target_cubes`: the float16 flow cubes of the boxes that pass the motion
    filter, and the filter's mask over ``boxes``."""
    fl = window_crops(win_flows, boxes, cfg.patch)
    keep = motion_energy(fl) > cfg.motion_thr
    return fl[keep].astype(np.float16), keep


@dataclass
class CubeSet:
    """Cubes of one clip: raw uint8, flow float16, clip-local target frame, the box, and filter count."""

    raw: np.ndarray  # (n, T, P, P, 3) uint8
    flow: np.ndarray  # (n, T, P, P, 2) float16
    frame: np.ndarray  # (n,) int64, clip-local
    box: np.ndarray  # (n, 4) float32
    n_dropped: int = 0
    classes: np.ndarray | None = None  # (n, 80) float16 class descriptions of the boxes, when given

    def __len__(self) -> int:
        return len(self.frame)


def empty_cubeset(cfg: CubeConfig) -> CubeSet:
    t, p = cfg.frames, cfg.patch
    return CubeSet(np.zeros((0, t, p, p, 3), np.uint8), np.zeros((0, t, p, p, 2), np.float16),
                   np.zeros(0, np.int64), np.zeros((0, 4), np.float32), 0)


def clip_cubes(frames: np.ndarray, flows: np.ndarray, boxes_per_frame: Sequence[np.ndarray],
               cfg: CubeConfig, progress: bool = False, desc: str = "cubes",
               classes_per_frame: Sequence[np.ndarray] | None = None) -> CubeSet:
    """All cubes of a clip, in frame order then box order, after the motion filter (spec 4.4).

    ``classes_per_frame`` (the boxes' class descriptions, :func:`statevad.boxes.describe_boxes`) follow
    their boxes into :attr:`CubeSet.classes`."""
    from tqdm import tqdm

    n = len(frames)
    if len(flows) != n or len(boxes_per_frame) != n:
        raise ValueError(f"frames ({n}), flows ({len(flows)}) and boxes ({len(boxes_per_frame)}) differ")
    if n < cfg.frames:
        elastic_window(0, n, cfg.length)  # raises ClipTooShort with the explanation
    raws, fls, idx, bxs, cls = [], [], [], [], []
    dropped = 0
    for t in tqdm(range(n), desc=desc, unit="frame", disable=not progress, leave=False, file=sys.stderr):
        b = np.asarray(boxes_per_frame[t], np.float32).reshape(-1, 4)
        if len(b) == 0:
            continue
        win = elastic_window(t, n, cfg.length)
        tc = target_cubes(frames[win[0]:win[-1] + 1], flows[win[0]:win[-1] + 1], b, cfg)
        dropped += tc.n_dropped
        raws.append(tc.raw)
        fls.append(tc.flow)
        idx.append(np.full(len(tc.boxes), t, np.int64))
        bxs.append(tc.boxes)
        if classes_per_frame is not None:
            c = np.asarray(classes_per_frame[t], np.float32).reshape(len(b), -1)
            cls.append(c[tc.keep].astype(np.float16))
    if not raws:
        out = empty_cubeset(cfg)
        out.n_dropped = dropped
        if classes_per_frame is not None:
            out.classes = np.zeros((0, N_CLASSES), np.float16)
        return out
    return CubeSet(np.concatenate(raws), np.concatenate(fls), np.concatenate(idx), np.concatenate(bxs),
                   dropped, np.concatenate(cls) if classes_per_frame is not None else None)
