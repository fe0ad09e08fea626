"""Box sources (spec 3): covered-box removal, motion boxes, reference files, the NanoDet detector."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import statevad
from statevad.boxes import (
    BoxExtractor,
    Detector,
    clip_boxes,
    default_detector_path,
    filter_detections,
    load_reference_boxes,
    motion_boxes,
    remove_covered,
    resolve_source,
    tile_ranges,
    touches_inner_edge,
)
from statevad.config import BoxConfig
from statevad.errors import UserError

# The NanoDet bundled with the package (statevad/data), else ../shared/models: present on every install.
NANODET = default_detector_path()
needs_detector = pytest.mark.skipif(not NANODET.is_file(), reason=f"NanoDet model not found at {NANODET}")


def _scene(n: int = 5, h: int = 60, w: int = 80) -> np.ndarray:
    """A bright 10x16 block moving 4 px right per frame over a flat grey background."""
    frames = np.full((n, h, w, 3), 90, np.uint8)
    for t in range(n):
        frames[t, 20:36, 10 + 4 * t:20 + 4 * t] = 220
    return frames


def _pb_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _pb(field: int, value: int | bytes | str) -> bytes:
    """One protobuf field: varint for ints, length-delimited for bytes/str (enough to write an ONNX)."""
    if isinstance(value, int):
        return _pb_varint(field << 3) + _pb_varint(value)
    data = value.encode() if isinstance(value, str) else value
    return _pb_varint(field << 3 | 2) + _pb_varint(len(data)) + data


def _relu_onnx() -> bytes:
    """A valid one-node ONNX model (Relu on 1x3x8x8), written without the onnx package."""
    shape = b"".join(_pb(1, _pb(1, d)) for d in (1, 3, 8, 8))
    ttype = _pb(1, _pb(1, 1) + _pb(2, shape))  # TypeProto.tensor_type(elem_type=FLOAT, shape)
    node = _pb(1, "x") + _pb(2, "y") + _pb(4, "Relu")
    graph = (_pb(1, node) + _pb(2, "g") + _pb(11, _pb(1, "x") + _pb(2, ttype))
             + _pb(12, _pb(1, "y") + _pb(2, ttype)))
    return _pb(1, 8) + _pb(7, graph) + _pb(8, _pb(1, "") + _pb(2, 17))


def test_remove_covered_drops_small_box_inside_larger() -> None:
    big = [0, 0, 49, 49]
    inside = [10, 10, 19, 19]  # fully covered
    half = [45, 0, 54, 9]  # 5/10 of its width inside big: ratio 0.5 <= 0.6, kept
    out = remove_covered(np.array([big, inside, half], np.float32), 0.6)
    assert out.tolist() == [half, big]  # ascending area, covered one gone


def test_remove_covered_equal_boxes_keeps_one() -> None:
    out = remove_covered(np.array([[0, 0, 9, 9], [0, 0, 9, 9]], np.float32), 0.6)
    assert len(out) == 1


def test_filter_detections_score_strict_and_area_plus_one() -> None:
    dets = np.array([[0, 0, 9, 9, 0.5, 0], [0, 0, 9, 9, 0.51, 3], [0, 0, 8, 9, 0.9, 1]], np.float32)
    out = filter_detections(dets, score_thr=0.5, min_area=100)
    assert out.tolist() == [[0, 0, 9, 9]]


def test_motion_boxes_find_the_mover_and_respect_exclusion() -> None:
    f = _scene()
    cfg = BoxConfig(motion_area_thr=100, motion_binary_thr=18, motion_kernel=3)
    boxes = motion_boxes(f[1], f[2], f[3], np.zeros((0, 4)), cfg)
    assert boxes.shape == (1, 4) and boxes.dtype == np.float32
    x1, y1, x2, y2 = boxes[0]
    assert x1 <= 14 and x2 >= 32 and y1 <= 20 and y2 >= 35  # covers the block over t-1..t+1
    assert len(motion_boxes(f[1], f[2], f[3], np.array([[0, 0, 79, 59]]), cfg)) == 0
    assert len(motion_boxes(f[2], f[2], f[2], np.zeros((0, 4)), cfg)) == 0  # no change, no box


def test_motion_mask_and_the_extractors_blur_cache_give_the_same_boxes() -> None:
    """The per-pixel test in OpenCV (the channels' max against the threshold) is numpy's any(axis=2) over
    the threshold, and a BoxExtractor blurring each frame once (found by identity) gives motion_boxes'."""
    import cv2

    from statevad.boxes import motion_blur

    rng = np.random.default_rng(3)
    frames = [cv2.GaussianBlur(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), (7, 7), 0)
              for _ in range(6)]
    for thr in (0, 18, 60, 255):
        cfg = BoxConfig(motion_area_thr=4, motion_binary_thr=thr, motion_kernel=3)
        b0, b1, b2 = (motion_blur(f, cfg) for f in frames[:3])
        acc = cv2.add(cv2.absdiff(b0, b1), cv2.absdiff(b1, b2))
        b, g, r = cv2.split(acc)
        _, fg = cv2.threshold(cv2.max(cv2.max(b, g), r), thr, 255, cv2.THRESH_BINARY)
        np.testing.assert_array_equal(fg, ((acc > thr).any(axis=2)).astype(np.uint8) * 255)
        want = [motion_boxes(frames[t - 1], frames[t], frames[t + 1], np.zeros((0, 4)), cfg)
                for t in range(1, 5)]
        ext = BoxExtractor(cfg, "motion")
        got = [ext(frames[t - 1], frames[t], frames[t + 1]) for t in range(1, 5)]
        for w, gt in zip(want, got, strict=True):
            np.testing.assert_array_equal(w, gt)
        assert any(len(w) for w in want) or thr == 255


