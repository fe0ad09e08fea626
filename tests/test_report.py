"""Issue 19, "reports people can use" and "progress that tells the truth": the browser-playable annotated
video, report.html's sections, labels that never overlap or leave the frame, the strip's caption, the heat
map, event crops, and a progress bar that counts frames scored. The last test opens report.html in a real
headless chromium (skipped, with the reason, where none is installed)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from browser import media_duration, open_file
from helpers import tiny_model
from hypothesis import given, settings
from hypothesis import strategies as st

from statevad import stream
from statevad import video as vid
from statevad import visualize as viz
from statevad.events import Event
from statevad.report import EventPicture, HeatMap, ReportContent, model_card, render_report

SECTIONS = ("run", "model-card", "video", "files", "curve", "heatmap", "events")


# ------------------------------------------------------------------------------------------- labels
box_st = st.tuples(st.floats(-50, 200), st.floats(-50, 150), st.floats(1, 120), st.floats(1, 90)).map(
    lambda t: (t[0], t[1], t[0] + t[2], t[1] + t[3]))


@settings(max_examples=60, deadline=None)
@given(st.lists(box_st, min_size=1, max_size=12), st.integers(8, 40), st.integers(6, 14))
def test_labels_never_overlap_nor_leave_the_frame(boxes, tw, th):
    w, h = 160, 120
    rects = viz.place_labels(np.array(boxes, np.float32), [(tw, th)] * len(boxes), (w, h))
    got = [r for r in rects if r is not None]
    assert got  # the first label always fits (it is smaller than the frame)
    for i, a in enumerate(got):
        assert 0 <= a[0] < a[2] <= w and 0 <= a[1] < a[3] <= h
        for b in got[i + 1:]:
            assert not viz._overlaps(a, b)


def test_crowded_frame_labels_stay_above_the_strip():
    """Labels on a crowded frame are drawn apart, above the strip; the picture outside labels is untouched
    except for the box outlines."""
    f = np.full((120, 160, 3), 128, np.uint8)
    boxes = np.array([[0, 0, 20, 20], [2, 2, 22, 22], [140, 100, 160, 120]], np.float32)
    sc = np.array([9.0, 8.0, 7.0])
    h_strip = viz.strip_height(120)
    rects = viz.place_labels(boxes, [(22, 12)] * 3, (160, 120 - h_strip))
    assert all(r is not None and r[3] <= 120 - h_strip for r in rects)
    out = viz.annotate_frame(f, boxes, sc, np.array([9.0]), 2.0, -4.0, 5.0, t_s=1.5)
    assert out.shape == f.shape


def test_strip_caption_has_time_score_and_threshold():
    assert viz.strip_text(np.array([1.0, 3.25]), 2.5, 61.5) == "1:01.50  score 3.25  thr 2.50"
    assert viz.strip_text(np.array([-1e5]), 2.5, 0.0) == "0:00.00  score -  thr 2.50"  # no object
    f = np.zeros((120, 160, 3), np.uint8)
    viz.draw_strip_text(f, "0:01.00  score 3.25  thr 2.50")
    lit = np.argwhere(f.max(axis=2) > 0)
    assert len(lit) and lit[:, 0].min() >= 120 - viz.strip_height(120)  # in the strip only
    tiny = np.zeros((20, 30, 3), np.uint8)
    viz.draw_strip_text(tiny, "0:01.00  score 3.25  thr 2.50")  # too narrow: shortened, never past the edge


# -------------------------------------------------------------------------------- heat map and crops
def test_heat_map_weights_area_by_score_above_threshold():
    hm = HeatMap(cells=40)
    f = np.zeros((120, 160, 3), np.uint8)
    boxes = np.array([[0, 0, 40, 40], [100, 60, 160, 120]], np.float32)
    hm.add(f, boxes, np.array([5.0, 1.0]), threshold=2.0)  # only the first is anomalous
    hm.add(f, boxes[:1], np.array([4.0]), threshold=2.0)
    assert hm.grid is not None and hm.grid.shape == (30, 40) and hm.n_boxes == 2
    assert hm.grid[:10, :10].min() == pytest.approx(3.0 + 2.0) and hm.grid[15:, 25:].max() == 0.0
    assert cv2.imdecode(np.frombuffer(hm.png(), np.uint8), cv2.IMREAD_COLOR) is not None
    assert HeatMap().png() is None


def test_object_crops_most_anomalous_first():
    rng = np.random.default_rng(0)
    f = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    crops = viz.object_crops(f, np.array([[0, 0, 10, 30], [50, 50, 90, 70], [5, 5, 6, 6]], np.float32),
                             np.array([1.0, 7.0, 3.0]), k=2, height=64)
    assert [s for _, s in crops] == [7.0, 3.0]
    img = cv2.imdecode(np.frombuffer(crops[0][0], np.uint8), cv2.IMREAD_COLOR)
    assert img.shape[0] == 64


# ------------------------------------------------------------------------------------------- video
@pytest.mark.parametrize("size", [(160, 120), (161, 121)])
def test_annotated_video_is_h264_and_reads_back(tmp_path, size):
    if vid.pick_encoder() is None:
        pytest.skip("the installed PyAV has no libx264 or libvpx-vp9 encoder")
    w, h = size
    dest = tmp_path / "a.mp4"
    with viz.AnnotatedVideoWriter(dest, 12.5, size, threshold=2.0) as wr:
        for t in range(9):
            wr.write(np.full((h, w, 3), 20 * t, np.uint8), np.array([[5, 5, 40, 40]], np.float32),
                     np.array([t - 3.0]), np.arange(t + 1, dtype=np.float64))
        assert not dest.exists()
    assert wr.codec in vid.BROWSER_CODECS and wr.note is None
    assert vid.read_back(dest) == (9, wr.codec)
    cap = cv2.VideoCapture(str(dest))
    ok, fr = cap.read()
    cap.release()
    assert ok and fr.shape == (h + h % 2, w + w % 2, 3)  # odd sizes padded by one pixel (yuv420p)
    assert not list(tmp_path.glob(".a.*"))


def test_video_without_a_browser_codec_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(vid, "pick_encoder", lambda: None)
    with viz.AnnotatedVideoWriter(tmp_path / "a.mp4", 10.0, (64, 48), 1.0) as wr:
        for _ in range(4):
            wr.write(np.zeros((48, 64, 3), np.uint8), np.zeros((0, 4), np.float32), np.zeros(0), np.zeros(1))
    assert wr.codec == "mpeg4" and "pip install av" in (wr.note or "")
    assert vid.read_back(tmp_path / "a.mp4") == (4, "mpeg4")


# ------------------------------------------------------------------------------------------ report
def test_report_sections_model_card_and_missing_fields():
    class Old:  # a model file from before model cards: path and checksum only
        path, sha256, preset = Path("m.pt"), "ab" * 32, None

    class New(Old):
        card = {"resolution": "240x360", "colour": "grey", "fps": 10.0, "frames": 2550}

    assert set(model_card(Old())) == {"model file", "weights sha256"}
    card = model_card(New())
    assert card["resolution"] == "240x360" and card["model file"] == "m.pt"
    pic = {4: EventPicture(viz.thumbnail_jpeg(np.zeros((60, 80, 3), np.uint8), np.zeros((0, 4)), np.zeros(0),
                                              1.0, width=None), crops=[(b"\xff\xd8", 5.0)])}
    page = render_report(ReportContent(
        "t", {"threshold": 2.0}, None, [Event(2, 6, 0.1, 0.3, 5.0, 4)], pic, model_card=card,
        video="annotated.mp4", data_files=("scores.csv", "events.json"), created="2026-01-01T00:00:00",
        version="9.9"))
    for sec in SECTIONS:
        assert f"<section id='{sec}'>" in page
    assert "240x360" in page and "2026-01-01T00:00:00" in page and "9.9" in page
    assert "src='annotated.mp4'" in page and "href='scores.csv'" in page and "class=\"thumb\"" in page
    bare = render_report(ReportContent("t", {}, model_card=None))
    assert "carries no model card" in bare and "No annotated video" in bare


# ------------------------------------------------------------------------------ end to end + browser
@pytest.fixture(scope="module")
def scored(tmp_path_factory, request):
    """`statevad score` on the synthetic clip (24 frames, a low threshold so that there are events), with
    the progress bar on and its output kept."""
    from statevad import datasets

    root = request.getfixturevalue("synthetic_root")
    clip = list(datasets.load_dataset(root).clips("test"))[0]
    base = tmp_path_factory.mktemp("report")
    model = tiny_model(base / "m.pt")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        res = stream.score(str(clip.source), model, base / "out", stream.ScoreOptions(
            boxes="motion", perturb=False, max_frames=24, threshold=-50.0, fps=10.0, progress=True))
    return res, err.getvalue()


def test_progress_bar_counts_frames_scored(scored):
    """The bar's count is frames written to the outputs; the frames read ahead show as "read N"."""
    res, err = scored
    counts = [(int(a), int(b), c) for a, b, c in re.findall(r"\|\s*(\d+)/(\d+) \[[^\]]*?read (\d+)\]", err)]
    assert counts, err[-500:]
    assert all(total == 24 for _, total, _ in counts)  # total known for a file (capped by --max-frames)
    assert all(n <= int(read) for n, _, read in counts)
    assert any(n < int(read) for n, _, read in counts)  # frames read but not yet scored are not counted
    assert counts[-1][0] == res.n_frames == 24
    assert re.search(r"frame/s", err)  # the rate; the ETA is tqdm's remaining-time estimate


