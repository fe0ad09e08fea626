"""Flow backends: sign and units on a known translation, pairing at clip edges, errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from statevad.config import FLOW_METHODS, FlowConfig
from statevad.errors import UserError
from statevad.flow import FlowEstimator, clip_flow, flow_pairs


def _textured(h: int = 96, w: int = 128, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (h // 4, w // 4), dtype=np.uint8)
    img = cv2.GaussianBlur(cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC), (5, 5), 0)
    return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)


def _shift(img: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Content moves by (+dx, +dy): the new pixel (x, y) shows the old (x - dx, y - dy)."""
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), borderMode=cv2.BORDER_REFLECT)


@pytest.mark.parametrize("method", FLOW_METHODS)
def test_known_translation_sign_and_units(method: str) -> None:
    f0 = _textured()
    f1 = _shift(f0, 3, -2)  # 3 px right, 2 px up
    flow = FlowEstimator(FlowConfig(method=method))(f0, f1)
    assert flow.shape == (96, 128, 2) and flow.dtype == np.float32
    inner = flow[16:-16, 16:-16]
    u, v = np.median(inner[..., 0]), np.median(inner[..., 1])
    assert abs(u - 3) < 0.5 and abs(v + 2) < 0.5, (method, u, v)


def test_flow_pairs_edges() -> None:
    assert flow_pairs(4) == [(0, 1), (1, 2), (2, 3), (2, 3)]
    assert flow_pairs(1) == [(0, 0)]


def test_clip_flow_first_frame_is_real_and_last_reuses_backward_pair() -> None:
    base = _textured(64, 64, seed=1)
    frames = np.stack([_shift(base, 2 * t, 0) for t in range(4)])
    flows = clip_flow(frames, FlowEstimator(FlowConfig(method="dis")))
    assert flows.shape == (4, 64, 64, 2)
    assert abs(np.median(flows[0, 8:-8, 8:-8, 0]) - 2) < 0.5  # not the original's zero first-frame flow
    np.testing.assert_array_equal(flows[3], flows[2])


def test_unknown_method_is_user_error() -> None:
    with pytest.raises(UserError, match="unknown flow method"):
        FlowEstimator(FlowConfig(method="flownet2"))


@pytest.mark.parametrize("max_side", [128, 192])
def test_reduced_flow_is_in_full_frame_pixels(max_side: int) -> None:
    """The streaming speed knob (score.flow_max_side): flow on a frame shrunk to that larger side, brought
    back to the full frame with its vectors in full-frame pixels (a 4 px shift stays 4 px)."""
    f0 = _textured(192, 256, seed=2)
    f1 = _shift(f0, 4, -2)
    est = FlowEstimator(FlowConfig(method="dis"), max_side=max_side)
    flow = est(f0, f1)
    assert flow.shape == (192, 256, 2) and flow.dtype == np.float32
    inner = flow[32:-32, 32:-32]
    u, v = np.median(inner[..., 0]), np.median(inner[..., 1])
    assert abs(u - 4) < 0.5 and abs(v + 2) < 0.5, (max_side, u, v)
    # a frame at or under the size is never shrunk: exactly the full-resolution flow
    np.testing.assert_array_equal(FlowEstimator(FlowConfig(), max_side=256)(f0, f1), FlowEstimator()(f0, f1))


@pytest.mark.parametrize("max_side", [-1, 8, 1.5, True])
def test_flow_max_side_out_of_range_is_user_error(max_side) -> None:
    with pytest.raises(UserError, match="largest side"):
        FlowEstimator(FlowConfig(), max_side=max_side)
