"""The streaming engine's speed-ups (issue 20): the overlapped network pass gives the same results in the
same order; scoring each tracked object every k-th frame sends fewer cubes and carries the track's outputs."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from helpers import tiny_model

from statevad import stream
from statevad.stream.tracking import IouTracker, greedy_match, iou_matrix


def _frames(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (24, 32, 3), dtype=np.uint8) for _ in range(n)]


def _flow_fn(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a[..., :2].astype(np.float32) - 0.5 * b[..., :2].astype(np.float32)


def _moving_boxes(p: np.ndarray, c: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Two objects drifting one pixel a frame (the frame's first pixel is its index), one more every 5th."""
    t = int(c[0, 0, 0])
    boxes = [[1 + t % 6, 2, 11 + t % 6, 14], [16, 4 + t % 4, 28, 18 + t % 4]]
    if t % 5 == 0:
        boxes.append([0, 16, 8, 24])
    return np.array(boxes, np.float32)


def _indexed(n: int) -> list[np.ndarray]:
    frames = _frames(n)
    for t, f in enumerate(frames):
        f[0, 0, 0] = t
    return frames


def _net(raw: np.ndarray, flow: np.ndarray, speed: np.ndarray):
    s = raw.reshape(len(raw), -1).mean(1).astype(np.float64)
    return s, s * 2, s - 100


def _run(frames, **kw) -> tuple[list[stream.FrameResult], stream.StreamScorer]:
    eng = stream.StreamScorer(length=2, patch=8, box_fn=_moving_boxes, flow_fn=_flow_fn, net_fn=_net,
                              batch_frames=3, **kw)
    out = []
    for f in frames:
        out += eng.push(f)
    out += eng.finish()
    return out, eng


@pytest.mark.parametrize("score_every", [1, 3])
def test_overlap_gives_the_same_results(score_every: int) -> None:
    frames = _indexed(23)
    a, ea = _run(frames, score_every=score_every)
    b, eb = _run(frames, score_every=score_every, overlap=True)
    assert [r.index for r in b] == list(range(23)) == [r.index for r in a]
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.boxes, y.boxes)
        np.testing.assert_array_equal(x.scores, y.scores)
        np.testing.assert_array_equal(x.e_raw, y.e_raw)
    assert ea.n_cubes == eb.n_cubes and eb.network_busy > 0


def test_score_every_carries_track_outputs() -> None:
    frames = _indexed(30)
    full, e1 = _run(frames)
    sparse, e3 = _run(frames, score_every=3)
    assert [len(r.boxes) for r in full] == [len(r.boxes) for r in sparse]
    assert e3.n_cubes + e3.n_carried == e1.n_cubes
    assert e3.n_cubes < 0.5 * e1.n_cubes  # two long tracks scored every third frame, short ones once
    for f, s in zip(full, sparse, strict=True):
        assert s.carried is not None
        scored = ~s.carried
        np.testing.assert_array_equal(s.scores[scored], f.scores[scored])  # scored cubes: exact
    # a carried object holds the outputs of the same object's last scored frame, at most 2 frames back
    last: dict[tuple[int, int], float] = {}
    for s in sparse:
        for j in range(len(s.boxes)):
            key = (j, int(s.boxes[j, 0] > 14))
            if not s.carried[j]:
                last[key] = (s.index, s.scores[j])
            elif j < 2:
                t0, v = last[key]
                assert s.index - t0 <= 2 and s.scores[j] == v


def test_idle_flush_lands_the_batch_in_flight_before_the_next_frame() -> None:
    """A live source with nothing waiting: flush(idle) hands over a frame's score as soon as its network pass
    ends (not when the next frame arrives), and stops waiting as soon as a frame is waiting."""
    import time

    def slow(raw, flow, speed):
        time.sleep(0.05)
        return _net(raw, flow, speed)

    def run(idle: bool) -> tuple[list[int], list[int]]:
        eng = stream.StreamScorer(length=2, patch=8, box_fn=_moving_boxes, flow_fn=_flow_fn, net_fn=slow,
                                  batch_frames=4, overlap=True)
        handed = []  # after each frame's push + idle flush: the frames whose scores were handed over
        for f in _indexed(12):
            got = eng.push(f) + eng.flush(lambda: idle)
            handed.append(len(got))
        rest = eng.finish()
        return handed, [len(rest)]

    waited, rest_w = run(idle=True)
    busy, rest_b = run(idle=False)
    # every frame with a complete window (frames 0..8 once frame 11 is in) is out before the next push when
    # the source is idle; without waiting, the last pass started is still in flight when the stream ends
    assert sum(waited) == 9 and rest_w == [3]
    assert sum(busy) < 9 and sum(busy) + rest_b[0] == 12