def test_score_report_links_every_file(scored):
    res, _ = scored
    page = (res.out / "report.html").read_text()
    for sec in SECTIONS:
        assert f"<section id='{sec}'>" in page
    for name in re.findall(r"(?:href|src)='([^']+)'", page):
        assert (res.out / name).is_file(), name
    assert vid.read_back(res.out / "annotated.mp4") == (24, "h264")
    assert res.events and page.count("class=\"thumb\"") == len(res.events)
    assert "data:image/png" in page.split("<section id='heatmap'>")[1].split("</section>")[0]


def test_report_in_a_real_browser(scored, chromium_page, tmp_path):
    """Open report.html in headless chromium: the embedded video loads (duration > 0), the sections are
    there, an event frame opens full size on a click. Screenshot: <pytest tmp dir>/<this test>/report.png."""
    res, _ = scored
    page = chromium_page
    open_file(page, res.out / "report.html")
    duration = media_duration(page, "video#annotated")
    assert isinstance(duration, float) and duration > 0, duration
    assert duration == pytest.approx(24 / 10.0, abs=0.15)
    for sec in SECTIONS:
        assert page.locator(f"section#{sec}").count() == 1, sec
    assert page.locator("#model-card table tr").count() >= 2
    assert page.locator("#files a").count() == 4
    page.locator("img.thumb").first.click()
    assert page.locator("dialog#full").evaluate("d => d.open")
    assert page.locator("#fullimg").evaluate("i => i.naturalWidth") == 160  # full size, not the thumbnail
    page.locator("dialog#full").click()
    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")
    assert shot.stat().st_size > 10_000
