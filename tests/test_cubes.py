"""Cubes (spec 4): elastic windows at clip edges, ceil crops, stacked resize, motion filter."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from statevad.config import CubeConfig
from statevad.cubes import ClipTooShort, box_slices, clip_cubes, crop_resize, elastic_window, window_crops
from statevad.errors import UserError


def test_elastic_window_spec_examples() -> None:
    # Spec 4.1: 10-frame videos, l=3. First 4 frames -> 0..6, last 4 -> 3..9 (clip-local), shifted not padded.
    for t in range(4):
        assert elastic_window(t, 10, 3).tolist() == list(range(0, 7))
    for t in range(6, 10):
        assert elastic_window(t, 10, 3).tolist() == list(range(3, 10))
    assert elastic_window(5, 10, 3).tolist() == list(range(2, 9))
    assert elastic_window(3, 7, 3).tolist() == list(range(7))


def test_elastic_window_too_short_clip() -> None:
    with pytest.raises(ClipTooShort, match="shorter than the cube length 7"):
        elastic_window(0, 6, 3)
    assert issubclass(ClipTooShort, UserError)


def test_box_slices_ceil_end_exclusive_and_degenerate() -> None:
    rows, cols = box_slices(np.array([1.2, 2.0, 5.5, 7.01]), 20, 30)
    assert (cols.start, cols.stop, rows.start, rows.stop) == (2, 6, 2, 8)
    rows, cols = box_slices(np.array([4.0, 4.0, 4.0, 4.0]), 20, 30)  # empty box -> 1 px
    assert (cols.stop - cols.start, rows.stop - rows.start) == (1, 1)
    rows, cols = box_slices(np.array([30.0, 20.0, 30.0, 20.0]), 20, 30)  # on the far edge
    assert (cols.start, cols.stop, rows.start, rows.stop) == (29, 30, 19, 20)


def test_crop_resize_matches_cv2() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    out = crop_resize(img, np.array([3.5, 4.2, 20.0, 33.9]), patch=32)
    ref = cv2.resize(img[5:34, 4:20], (32, 32), interpolation=cv2.INTER_LINEAR)
    assert out.dtype == np.uint8 and out.shape == (32, 32, 3)
    np.testing.assert_array_equal(out, ref)
    flow = rng.standard_normal((40, 50, 2)).astype(np.float32)
    assert crop_resize(flow, np.array([0, 0, 1, 1]), patch=8).shape == (8, 8, 2)


def test_window_crops_stacked_resize_equals_per_frame() -> None:
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (7, 30, 40, 3), dtype=np.uint8)
    flows = rng.standard_normal((7, 30, 40, 2)).astype(np.float32)
    box = np.array([[2.3, 1.0, 17.6, 25.2]], np.float32)
    raw, fl = window_crops(frames, box, patch=32), window_crops(list(flows), box, patch=32)
    assert raw.shape == (1, 7, 32, 32, 3) and fl.shape == (1, 7, 32, 32, 2)
    for k in range(7):
        np.testing.assert_array_equal(raw[0, k], crop_resize(frames[k], box[0]))
        np.testing.assert_allclose(fl[0, k], crop_resize(flows[k], box[0]), rtol=1e-5, atol=1e-5)


def test_clip_cubes_alignment_and_motion_filter() -> None:
    n, h, w = 12, 24, 32
    frames = np.stack([np.full((h, w, 3), t, np.uint8) for t in range(n)])  # pixel value = frame index
    flows = np.zeros((n, h, w, 2), np.float32)
    flows[:, :, 16:] = 1.0  # motion only in the right half
    boxes = [np.array([[0, 0, 8, 8], [20, 4, 30, 20]], np.float32) for _ in range(n)]
    boxes[5] = np.zeros((0, 4), np.float32)
    cs = clip_cubes(frames, flows, boxes, CubeConfig(length=3))
    assert cs.n_dropped == n - 1  # the static left box of every frame that has boxes
    assert len(cs) == n - 1 and cs.raw.shape == (n - 1, 7, 32, 32, 3) and cs.flow.dtype == np.float16
    assert 5 not in cs.frame.tolist()
    np.testing.assert_array_equal(cs.box, np.tile([[20, 4, 30, 20]], (n - 1, 1)))
    first = cs.raw[cs.frame.tolist().index(0)]
    assert first[:, 0, 0, 0].tolist() == list(range(7))  # window 0..6 for frame 0
    last = cs.raw[cs.frame.tolist().index(n - 1)]
    assert last[:, 0, 0, 0].tolist() == list(range(n - 7, n))


def test_clip_cubes_short_clip_raises() -> None:
    frames = np.zeros((3, 8, 8, 3), np.uint8)
    with pytest.raises(ClipTooShort):
        clip_cubes(frames, np.zeros((3, 8, 8, 2), np.float32), [np.zeros((0, 4))] * 3, CubeConfig(length=3))