def test_score_every_with_a_failing_network_loses_nothing() -> None:
    calls = {"n": 0}

    def flaky(raw, flow, speed):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("out of memory")
        return _net(raw, flow, speed)

    eng = stream.StreamScorer(length=2, patch=8, box_fn=_moving_boxes, flow_fn=_flow_fn, net_fn=flaky,
                              batch_frames=3, overlap=True, score_every=2)
    out = []
    frames = _indexed(20)
    failed = 0
    for f in frames:
        try:
            out += eng.push(f)
        except RuntimeError:
            failed += 1
            out += eng.flush()
    out += eng.finish()
    assert failed == 1 and [r.index for r in out] == list(range(20))


def test_iou_tracker() -> None:
    a = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    assert iou_matrix(a, a).diagonal().tolist() == [1.0, 1.0]
    b = a[::-1] + 1  # same objects, moved one pixel, listed the other way round
    assert greedy_match(a, b, 0.3).tolist() == [1, 0]
    tr = IouTracker(0.3)
    assert tr.update(a).tolist() == [0, 1]
    assert tr.update(b).tolist() == [1, 0]
    assert tr.update(np.array([[50, 50, 60, 60]], np.float32)).tolist() == [2]
    assert tr.update(np.zeros((0, 4), np.float32)).tolist() == []


def test_fast_settings_resolve_and_bad_values_fail() -> None:
    from statevad.config import FAST_SCORE, fast_score_sets, get_preset
    from statevad.errors import UserError
    from statevad.settings import resolve

    sc = resolve(get_preset("ped2"), "score", sets=fast_score_sets()).score
    assert {k: getattr(sc, k) for k in FAST_SCORE} == FAST_SCORE
    assert sc.epsilon == 0.0 and sc.overlap and not sc.bf16 and sc.flow_max_side > 0
    with pytest.raises(UserError, match="score_every"):
        resolve(get_preset("ped2"), "score", sets=["score.score_every=0"])


# ------------------------------------------------------------------- the detector every k-th frame
def test_flow_shift_moves_a_box_by_the_flow_inside_it() -> None:
    from statevad.stream.tracking import flow_shift

    h, w = 60, 80
    flow = np.zeros((h, w, 2), np.float32)
    flow[10:30, 20:40] = (3.0, -2.0)  # an object translating right and up; the background is still
    boxes = np.array([[18, 8, 42, 32],    # the object, with a margin of background: moves with it
                      [50, 40, 70, 55],   # still background: stays
                      [75, 5, 80, 12]], np.float32)
    flow[5:12, 75:80] = (9.0, 0.0)  # moves out of the frame: dropped
    out = flow_shift(boxes, flow)
    np.testing.assert_allclose(out, [[21, 6, 45, 30], [50, 40, 70, 55]])
    # a uniform translation moves every box by it, clipped to the frame
    uni = np.broadcast_to(np.array([-1.5, 2.5], np.float32), (h, w, 2))
    np.testing.assert_allclose(flow_shift(np.array([[0.5, 10, 10, 58]], np.float32), uni),
                               [[0, 12.5, 8.5, 60]])
    assert flow_shift(np.zeros((0, 4), np.float32), flow).shape == (0, 4)