def test_motion_wrap_reproduces_uint8_overflow() -> None:
    # A global 0 -> 128 -> 0 flash: each difference is 128, their uint8 sum wraps to 0 in the original, so
    # the wrap option sees no motion while the default (saturating) sum sees the whole frame.
    a = np.zeros((40, 40, 3), np.uint8)
    b = np.full_like(a, 128)
    cfg = BoxConfig(motion_kernel=3, motion_area_thr=10)
    assert motion_boxes(a, b, a, np.zeros((0, 4)), cfg).tolist() == [[0, 0, 40, 40]]
    wrap = BoxConfig(motion_kernel=3, motion_area_thr=10, motion_wrap=True)
    assert len(motion_boxes(a, b, a, np.zeros((0, 4)), wrap)) == 0


def test_motion_source_and_clip_boxes_borders() -> None:
    frames = _scene()
    ext = BoxExtractor(BoxConfig(), "motion")
    assert ext.source == "motion"
    per_frame = clip_boxes(frames, ext)
    assert len(per_frame) == len(frames)
    assert all(len(b) == 1 for b in per_frame[1:-1])
    # At the edges a neighbour is replicated, so only one difference remains: old and new positions.
    assert len(per_frame[0]) >= 1 and len(per_frame[-1]) >= 1


def test_auto_falls_back_to_motion_without_detector(tmp_path: Path) -> None:
    res = resolve_source(BoxConfig(source="auto", detector_path=str(tmp_path / "none.onnx")))
    assert res.source == "motion" and "no detector" in res.reason
    with pytest.raises(UserError, match="unknown box source"):
        resolve_source(BoxConfig(source="yolo"))
    with pytest.raises(UserError, match="reference boxes are read from a file"):
        BoxExtractor(BoxConfig(), "reference")


def test_reference_boxes_roundtrip_and_errors(tmp_path: Path) -> None:
    boxes = np.arange(12, dtype=np.float32).reshape(3, 4)
    p = tmp_path / "ref.npz"
    np.savez(p, boxes=boxes, offsets=np.array([0, 2, 2, 3]))
    per = load_reference_boxes(p, 3)
    assert [len(b) for b in per] == [2, 0, 1]
    np.testing.assert_array_equal(per[2], boxes[2:])
    with pytest.raises(UserError, match="cover 3 frames but the split has 4"):
        load_reference_boxes(p, 4)
    with pytest.raises(UserError, match="not found"):
        load_reference_boxes(tmp_path / "missing.npz", 3)
    np.savez(tmp_path / "bad.npz", boxes=boxes)
    with pytest.raises(UserError, match="offsets"):
        load_reference_boxes(tmp_path / "bad.npz", 3)


def test_detector_missing_and_not_a_detector(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="detector model not found"):
        Detector(tmp_path / "nope.onnx")
    text = tmp_path / "model.onnx"
    text.write_text("this is not a model\n")
    with pytest.raises(UserError, match="not a loadable ONNX model"):
        Detector(text)
    other = tmp_path / "relu.onnx"
    other.write_bytes(_relu_onnx())
    import onnxruntime as ort

    assert ort.InferenceSession(str(other)).get_inputs()[0].name == "x"  # a valid ONNX, just not NanoDet
    with pytest.raises(UserError, match="not a NanoDet-m 416 detector"):
        Detector(other)


