"""Dense optical flow (spec section 2) with OpenCV instead of FlowNet2.

The original ran FlowNet2 (PyTorch 0.3 + custom CUDA ops) at 512x384 and never rescaled the vectors.
We compute flow at the frame's own resolution, on grayscale, so vectors are in pixels of the original
frame (u = +x right, v = +y down). DIS (the default) is fast enough for CPU preprocessing; Farneback,
DeepFlow, dual TV-L1 and dense RLOF are alternatives (their accuracy and cost on a dataset's training clips:
``benchmarks/flow_quality.py``). See docs/DEVIATIONS.md ("preprocessing").
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

import cv2
import numpy as np

from statevad.config import FLOW_METHODS, MIN_FLOW_SIDE, FlowConfig
from statevad.errors import UserError

_DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


def _gray(frame: np.ndarray) -> np.ndarray:
    return frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)


def _optflow(method: str):  # -> the cv2.optflow module
    mod = getattr(cv2, "optflow", None)
    if mod is None:
        raise UserError(f"--flow {method} needs cv2.optflow: install opencv-contrib-python-headless, "
                        "or use --flow dis")
    return mod


class FlowEstimator:
    """``est(f0, f1) -> (H, W, 2) float32``: flow from f0 to f1 in original-frame pixels.

    One estimator object per process: the OpenCV algorithm objects hold state and are not shared
    across workers.
    """

    def __init__(self, cfg: FlowConfig | None = None, max_side: int = 0) -> None:
        self.cfg = cfg or FlowConfig()
        method = self.cfg.method.lower()
        if method not in FLOW_METHODS:
            raise UserError(f"unknown flow method {self.cfg.method!r}: choose one of "
                            f"{', '.join(FLOW_METHODS)}")
        if isinstance(max_side, bool) or not isinstance(max_side, int) or not (
                max_side == 0 or max_side >= MIN_FLOW_SIDE):
            raise UserError(f"the flow's largest side must be 0 (the frame's own size) or >= {MIN_FLOW_SIDE} "
                            f"px, got {max_side!r}")
        self.method, self.max_side = method, max_side
        self._calc = self._build(method)

    def _build(self, method: str) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        if method == "dis":
            if self.cfg.dis_preset not in _DIS_PRESETS:
                raise UserError(f"unknown DIS preset {self.cfg.dis_preset!r}: choose one of "
                                f"{', '.join(_DIS_PRESETS)}")
            dis = cv2.DISOpticalFlow_create(_DIS_PRESETS[self.cfg.dis_preset])
            return lambda a, b: dis.calc(_gray(a), _gray(b), None)
        if method == "farneback":
            return lambda a, b: cv2.calcOpticalFlowFarneback(_gray(a), _gray(b), None,
                                                             0.5, 3, 15, 3, 5, 1.2, 0)
        of = _optflow(method)
        if method == "deepflow":
            deep = of.createOptFlow_DeepFlow()
            return lambda a, b: deep.calc(_gray(a), _gray(b), None)
        if method == "tvl1":  # OpenCV's defaults (Zach et al. 2007 / Sanchez et al. 2013): 5 scales, 5 warps
            tvl1 = of.DualTVL1OpticalFlow_create()
            return lambda a, b: tvl1.calc(_gray(a), _gray(b), None)
        # Dense RLOF works on 3-channel 8-bit images only; grey input is replicated to 3 channels.
        return lambda a, b: of.calcOpticalFlowDenseRLOF(_bgr(a), _bgr(b), None)

    def __call__(self, f0: np.ndarray, f1: np.ndarray) -> np.ndarray:
        if f0.shape[:2] != f1.shape[:2]:
            raise UserError(f"flow needs frames of one size, got {f0.shape[:2]} and {f1.shape[:2]}")
        side = max(f0.shape[:2])
        if not self.max_side or side <= self.max_side:
            return np.asarray(self._calc(f0, f1), np.float32)
        return reduced_flow(self._calc, f0, f1, self.max_side / side)


def reduced_flow(calc: Callable[[np.ndarray, np.ndarray], np.ndarray], f0: np.ndarray, f1: np.ndarray,
                 scale: float) -> np.ndarray:
    """``calc``'s flow on the two frames shrunk by ``scale`` (area-averaged grey), brought back to the full
    frame: resized bilinearly and its vectors multiplied by the size ratio, so it is still in original-frame
    pixels. A speed knob for streaming (the work of dense flow grows with the pixel count): fine motion
    under a reduced pixel is lost, which the accuracy check in benchmarks/README.md measures
    (``score.flow_max_side``: frames larger than that are shrunk to it, smaller ones never)."""
    h, w = f0.shape[:2]
    sw, sh = max(8, round(w * scale)), max(8, round(h * scale))
    g0, g1 = (cv2.resize(_gray(f), (sw, sh), interpolation=cv2.INTER_AREA) for f in (f0, f1))
    small = np.asarray(calc(g0, g1), np.float32)
    flow = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    flow[..., 0] *= w / sw
    flow[..., 1] *= h / sh
    return flow


def _bgr(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR) if frame.ndim == 2 else frame


def flow_pairs(n: int) -> list[tuple[int, int]]:
    """Frame pairs whose flow is stored for frames 0..n-1: t -> t+1, and the last frame t-1 -> t.

    Unlike the original, the first frame gets its real forward flow (not flow(s, s) = 0), so its cubes
    are not dropped or scored on a spurious zero; a 1-frame clip gets flow(0, 0) = 0.
    """
    if n <= 1:
        return [(0, 0)] * n
    return [(t, t + 1) for t in range(n - 1)] + [(n - 2, n - 1)]


def clip_flow(frames: Sequence[np.ndarray] | np.ndarray, estimator: FlowEstimator, progress: bool = False,
              desc: str = "flow") -> np.ndarray:
    """Flow of every frame of a clip, ``(N, H, W, 2) float32`` (pairing of :func:`flow_pairs`)."""
    from tqdm import tqdm

    n = len(frames)
    if n == 0:
        return np.zeros((0, 0, 0, 2), np.float32)
    h, w = frames[0].shape[:2]
    out = np.empty((n, h, w, 2), np.float32)
    pairs = flow_pairs(n)
    for t in tqdm(range(n), desc=desc, unit="frame", disable=not progress, leave=False, file=sys.stderr):
        a, b = pairs[t]
        if t == n - 1 and n > 1:
            out[t] = out[t - 1]  # the last frame reuses flow(n-2 -> n-1), already computed for t = n-2
        else:
            out[t] = estimator(frames[a], frames[b])
    return out
