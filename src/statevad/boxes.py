"""Object boxes per frame (spec section 3): reference files, an ONNX detector, frame-difference motion boxes.

The published pipeline ("obj_det_with_motion") takes every detection of a COCO detector regardless of class,
removes boxes mostly covered by larger ones (3.2), then adds boxes around moving pixels *outside* the
detections (3.3) so that objects the detector misses still get a cube. We keep that structure but replace
Cascade R-CNN (uninstallable mmdet 1.0) by the small NanoDet-m ONNX model run with onnxruntime; the weaker
detector makes the motion boxes matter more (recall is measured in ``benchmarks/preprocess.py``).

All boxes are ``float32 (n, 4)`` = x1, y1, x2, y2 in frame pixels (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from statevad.config import BoxConfig
from statevad.errors import UserError

SOURCES = ("reference", "detector", "motion", "detector+motion", "auto")

_EMPTY = np.zeros((0, 4), np.float32)

# NanoDet-m (see ../shared/models/README.md): BGR input normalised with these, 416x416, 3 strides, GFL bins.
_NANODET_SIZE = 416
_NANODET_MEAN = np.array([103.53, 116.28, 123.675], np.float32)
_NANODET_STD = np.array([57.375, 57.12, 58.395], np.float32)
_NANODET_STRIDES = (8, 16, 32)
_NANODET_BINS = 11
_NANODET_CLASSES = 80
# Cells whose best class score is below this are never decoded: a pure speed cut, far below any
# sensible score threshold.
_NANODET_PREFILTER = 0.05
N_CLASSES = _NANODET_CLASSES  # the length of a box's class description (describe_boxes)
# A detector cell describes a box when their IoU exceeds this (fixed before any Ped2 run: a box and the
# cells of the object in it overlap by more, neighbours' cells by less; benchmarks/ped2_appearance.py).
CLASS_IOU = 0.3


def bundled_detector() -> Path:
    """The NanoDet-m ONNX file shipped inside the package (``statevad/data``)."""
    return Path(__file__).resolve().parent / "data" / "nanodet-m-416.onnx"


def default_detector_path() -> Path:
    """``$STATEVAD_DETECTOR``, else the NanoDet-m bundled with the package (``statevad/data``), else
    ``../shared/models/nanodet-m-416.onnx`` beside the repo or the CWD.

    Returned even when it does not exist so that error messages can name the expected location.
    """
    env = os.environ.get("STATEVAD_DETECTOR")
    if env:
        return Path(env)
    bundled = bundled_detector()
    rel = Path("..") / "shared" / "models" / "nanodet-m-416.onnx"
    repo = Path(__file__).resolve().parents[2]
    candidates = [bundled, repo / rel, Path.cwd() / rel]
    for cand in candidates:
        if cand.is_file():
            return cand
    return candidates[0]


# ----------------------------------------------------------------------------------------------- detector
class Detector:
    """NanoDet-m COCO detector through onnxruntime: ``det(frame_bgr) -> (n, 6)`` x1,y1,x2,y2,score,class.

    ``letterbox=True`` keeps the aspect ratio (pads with the mean colour); plain resize distorts the frame
    as most NanoDet exports are trained to tolerate. Boxes are mapped back to frame pixels and clipped.
    Class-wise NMS at ``nms_iou``; ``score_thr`` is applied here only as a floor (callers filter further).

    Small objects: ``tiles`` runs it on that many overlapping column tiles instead of the frame; ``grid`` on
    the whole frame *and* a grid x grid of overlapping tiles, each tile's boxes that touch one of its inner
    edges dropped (an object cut there is whole in the neighbouring tile when small, and in the whole frame
    when large), so magnification finds small objects without splitting the large ones.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, score_thr: float = 0.05,
                 nms_iou: float = 0.6, letterbox: bool = False, tiles: int = 1, grid: int = 1) -> None:
        self.path = Path(path) if path is not None else default_detector_path()
        self.score_thr = float(score_thr)
        self.nms_iou = float(nms_iou)
        self.letterbox = bool(letterbox)
        if tiles < 1:
            raise UserError(f"detector tiles must be >= 1, got {tiles}")
        if grid < 1 or (grid > 1 and tiles > 1):
            raise UserError(f"detector grid must be >= 1 and not combined with column tiles, got grid "
                            f"{grid}, tiles {tiles}")
        self.tiles = int(tiles)
        self.grid = int(grid)
        self._session = _open_nanodet(self.path)
        self._input = self._session.get_inputs()[0].name
        outs = [o.name for o in self._session.get_outputs()]
        self._score_names, self._box_names = outs[:3], outs[3:]
        self._centres = [_cell_centres(_NANODET_SIZE // s, s) for s in _NANODET_STRIDES]

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        return self.detect_with_cells(frame)[0]

    def detect_with_cells(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Detections (n, 6) as ``__call__`` gives them, and the dense cells they came from: boxes (m, 4)
        and 80 class scores (m, 80) (:meth:`cells` over every tile), for :func:`describe_boxes`."""
        b, cls = self._all_cells(frame)
        if len(b) == 0:
            return np.zeros((0, 6), np.float32), b, cls
        s, k = cls.max(axis=1), cls.argmax(axis=1)
        keep = _nms_per_class(b, s, k, self.score_thr, self.nms_iou)
        out = np.concatenate([b[keep], s[keep, None], k[keep, None].astype(np.float32)], axis=1)
        return out[np.argsort(-out[:, 4], kind="stable")].astype(np.float32), b, cls

    def _all_cells(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`cells` of every region the detector looks at (the frame, its column tiles or its grid)."""
        h, w = frame.shape[:2]
        if self.grid == 1:
            parts = [self.cells(frame[:, x0:x1], x0) for x0, x1 in tile_ranges(w, self.tiles)]
        else:
            parts = [self.cells(frame)]
            for y0, y1 in tile_ranges(h, self.grid):
                for x0, x1 in tile_ranges(w, self.grid):
                    b, cls = self.cells(frame[y0:y1, x0:x1], x0, y0)
                    keep = ~touches_inner_edge(b, (x0, y0, x1, y1), (w, h))
                    parts.append((b[keep], cls[keep]))
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def cells(self, image: np.ndarray, x_offset: int = 0, y_offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Every decoded cell of one image region before NMS: boxes (n, 4) in frame pixels and the full
        COCO class scores (n, 80). Cells whose best score is under ``score_thr`` (and the prefilter) are
        skipped. The class scores let a caller describe *what* a box holds, not only where it is."""
        blob, scale, pad = _nanodet_input(np.ascontiguousarray(image), self.letterbox)
        res = self._session.run(self._score_names + self._box_names, {self._input: blob})
        boxes = [np.zeros((0, 4), np.float32)]
        scores = [np.zeros((0, _NANODET_CLASSES), np.float32)]
        for level, stride in enumerate(_NANODET_STRIDES):
            cls = res[level][0]
            keep = np.nonzero(cls.max(axis=1) > max(self.score_thr, _NANODET_PREFILTER))[0]
            if keep.size == 0:
                continue
            dist = _gfl_distances(res[3 + level][0][keep]) * stride
            c = self._centres[level][keep]
            boxes.append(np.concatenate([c - dist[:, :2], c + dist[:, 2:]], axis=1))
            scores.append(cls[keep])
        b = np.concatenate(boxes)
        b = (b - np.array([pad[0], pad[1], pad[0], pad[1]], np.float32)) / np.array(
            [scale[0], scale[1], scale[0], scale[1]], np.float32)
        h, w = image.shape[:2]
        b = np.clip(b, 0, [w, h, w, h]).astype(np.float32) + np.array([x_offset, y_offset] * 2, np.float32)
        return b, np.concatenate(scores).astype(np.float32)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` (n, 4) with every box of ``b`` (m, 4), x1 y1 x2 y2: (n, m) float64."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0]).clip(0) * (a[:, 3] - a[:, 1]).clip(0)
    area_b = (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def describe_boxes(boxes: np.ndarray, cell_boxes: np.ndarray, cell_scores: np.ndarray,
                   min_iou: float = CLASS_IOU) -> np.ndarray:
    """What each box holds, as the detector sees it: (n, 80) float32, per COCO class the best score of the
    detector cells overlapping the box with IoU > ``min_iou`` (zeros where no cell does).

    Every box gets one, also a motion box the detector did not report: its cells still score what is
    there (a bicycle at 0.2 is not a detection at 0.4, but it is not a person either).
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    out = np.zeros((len(boxes), N_CLASSES), np.float32)
    if not len(boxes) or not len(cell_boxes):
        return out
    over = iou_matrix(boxes, cell_boxes) > min_iou  # (boxes, cells)
    for j in np.flatnonzero(over.any(axis=1)):
        out[j] = cell_scores[over[j]].max(axis=0)
    return out


def tile_ranges(length: int, tiles: int, overlap: float = 0.2) -> list[tuple[int, int]]:
    """``tiles`` ranges covering ``length`` pixels (columns or rows), neighbours overlapping by ``overlap`` of
    a tile.

    Tiling enlarges small objects for the fixed 416x416 input: Ped2 walkers far from the camera are a few
    pixels wide and NanoDet-m misses them on the whole frame.
    """
    if tiles == 1:
        return [(0, length)]
    tw = length / (tiles - (tiles - 1) * overlap)
    step = tw * (1 - overlap)
    return [(round(i * step), min(length, round(i * step + tw))) for i in range(tiles)]


def touches_inner_edge(boxes: np.ndarray, tile: tuple[int, int, int, int], frame_size: tuple[int, int],
                       margin: float = 2.0) -> np.ndarray:
    """Which boxes (n, 4) of a tile (x0, y0, x1, y1) reach within ``margin`` px of one of its edges that is
    not the frame's: the object may be cut there. (n,) bool."""
    x0, y0, x1, y1 = tile
    w, h = frame_size
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    cut = np.zeros(len(b), bool)
    if x0 > 0:
        cut |= b[:, 0] <= x0 + margin
    if y0 > 0:
        cut |= b[:, 1] <= y0 + margin
    if x1 < w:
        cut |= b[:, 2] >= x1 - margin
    if y1 < h:
        cut |= b[:, 3] >= y1 - margin
    return cut


def _open_nanodet(path: Path):  # -> onnxruntime.InferenceSession
    """Open ``path`` and check that its inputs/outputs are NanoDet-m's, so a wrong file fails loudly."""
    import onnxruntime as ort

    if not path.is_file():
        raise UserError(f"detector model not found: {path} (pass --detector PATH, set $STATEVAD_DETECTOR, "
                        "or use --boxes motion)")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1  # measured faster than 2 on the 2-core box; --jobs parallelises clips
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for unparsable files
        raise UserError(f"{path} is not a loadable ONNX model ({type(exc).__name__}); "
                        "expected NanoDet-m 416 (see ../shared/models/README.md)") from None
    ins, outs = sess.get_inputs(), sess.get_outputs()
    n_cells = [(_NANODET_SIZE // s) ** 2 for s in _NANODET_STRIDES]
    want_out = [[1, n, _NANODET_CLASSES] for n in n_cells] + [[1, n, 4 * _NANODET_BINS] for n in n_cells]
    ok = (len(ins) == 1 and list(ins[0].shape) == [1, 3, _NANODET_SIZE, _NANODET_SIZE]
          and [list(o.shape) for o in outs] == want_out)
    if not ok:
        raise UserError(f"{path} is not a NanoDet-m 416 detector (input {[list(i.shape) for i in ins]}, "
                        f"outputs {[list(o.shape) for o in outs]}); use ../shared/models/nanodet-m-416.onnx")
    return sess


def _nanodet_input(frame: np.ndarray, letterbox: bool) -> tuple[np.ndarray, tuple[float, float],
                                                                 tuple[float, float]]:
    """Resize to 416x416 (plain or letterboxed), normalise, NCHW. Returns blob, (sx, sy), (pad_x, pad_y)."""
    h, w = frame.shape[:2]
    n = _NANODET_SIZE
    if letterbox:
        s = min(n / w, n / h)
        nw, nh = round(w * s), round(h * s)
        canvas = np.empty((n, n, 3), np.uint8)
        canvas[:] = _NANODET_MEAN.round().astype(np.uint8)
        px, py = (n - nw) // 2, (n - nh) // 2
        canvas[py:py + nh, px:px + nw] = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_LINEAR)
        img, scale, pad = canvas, (nw / w, nh / h), (float(px), float(py))
    else:
        img = cv2.resize(frame, (n, n), interpolation=cv2.INTER_LINEAR)
        scale, pad = (n / w, n / h), (0.0, 0.0)
    x = (img.astype(np.float32) - _NANODET_MEAN) / _NANODET_STD
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None]), scale, pad


def _cell_centres(n: int, stride: int) -> np.ndarray:
    """Row-major cell centres (x, y) in input pixels: NanoDet-m uses (index + 0.5) * stride."""
    ys, xs = np.mgrid[0:n, 0:n]
    return (np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32) + 0.5) * stride


def _gfl_distances(logits: np.ndarray) -> np.ndarray:
    """Generalised-focal-loss decoding: softmax over 11 bins per side, expectation = distance in strides."""
    z = logits.reshape(-1, 4, _NANODET_BINS)
    z = np.exp(z - z.max(axis=2, keepdims=True))
    z /= z.sum(axis=2, keepdims=True)
    return (z * np.arange(_NANODET_BINS, dtype=np.float32)).sum(axis=2)


def _nms_per_class(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, score_thr: float,
                   iou: float) -> np.ndarray:
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    idx = cv2.dnn.NMSBoxesBatched(xywh.tolist(), scores.tolist(), classes.tolist(), score_thr, iou)
    return np.asarray(idx, np.int64).reshape(-1)


# --------------------------------------------------------------------------------- appearance filtering
def box_area(boxes: np.ndarray) -> np.ndarray:
    """(n,): (w+1)*(h+1) of each box x1 y1 x2 y2 (spec 3.1-3.2's +1 pixel convention), in ``boxes``' dtype."""
    return (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)


def filter_detections(dets: np.ndarray, score_thr: float, min_area: float) -> np.ndarray:
    """Spec 3.1: all classes count; keep score > score_thr and (w+1)*(h+1) >= min_area (the +1 convention)."""
    if len(dets) == 0:
        return _EMPTY
    keep = (dets[:, 4] > score_thr) & (box_area(dets) >= min_area)
    return dets[keep, :4].astype(np.float32)


def cover_ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, m): the share of each box of ``a`` that lies inside each box of ``b``, in spec 3.2's +1 pixel
    convention (what :func:`remove_covered` compares with ``cover_thr``)."""
    a = np.asarray(a, np.float32).reshape(-1, 4)
    b = np.asarray(b, np.float32).reshape(-1, 4)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]) + 1
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]) + 1
    return np.clip(iw, 0, None) * np.clip(ih, 0, None) / box_area(a)[:, None]


def remove_covered(boxes: np.ndarray, cover_thr: float) -> np.ndarray:
    """Spec 3.2: drop a box when more than ``cover_thr`` of its own area lies inside a later (larger) box.

    Boxes are visited in ascending area (numpy's default argsort, as the original); each is compared with
    every box after it, dropped or not, and the survivors come back in that ascending order.
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if len(boxes) <= 1:
        return boxes.copy()
    b = boxes[np.argsort(box_area(boxes))]
    ratio = cover_ratio(b, b)
    later = np.triu(np.ones((len(b), len(b)), bool), k=1)
    drop = ((ratio > cover_thr) & later).any(axis=1)
    return b[~drop]


# ------------------------------------------------------------------------------------------ motion boxes
def motion_boxes(f_prev: np.ndarray, f_cur: np.ndarray, f_next: np.ndarray, exclude: np.ndarray,
                 cfg: BoxConfig) -> np.ndarray:
    """Spec 3.3: boxes around pixels that changed over [t-1, t, t+1], outside the ``exclude`` boxes.

    The original adds the two uint8 differences in numpy, which wraps modulo 256 so strong motion can
    vanish; by default we saturate instead (the evident intent). ``cfg.motion_wrap=True`` reproduces it.
    """
    b0, b1, b2 = (motion_blur(f, cfg) for f in (f_prev, f_cur, f_next))
    return blurred_motion_boxes(b0, b1, b2, exclude, cfg)


def motion_blur(frame: np.ndarray, cfg: BoxConfig) -> np.ndarray:
    """The smoothing :func:`motion_boxes` differences frames after (one frame's share of its work)."""
    return cv2.GaussianBlur(_as_bgr(frame), (cfg.motion_kernel, cfg.motion_kernel), 0)


def blurred_motion_boxes(b0: np.ndarray, b1: np.ndarray, b2: np.ndarray, exclude: np.ndarray,
                         cfg: BoxConfig) -> np.ndarray:
    """:func:`motion_boxes` of three frames already smoothed by :func:`motion_blur` (a stream blurs each
    frame once, not three times)."""
    d01, d12 = cv2.absdiff(b0, b1), cv2.absdiff(b1, b2)
    acc = d01 + d12 if cfg.motion_wrap else cv2.add(d01, d12)
    # a pixel changed when any channel's sum of differences passes the threshold: the channels' max
    # against it (OpenCV kernels: numpy's any() over the channel axis cost more than the blurs)
    b, g, r = cv2.split(acc)
    _, fg = cv2.threshold(cv2.max(cv2.max(b, g), r), cfg.motion_binary_thr, 255, cv2.THRESH_BINARY)
    h, w = fg.shape
    e = cfg.motion_extend
    for x1, y1, x2, y2 in np.asarray(exclude, np.float32).reshape(-1, 4).astype(np.int64):
        fg[max(0, y1 - e):min(h, y2 + e) + 1, max(0, x1 - e):min(w, x2 + e) + 1] = 0
    contours, _ = cv2.findContours(fg, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    out = []
    for c in contours:
        x, y, bw, bh = cv2.boundingRect(c)
        if (bw + 1) * (bh + 1) > cfg.motion_area_thr and bw / bh < 10 and bh / bw < 10:
            out.append([max(0, x - e), max(0, y - e), min(x + bw + e, w), min(y + bh + e, h)])
    return np.asarray(out, np.float32).reshape(-1, 4)


def _as_bgr(frame: np.ndarray) -> np.ndarray:
    return frame if frame.ndim == 3 else cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)


# ------------------------------------------------------------------------------------------ reference
def load_reference_boxes(path: str | os.PathLike[str], n_frames: int | None,
                         allow_pickle: bool | None = None) -> list[np.ndarray]:
    """Per-frame boxes from ``boxes_reference_*.npz`` (keys ``boxes`` (N,4), ``offsets`` (frames+1,)).

    The original pipeline's ``.npy`` box files (spec 3.5) are pickled object arrays, and unpickling can
    run arbitrary code, so they are refused unless the caller opts in (``allow_pickle=True``, or the
    environment variable ``STATEVAD_ALLOW_PICKLE=1``) for a file it trusts; a warning says so each time.
    ``n_frames=None`` skips the frame-count check.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"reference box file not found: {path} (use --boxes detector+motion or motion)")
    if allow_pickle is None:
        allow_pickle = os.environ.get("STATEVAD_ALLOW_PICKLE", "") == "1"
    try:
        if path.suffix == ".npy":
            per_frame = _load_pickled_boxes(path, allow_pickle)
        else:
            with np.load(path, allow_pickle=False) as z:
                boxes = np.asarray(z["boxes"], np.float32).reshape(-1, 4)
                offsets = np.asarray(z["offsets"], np.int64)
            if offsets[0] != 0 or offsets[-1] != len(boxes) or np.any(np.diff(offsets) < 0):
                raise ValueError("offsets are not a monotone index into boxes")
            per_frame = [boxes[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]
    except (OSError, KeyError, ValueError, IndexError, EOFError, TypeError) as exc:
        raise UserError(f"cannot read reference boxes {path}: {str(exc)[:200]} "
                        "(expected an .npz with 'boxes' (N,4) and 'offsets' (frames+1))") from None
    for i, b in enumerate(per_frame):
        if b.size and not np.isfinite(b).all():
            raise UserError(f"reference boxes {path}: the boxes of frame {i} hold NaN or inf coordinates; "
                            "the file is corrupted or was written by another program")
    if n_frames is not None and len(per_frame) != n_frames:
        raise UserError(f"reference boxes {path} cover {len(per_frame)} frames but the split has {n_frames}; "
                        "they belong to another dataset or split")
    return per_frame


def _load_pickled_boxes(path: Path, allow_pickle: bool) -> list[np.ndarray]:
    """An original ``.npy`` box file: numeric arrays load safely; object arrays need the opt-in."""
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" not in str(exc):
            raise
        if not allow_pickle:
            raise UserError(f"reference boxes {path} are a pickled object array (the original code's "
                            "format); unpickling can run arbitrary code, so it is refused: convert the file "
                            "to the .npz format, or set STATEVAD_ALLOW_PICKLE=1 if you trust its "
                            "source") from None
        warnings.warn(f"unpickling {path} (STATEVAD_ALLOW_PICKLE): only do this for files you trust",
                      stacklevel=3)
        arr = np.load(path, allow_pickle=True)
    return [np.asarray(b, np.float32).reshape(-1, 4) for b in arr]


# ------------------------------------------------------------------------------------------ extractor
@dataclass
class _Resolved:
    source: str
    reason: str


def resolve_source(cfg: BoxConfig, source: str | None = None) -> _Resolved:
    """Turn ``auto`` into a concrete source: detector+motion when the detector file exists, else motion."""
    src = (source or cfg.source).lower()
    if src not in SOURCES:
        raise UserError(f"unknown box source {src!r}: choose one of {', '.join(SOURCES)}")
    if src != "auto":
        return _Resolved(src, "requested")
    path = Path(cfg.detector_path) if cfg.detector_path else default_detector_path()
    if path.is_file():
        return _Resolved("detector+motion", f"auto: detector found at {path}")
    return _Resolved("motion", f"auto: no detector at {path}")


_BLUR_CACHE = 8  # frames whose motion blur a BoxExtractor keeps (3 per stream; a few streams at once)


class BoxExtractor:
    """Boxes of one frame from the frame and its hard-border neighbours (spec 3): ``(n, 4) float32``.

    ``detector+motion`` returns the detections after 3.1/3.2 followed by the motion boxes found outside
    them (3.3, step 6). ``reference`` boxes come from a file, not from pixels: use
    :func:`load_reference_boxes` instead.
    """

    def __init__(self, cfg: BoxConfig, source: str | None = None) -> None:
        resolved = resolve_source(cfg, source)
        if resolved.source == "reference":
            raise UserError("reference boxes are read from a file (load_reference_boxes), not computed")
        self.cfg = cfg
        self._blur_cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # id -> (frame, its motion_blur)
        self.source = resolved.source
        self.reason = resolved.reason
        self.detector: Detector | None = None
        if "detector" in self.source:
            self.detector = Detector(cfg.detector_path, score_thr=min(cfg.score_thr, 0.05),
                                     nms_iou=cfg.nms_iou, letterbox=cfg.detector_letterbox,
                                     tiles=cfg.detector_tiles, grid=cfg.detector_grid)

    @property
    def describes(self) -> bool:
        """Whether :meth:`with_classes` gives real class descriptions (a detector runs)."""
        return self.detector is not None

    def appearance(self, frame: np.ndarray) -> np.ndarray:
        return self.detect(frame)[0]

    def detect(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The detections of ``frame`` after spec 3.1/3.2, and the detector's dense cells (boxes, 80 class
        scores) they came from, for :func:`describe_boxes`; empty without a detector."""
        if self.detector is None:
            return _EMPTY, _EMPTY, np.zeros((0, N_CLASSES), np.float32)
        dets, cell_boxes, cell_scores = self.detector.detect_with_cells(frame)
        dets = filter_detections(dets, self.cfg.score_thr, self.cfg.min_area)
        return remove_covered(dets, self.cfg.cover_thr), cell_boxes, cell_scores

    def __call__(self, f_prev: np.ndarray, f_cur: np.ndarray, f_next: np.ndarray) -> np.ndarray:
        return self.with_classes(f_prev, f_cur, f_next)[0]

    def with_classes(self, f_prev: np.ndarray, f_cur: np.ndarray, f_next: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
        """The boxes of ``__call__`` and their class descriptions (n, 80) (:func:`describe_boxes`; zeros
        without a detector), from the same detector pass."""
        app, cell_boxes, cell_scores = self.detect(f_cur)
        boxes = self.with_motion(f_prev, f_cur, f_next, app)
        return boxes, describe_boxes(boxes, cell_boxes, cell_scores)

    def with_motion(self, f_prev: np.ndarray, f_cur: np.ndarray, f_next: np.ndarray,
                    app: np.ndarray) -> np.ndarray:
        """The detections ``app`` followed by the motion boxes outside them (when the source has motion)."""
        if "motion" not in self.source:
            return app
        b0, b1, b2 = (self._blurred(f) for f in (f_prev, f_cur, f_next))
        mot = blurred_motion_boxes(b0, b1, b2, app, self.cfg)
        return np.concatenate([app, mot]).astype(np.float32) if len(mot) else app

    def _blurred(self, frame: np.ndarray) -> np.ndarray:
        """:func:`motion_blur` of ``frame``, kept for the last few frames asked for: consecutive calls of a
        stream share two of their three frames. Found by identity (the very array object, held here so its
        id cannot be reused), so frames of other streams are never confused; the pipeline never writes into
        a frame it has handed on."""
        key = id(frame)
        hit = self._blur_cache.get(key)
        if hit is not None and hit[0] is frame:
            return hit[1]
        out = motion_blur(frame, self.cfg)
        self._blur_cache[key] = (frame, out)
        while len(self._blur_cache) > _BLUR_CACHE:
            self._blur_cache.pop(next(iter(self._blur_cache)))
        return out


def clip_boxes(frames: Sequence[np.ndarray] | np.ndarray, extractor: BoxExtractor,
               progress: bool = False, desc: str = "boxes") -> list[np.ndarray]:
    """Boxes of every frame, neighbours replicated at the clip's edges (the original's 'hard' border)."""
    return clip_boxes_and_classes(frames, extractor, progress, desc)[0]


def clip_boxes_and_classes(frames: Sequence[np.ndarray] | np.ndarray, extractor: BoxExtractor,
                           progress: bool = False, desc: str = "boxes"
                           ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """:func:`clip_boxes` and each box's class description (:meth:`BoxExtractor.with_classes`)."""
    from tqdm import tqdm

    n = len(frames)
    boxes, classes = [], []
    for t in tqdm(range(n), desc=desc, unit="frame", disable=not progress, leave=False, file=sys.stderr):
        b, c = extractor.with_classes(frames[max(t - 1, 0)], frames[t], frames[min(t + 1, n - 1)])
        boxes.append(b)
        classes.append(c)
    return boxes, classes