@needs_detector
def test_detector_finds_people_on_a_ped2_like_frame() -> None:
    import cv2

    video = Path(statevad.__file__).parent / "data" / "demo" / "test" / "02.mp4"  # bundled Ped2 test clip 02
    cap = cv2.VideoCapture(str(video))
    ok, frame = cap.read()
    assert ok
    dets = Detector(NANODET)(frame)
    assert dets.shape[1] == 6 and dets.dtype == np.float32
    people = dets[(dets[:, 4] > 0.5) & (dets[:, 5] == 0)]
    assert len(people) >= 3
    h, w = frame.shape[:2]
    assert (people[:, 0] >= 0).all() and (people[:, 2] <= w).all() and (people[:, 3] <= h).all()
    tall = (people[:, 3] - people[:, 1]) > (people[:, 2] - people[:, 0])
    assert tall.mean() > 0.8  # pedestrians are taller than wide: the decoding is not transposed
    tiled = Detector(NANODET, tiles=2)(frame)
    assert (tiled[:, 2] <= w).all() and len(tiled[tiled[:, 4] > 0.5]) >= len(people) - 1
    # the dense cells behind the detections carry all 80 class scores: each kept detection is one of them,
    # with its best class and score
    cell_boxes, cell_scores = Detector(NANODET).cells(frame)
    assert cell_scores.shape == (len(cell_boxes), 80) and cell_scores.dtype == np.float32
    for det in dets:
        same = np.abs(cell_boxes - det[:4]).max(axis=1) < 1e-3
        assert same.any()
        assert np.isclose(cell_scores[same].max(), det[4]) and cell_scores[same][0].argmax() == det[5]


def test_tile_ranges_cover_with_overlap() -> None:
    assert tile_ranges(360, 1) == [(0, 360)]
    for length, n in ((360, 2), (240, 2), (240, 3), (101, 4)):
        r = tile_ranges(length, n)
        assert len(r) == n and r[0][0] == 0 and r[-1][1] == length
        assert all(b0 < a1 for (_, a1), (b0, _) in zip(r, r[1:], strict=False))  # neighbours overlap


def test_touches_inner_edge_only_at_edges_inside_the_frame() -> None:
    tile = (100, 0, 200, 120)  # a tile on the frame's top edge, frame 360 x 240
    boxes = np.array([[101, 10, 130, 40],    # at its left edge (x0 = 100 is inside the frame): cut
                      [150, 0, 170, 30],     # at its top edge, which is the frame's: whole
                      [150, 90, 170, 119],   # at its bottom edge: cut
                      [120, 20, 180, 100]],  # inside: whole
                     np.float32)
    assert touches_inner_edge(boxes, tile, (360, 240)).tolist() == [True, False, True, False]
    assert not touches_inner_edge(boxes, (0, 0, 360, 240), (360, 240)).any()  # the whole frame


def test_detector_grid_options_are_checked() -> None:
    with pytest.raises(UserError, match="grid"):
        BoxConfig(detector_grid=2, detector_tiles=2).validate()
    with pytest.raises(UserError, match="detector_grid"):
        BoxConfig(detector_grid=0).validate()


@needs_detector
def test_detector_grid_keeps_whole_people_and_finds_at_least_as_many() -> None:
    import cv2

    cap = cv2.VideoCapture(str(Path(statevad.__file__).parent / "data" / "demo" / "test" / "02.mp4"))
    ok, frame = cap.read()
    assert ok
    h, w = frame.shape[:2]
    plain = Detector(NANODET)(frame)
    grid = Detector(NANODET, grid=2)(frame)
    assert (grid[:, :4] >= 0).all() and (grid[:, 2] <= w).all() and (grid[:, 3] <= h).all()
    people = lambda d: d[(d[:, 4] > 0.4) & (d[:, 5] == 0)]  # noqa: E731
    assert len(people(grid)) >= len(people(plain))
    # every whole-frame person is still there, or a better-scoring box of it that NMS preferred (IoU > 0.6)
    from statevad.boxes import iou_matrix

    assert (iou_matrix(people(plain)[:, :4], grid[grid[:, 5] == 0, :4]).max(axis=1) >= 0.6).all()
    with pytest.raises(UserError, match="grid"):
        Detector(NANODET, grid=2, tiles=2)


@needs_detector
def test_detector_plus_motion_appends_motion_outside_detections() -> None:
    frames = _scene()
    ext = BoxExtractor(BoxConfig(detector_path=str(NANODET)), "detector+motion")
    out = ext(frames[1], frames[2], frames[3])
    assert out.dtype == np.float32 and out.shape[1] == 4 and len(out) >= 1
