import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statevad import visualize as viz
from statevad.errors import UserError
from statevad.events import Event, events, label_intervals
from statevad.report import EventPicture, ReportContent, render_report
from statevad.scoring import EMPTY_FRAME_SCORE


def test_events_merge_gap_and_drop_short():
    s = np.zeros(30)
    s[5:9] = 5.0  # 4 frames
    s[10:12] = 6.0  # 1-frame gap -> merged with min_gap=2
    s[20] = 9.0  # 1 frame -> dropped with min_len=2
    ev = events(s, threshold=1.0, fps=10.0, min_gap=2, min_len=2)
    assert len(ev) == 1
    e = ev[0]
    assert (e.start, e.end, e.peak_frame, e.peak_score) == (5, 11, 10, 6.0)
    assert e.start_s == pytest.approx(0.5) and e.end_s == pytest.approx(1.2)
    assert e.to_dict()["n_frames"] == 7


def test_events_open_at_end_and_nan_below():
    s = np.array([np.nan, 0, 3, 3, np.nan, 3, 4])
    ev = events(s, threshold=2.0, fps=1.0, min_gap=1, min_len=1)
    assert [(e.start, e.end) for e in ev] == [(2, 3), (5, 6)]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-3, 3, allow_nan=False), min_size=0, max_size=80), st.integers(1, 4),
       st.integers(1, 4))
def test_events_properties(scores, gap, mlen):
    s = np.array(scores)
    ev = events(s, 0.5, 25.0, gap, mlen)
    for a, b in zip(ev, ev[1:], strict=False):
        assert b.start - a.end - 1 >= gap  # separated by at least min_gap below frames
    for e in ev:
        assert e.n_frames >= mlen
        assert s[e.start] > 0.5 and s[e.end] > 0.5
        assert e.peak_score == s[e.start:e.end + 1].max()
    # every above frame in a long enough merged run is covered
    covered = np.zeros(len(s), bool)
    for e in ev:
        covered[e.start:e.end + 1] = True
    if mlen == 1:
        assert covered[s > 0.5].all()


def test_label_intervals():
    assert label_intervals([0, 1, 1, 0, -1, 1]) == [(1, 2), (5, 5)]
    assert label_intervals([0, 0]) == []


def test_score_color_ramp():
    assert viz.score_color(5.0, 3.0) == (0, 0, 255)
    g = viz.score_color(-10.0, 3.0)
    assert g[1] > 150 and g[2] == 0
    mid = viz.score_color(2.5, 3.0)
    assert mid[2] > 150  # orange-ish near the threshold


def test_score_curve_png_decodes(tmp_path):
    s = np.linspace(-2, 4, 50)
    s[3] = EMPTY_FRAME_SCORE
    labels = (np.arange(50) > 30).astype(np.uint8)
    data = viz.save_score_curve(tmp_path / "c.png", s, 1.0, 10.0, labels, events(s, 1.0, 10.0))
    img = cv2.imread(str(tmp_path / "c.png"))
    assert img is not None and img.shape[2] == 3 and img.shape[1] > img.shape[0]
    assert data == (tmp_path / "c.png").read_bytes()


def test_roc_png(tmp_path):
    viz.save_roc(tmp_path / "roc.png", np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    assert cv2.imread(str(tmp_path / "roc.png")) is not None
    with pytest.raises(UserError):
        viz.roc_png(np.array([0, 0]), np.array([1.0, 2.0]))


def test_video_writer_size_and_count(tmp_path):
    dest = tmp_path / "a.mp4"
    rng = np.random.default_rng(0)
    hist: list[float] = []
    with viz.AnnotatedVideoWriter(dest, 10.0, (160, 120), threshold=2.0) as w:
        for t in range(12):
            f = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
            hist.append(float(t) - 4)
            w.write(f, np.array([[10, 10, 50, 60], [60, 20, 100, 90]], np.float32),
                    np.array([t - 4.0, 0.0]), np.array(hist))
        assert not dest.exists()  # published only on close
    cap = cv2.VideoCapture(str(dest))
    n = 0
    while True:
        ok, fr = cap.read()
        if not ok:
            break
        assert fr.shape == (120, 160, 3)
        n += 1
    assert n == 12
    assert not list(tmp_path.glob(".a.*"))


def test_video_writer_abort_leaves_nothing(tmp_path):
    dest = tmp_path / "a.mp4"
    with pytest.raises(RuntimeError), viz.AnnotatedVideoWriter(dest, 10.0, (64, 48), 1.0):
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_strip_red_above_threshold():
    f = np.full((120, 160, 3), 128, np.uint8)
    out = viz.draw_strip(f.copy(), np.array([10.0] * 50), threshold=2.0, lo=-4.0, hi=5.0)
    strip = out[120 - viz.strip_height(120):]
    red = (strip[..., 2] > 150) & (strip[..., 0] < 80)
    assert red[:, 110:].any() and not red[:, :100].any()
    assert (out[: 120 - viz.strip_height(120)] == 128).all()  # the picture above is untouched


def test_report_self_contained():
    ev = [Event(3, 9, 0.3, 1.0, 4.2, 5)]
    f = np.zeros((60, 80, 3), np.uint8)
    jpeg = viz.thumbnail_jpeg(f, np.array([[1, 1, 20, 20]], np.float32), np.array([4.2]), 2.0)
    pic = {5: EventPicture(jpeg)}
    curve = viz.score_curve_png(np.arange(10.0), 2.0)
    text = render_report(ReportContent("t <x>", {"frames": 10, "threshold": 2.0}, curve, ev, pic))
    assert text.count("data:image/png;base64,") == 1 and text.count("data:image/jpeg;base64,") == 1
    assert "t &lt;x&gt;" in text and "3–9" in text and "http" not in text