class _FakeDetector:
    """A 'detector' that finds the object where the frame says it is (index in pixel 0): 2 px right and 1 px
    down per frame, exactly what the flow below says; no motion boxes."""

    def __init__(self, fail_once: set[int] | None = None) -> None:
        self.calls = 0
        self.threads: set[str] = set()
        self.fail_once = set(fail_once or ())  # frames whose first detection raises

    @staticmethod
    def box(t: int) -> list[float]:
        return [4.0 + 2 * t, 3.0 + t, 14.0 + 2 * t, 13.0 + t]

    def appearance(self, frame: np.ndarray) -> np.ndarray:
        self.calls += 1
        self.threads.add(threading.current_thread().name.split("_")[0])
        t = int(frame[0, 0, 0])
        if t in self.fail_once:
            self.fail_once.discard(t)
            raise RuntimeError(f"detector failed on frame {t}")
        return np.array([self.box(t)], np.float32)

    def detect(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.appearance(frame), np.zeros((0, 4), np.float32), np.zeros((0, 80), np.float32)

    def with_motion(self, p, c, n, app):
        return app

    def __call__(self, p, c, n):
        return self.with_motion(p, c, n, self.appearance(c))


def _translating_flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.broadcast_to(np.array([2.0, 1.0], np.float32), (*a.shape[:2], 2)).copy()


@pytest.mark.parametrize("ahead", [False, True])
@pytest.mark.parametrize("every", [1, 3])
def test_detector_every_kth_frame_moves_boxes_with_the_flow(every: int, ahead: bool) -> None:
    from statevad.calibration import skip_border_boxes
    from statevad.stream.stages import SparseDetector

    frames = [np.zeros((40, 64, 3), np.uint8) for _ in range(13)]
    for t, f in enumerate(frames):
        f[0, 0, 0] = t
    det = _FakeDetector()
    sparse = SparseDetector(det, every)
    stage = skip_border_boxes(sparse, 1.0)  # the border rule passes the keywords (and the hooks) on
    eng = stream.StreamScorer(length=1, patch=8, box_fn=stage, flow_fn=_translating_flow, net_fn=_net,
                              batch_frames=2, overlap=ahead, detect_ahead=ahead)
    out = [r for f in frames for r in eng.push(f)] + eng.finish()
    assert [r.index for r in out] == list(range(13))
    for r in out:
        np.testing.assert_allclose(r.boxes, [det.box(r.index)], atol=1e-5)
    assert det.calls == (13 if every == 1 else 5)  # frames 0, 3, 6, 9, 12
    # ahead, the detector runs in its own thread (gone after finish); otherwise in the caller's
    assert det.threads == ({"statevad-detector"} if ahead else {"MainThread"})
    assert sparse._pool is None


def test_detector_ahead_failure_raises_where_the_boxes_are_needed_and_a_retry_works() -> None:
    from statevad.stream.stages import SparseDetector

    frames = [np.zeros((40, 64, 3), np.uint8) for _ in range(10)]
    for t, f in enumerate(frames):
        f[0, 0, 0] = t
    det = _FakeDetector(fail_once={4})
    eng = stream.StreamScorer(length=1, patch=8, box_fn=SparseDetector(det, 2), flow_fn=_translating_flow,
                              net_fn=_net, batch_frames=2, overlap=True, detect_ahead=True)
    out: list[stream.FrameResult] = []
    for t, f in enumerate(frames):
        if t == 5:  # frame 4's boxes are asked for when frame 5 arrives: its failed detection raises here
            with pytest.raises(RuntimeError, match="frame 4"):
                eng.push(f)
        out += eng.push(f)  # the same frame again: detected again (in the main thread), nothing lost
    out += eng.finish()
    assert [r.index for r in out] == list(range(10))
    for r in out:
        np.testing.assert_allclose(r.boxes, [det.box(r.index)], atol=1e-5)


def test_detect_every_one_is_the_extractor_and_the_field_is_validated() -> None:
    from statevad.boxes import BoxExtractor
    from statevad.config import BoxConfig, get_preset
    from statevad.errors import UserError
    from statevad.settings import resolve
    from statevad.stream.stages import sparse_detector

    ext = BoxExtractor(BoxConfig(), "motion")
    assert sparse_detector(ext, 1) is ext and sparse_detector(ext, 3) is ext  # no detector: nothing to skip
    assert resolve(get_preset("ped2"), "score", sets=["score.detect_every=2"]).score.detect_every == 2
    assert resolve(get_preset("ped2"), "score", sets=["score.detect_every=1"]).score.detect_every == 1
    for bad in ("0", "1.5", "true"):
        with pytest.raises(UserError, match="detect_every"):
            resolve(get_preset("ped2"), "score", sets=[f"score.detect_every={bad}"])


def test_flow_max_side_is_validated_and_reaches_the_flow_stage(tmp_path: Path) -> None:
    from statevad.config import get_preset
    from statevad.errors import UserError
    from statevad.settings import resolve

    assert resolve(get_preset("ped2"), "score", sets=["score.flow_max_side=320"]).score.flow_max_side == 320
    for bad in ("-1", "8", "0.5", "true"):
        with pytest.raises(UserError, match="flow_max_side"):
            resolve(get_preset("ped2"), "score", sets=[f"score.flow_max_side={bad}"])
    model = tiny_model(tmp_path / "m.pt")
    assert stream.build_scorer(model, stream.ScoreOptions(boxes="motion")).flow.max_side == 0
    assert stream.build_scorer(model, stream.ScoreOptions(boxes="motion"),
                               sets=["score.flow_max_side=320"]).flow.max_side == 320


def test_score_every_changed_mid_stream() -> None:
    """A live source falling behind raises score_every mid-stream (stream.live.CarryGovernor): from 1 (no
    tracks yet) to 3 and back; every frame keeps its boxes, fewer cubes go through the network, and the
    scored cubes' outputs are exact."""
    frames = _indexed(30)
    full, e1 = _run(frames)
    eng = stream.StreamScorer(length=2, patch=8, box_fn=_moving_boxes, flow_fn=_flow_fn, net_fn=_net,
                              batch_frames=3)
    out = []
    for t, f in enumerate(frames):
        if t == 8:
            eng.set_score_every(3)
        if t == 22:
            eng.set_score_every(1)
        out += eng.push(f)
    out += eng.finish()
    assert [r.index for r in out] == list(range(30))
    assert [len(r.boxes) for r in out] == [len(r.boxes) for r in full]
    assert 0 < eng.n_carried and eng.n_cubes + eng.n_carried == e1.n_cubes
    for f, s in zip(full, out, strict=True):
        scored = np.ones(len(s.boxes), bool) if s.carried is None else ~s.carried
        np.testing.assert_array_equal(s.scores[scored], f.scores[scored])
    assert not any(r.carried is not None and r.carried.any() for r in out if r.index >= 26)
    with pytest.raises(ValueError):
        eng.set_score_every(0)


def test_carried_objects_are_fused_with_their_own_speed() -> None:
    """With the network stage's fusion (``fuse_fn``), an object that carries its track's errors gets the
    fused score of its own cube's speed on this frame; scored cubes keep the network stage's own score."""

    def net(raw, flow, speed):
        e = raw.reshape(len(raw), -1).mean(1).astype(np.float64)
        return e, 2 * e, fuse(e, 2 * e, speed)

    def fuse(e_raw, e_flow, speed):
        return e_raw + 0.5 * e_flow + 10 * speed

    frames = _indexed(30)
    eng = stream.StreamScorer(length=2, patch=8, box_fn=_moving_boxes, flow_fn=_flow_fn, net_fn=net,
                              batch_frames=3, score_every=3, fuse_fn=fuse)
    out = []
    for f in frames:
        out += eng.push(f)
    out += eng.finish()
    assert eng.n_carried > 0
    for r in out:
        assert r.speed is not None
        np.testing.assert_allclose(r.scores, fuse(r.e_raw, r.e_flow, r.speed))  # every object, carried or not


def test_score_fast_flag_applies_the_fast_settings_and_a_set_wins(synthetic_video_root: Path, tmp_path: Path
                                                                  ) -> None:
    from helpers import score_synthetic

    from statevad.config import FAST_SCORE

    model = tiny_model(tmp_path / "m.pt")
    flags = ("--max-frames", "10", "--fast")
    doc = score_synthetic(synthetic_video_root, model, tmp_path / "a", *flags)
    assert doc["perturbation epsilon"] == 0.0
    assert doc["flow computed on frames shrunk to at most (px, larger side)"] == FAST_SCORE["flow_max_side"]
    assert doc["objects scored every k-th frame"] == FAST_SCORE["score_every"]
    doc = score_synthetic(synthetic_video_root, model, tmp_path / "b", *flags,
                          "--set", "score.flow_max_side=0")
    assert "flow computed on frames shrunk to at most (px, larger side)" not in doc
