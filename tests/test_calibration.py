"""Issue 19, "what to add" 1-2: the model card, `statevad info MODEL`, input-vs-training checks, the border
rule, the event-rate calibration (`statevad calibrate`, `score --false-alarms-per-hour`)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from helpers import make_work, tiny_model, train_on_one_thread

from statevad import calibration as cal
from statevad.checkpoint import load_checkpoint, save_checkpoint
from statevad.cli import main
from statevad.config import ScoreConfig, get_preset, with_model_size
from statevad.errors import UserError
from statevad.events import events


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    work = make_work(tmp_path_factory.mktemp("cal_work") / "work")
    return work, train_on_one_thread(work, "--model-size", "tiny", "--epochs", "1", "--batch-size", "8",
                                     "--device", "cpu", "--quiet")


def _model_with_card(path: Path, card: dict) -> Path:
    from statevad.model import STATE

    p = get_preset("generic")
    p.model = with_model_size(p.model, "tiny")
    torch.manual_seed(0)
    stats = {"raw_mean": 50.0, "raw_std": 20.0, "flow_mean": 500.0, "flow_std": 300.0,
             "motion_mean": 1.0, "motion_std": 1.0}
    return save_checkpoint(path, STATE(p.model).eval(), p, stats, None, card=card)


def _colour_video(path: Path, n: int = 10) -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(n):
        f = np.zeros((48, 64, 3), np.uint8)
        f[..., 2] = 200  # red
        f[10:20, 2 * i:2 * i + 10] = (0, 255, 0)
        w.write(f)
    w.release()
    return path


# ------------------------------------------------------------------------------------ event counting
@pytest.mark.parametrize("min_gap, min_len", [(1, 1), (3, 1), (2, 4), (5, 2)])
def test_count_events_matches_the_event_tracker(min_gap: int, min_len: int) -> None:
    rng = np.random.default_rng(min_gap * 10 + min_len)
    series = [rng.normal(size=n) for n in (300, 57, 1)]
    thresholds = np.linspace(-1, 2.5, 15)
    got = cal.count_events(series, thresholds, min_gap, min_len)
    want = [sum(len(events(s, t, 10.0, min_gap, min_len)) for s in series) for t in thresholds]
    assert got.tolist() == want


def test_threshold_for_rate_gives_the_rate_on_footage_like_the_calibration_footage() -> None:
    """Two hours of i.i.d. frame scores at 10 fps: calibrated for R per hour on the first hour, the second
    hour (same distribution, never seen) gives about R events an hour."""
    rng = np.random.default_rng(0)
    fps, hour = 10.0, 36000
    calib, fresh = rng.normal(size=hour), rng.normal(size=hour)
    dist = cal.score_distribution([calib], fps, {}, source="calibration", footage="noise")
    gap, length = cal.event_frames(fps)
    previous = -np.inf
    for rate in (100.0, 30.0, 10.0):
        thr, words = cal.threshold_for_rate(dist, rate)
        assert f"about {rate:g} false alarm(s) per hour" in words and "calibration footage" in words
        assert len(events(calib, thr, fps, gap, length)) <= rate  # by construction on the footage itself
        assert 0.4 * rate <= len(events(fresh, thr, fps, gap, length)) <= 2.0 * rate
        assert thr > previous  # fewer alarms, higher threshold
        previous = thr


def test_a_rate_below_what_the_footage_can_show_is_extrapolated_above_every_score() -> None:
    rng = np.random.default_rng(1)
    scores = rng.normal(size=600)  # one minute at 10 fps: 1/hour is not measurable
    dist = cal.score_distribution([scores], 10.0, {}, source="training", footage="noise")
    thr, words = cal.threshold_for_rate(dist, 1.0)
    assert "extrapolated" in words and thr >= scores.max()
    assert cal.threshold_for_rate(dist, 0.1)[0] > thr


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), "x", None, 1e9])
def test_nonsense_rates_are_one_clear_error(bad: object) -> None:
    with pytest.raises(UserError, match="false alarms per hour > 0"):
        cal.check_rate(bad)


def test_a_distribution_needs_scored_frames() -> None:
    with pytest.raises(UserError, match="nothing to calibrate"):
        cal.score_distribution([np.full(20, -1e5)], 10.0, {}, source="calibration", footage="empty")


# ----------------------------------------------------------------------------------------- border
def test_touches_border_within_the_margin_on_every_side() -> None:
    boxes = np.array([[0, 50, 20, 80],       # left edge
                      [100, 1, 120, 30],     # 1 px from the top: within the margin
                      [100, 2, 120, 30],     # 2 px: inside
                      [340, 50, 359.5, 80],  # right edge (width 360)
                      [100, 200, 120, 239],  # 1 px from the bottom (height 240)
                      [100, 100, 120, 130]])
    assert cal.touches_border(boxes, (240, 360)).tolist() == [True, True, False, True, True, False]


def test_border_rule_skips_small_boxes_cut_by_the_border_only() -> None:
    boxes = np.array([[0, 100, 7, 140],      # 7-px sliver at the left border: skipped
                      [0, 100, 30, 160],     # big enough at the border: kept
                      [100, 100, 107, 140],  # small but inside the view: kept
                      [353, 50, 360, 90],    # sliver at the right border: skipped
                      [50, 235, 90, 240]], np.float32)  # 5-px sliver at the bottom: skipped
    keep = cal.border_keep(boxes, (240, 360), 16)
    assert keep.tolist() == [False, True, True, False, False]
    assert cal.border_keep(boxes, (240, 360), 0).all()
    stage = cal.skip_border_boxes(lambda p, c, n: boxes, 16)
    frame = np.zeros((240, 360, 3), np.uint8)
    assert len(stage(frame, frame, frame)) == 2


# ------------------------------------------------------------------------------- input vs the card
CARD = {"resolution": ["360x240"], "colour": "grey", "fps": [10.0]}


def test_matching_input_gives_no_warning() -> None:
    assert cal.check_input(CARD, np.zeros((240, 360, 3), np.uint8), 10.0, "in.mp4") == []
    assert cal.check_input(None, np.zeros((5, 5, 3), np.uint8), 99.0, "in.mp4") == []


def test_other_resolution_and_slightly_other_fps_warn() -> None:
    notes = cal.check_input(CARD, np.zeros((480, 640, 3), np.uint8), 12.5, "in.mp4")
    assert len(notes) == 2 and "640x480" in notes[0] and "360x240" in notes[0] and "12.5 fps" in notes[1]


def test_colour_on_a_grey_model_and_a_far_fps_are_refused_unless_allowed() -> None:
    colour = np.zeros((240, 360, 3), np.uint8)
    colour[..., 2] = 200
    with pytest.raises(UserError, match="in colour but the model was trained on grey"):
        cal.check_input(CARD, colour, 10.0, "in.mp4")
    with pytest.raises(UserError, match="30 fps .* 10 fps"):
        cal.check_input(CARD, np.zeros((240, 360, 3), np.uint8), 30.0, "in.mp4")
    assert len(cal.check_input(CARD, colour, 30.0, "in.mp4", allow=True)) == 2
    # a rate that is only assumed (frame folders, MJPEG) is never a reason to refuse: a warning naming --fps
    notes = cal.check_input(CARD, np.zeros((240, 360, 3), np.uint8), 25.0, "frames/", fps_known=False)
    assert len(notes) == 1 and "--fps 10" in notes[0]


def test_grey_detection_tolerates_lossy_chroma_noise() -> None:
    rng = np.random.default_rng(0)
    grey = np.repeat(rng.integers(0, 255, (50, 50, 1), dtype=np.uint8), 3, axis=2)
    noisy = np.clip(grey.astype(int) + rng.integers(-1, 2, grey.shape) * (rng.random(grey.shape) < .2), 0,
                    255).astype(np.uint8)
    assert cal.is_grey(grey) and cal.is_grey(noisy)
    grey[..., 0] //= 2
    assert not cal.is_grey(grey)


# ------------------------------------------------------------------------------ threshold choice
def _ckpt(dist: dict | None = None, calibration: dict | None = None) -> SimpleNamespace:
    return SimpleNamespace(score_distribution=dist, calibration=calibration)


def _dist(sc: ScoreConfig, border: float, source: str = "training", **extra: object) -> dict:
    rng = np.random.default_rng(2)
    d = cal.score_distribution([rng.normal(size=36000)], 10.0, cal.score_settings(sc, border), source=source,
                               footage="noise")
    return {**d, **extra}


def test_threshold_choice_order() -> None:
    sc = ScoreConfig()
    train = _dist(sc, 16.0)
    thr, rule, notes = cal.choose_threshold(_ckpt(train), sc, 16.0, None, None)
    assert "about 1 false alarm(s) per hour on footage like the training footage" in rule and not notes
    assert cal.choose_threshold(_ckpt(train), sc, 16.0, 4.5, None)[:2] == (4.5, "given (--threshold)")
    assert cal.choose_threshold(_ckpt(train), sc, 16.0, None, 20.0)[0] < thr
    calib = _dist(sc, 16.0, "calibration", false_alarms_per_hour=5.0)
    rule = cal.choose_threshold(_ckpt(train, calib), sc, 16.0, None, None)[1]
    assert "about 5 false alarm(s) per hour on footage like the calibration footage" in rule
    with pytest.raises(UserError, match="either --threshold or --false-alarms-per-hour"):
        cal.choose_threshold(_ckpt(train), sc, 16.0, 4.5, 2.0)


def test_a_distribution_made_with_other_settings_is_not_used() -> None:
    sc = ScoreConfig()
    thr, rule, notes = cal.choose_threshold(_ckpt(_dist(sc, 16.0)), ScoreConfig(epsilon=0.0), 16.0, None,
                                            None)
    assert rule.startswith("auto:") and "epsilon" in notes[0]
    assert "border_min_px" in cal.choose_threshold(_ckpt(_dist(sc, 16.0)), sc, 0.0, None, None)[2][0]
    with pytest.raises(UserError, match="statevad calibrate"):
        cal.choose_threshold(_ckpt(None), sc, 16.0, None, 1.0)


def test_overlap_does_not_invalidate_a_distribution() -> None:
    # the overlapped pipeline gives the same numbers, so a distribution made without it still applies, and
    # one stored with the field (older files) too
    sc = ScoreConfig()
    dist = _dist(sc, 16.0)
    assert not cal.choose_threshold(_ckpt(dist), ScoreConfig(overlap=True), 16.0, None, None)[2]
    old = dict(dist, settings={**dist["settings"], "overlap": True})
    rule, notes = cal.choose_threshold(_ckpt(old), sc, 16.0, None, None)[1:]
    assert not notes and not rule.startswith("auto:")


def test_a_score_field_added_later_keeps_older_distributions() -> None:
    # a distribution stored before `w_appearance` existed was made without the term: it applies at the
    # default (0), not with the term on
    sc = ScoreConfig()
    dist = _dist(sc, 16.0)
    older = dict(dist, settings={k: v for k, v in dist["settings"].items() if k != "w_appearance"})
    rule, notes = cal.choose_threshold(_ckpt(older), sc, 16.0, None, None)[1:]
    assert not notes and not rule.startswith("auto:")
    notes = cal.choose_threshold(_ckpt(older), ScoreConfig(w_appearance=0.5), 16.0, None, None)[2]
    assert len(notes) == 1 and "w_appearance" in notes[0]


def test_streaming_approximations_keep_a_distribution() -> None:
    # outputs carried along tracks and boxes moved by the flow: the distribution (every cube scored) applies
    sc = ScoreConfig(score_every=1, detect_every=1)
    dist = _dist(sc, 16.0)
    for other in (ScoreConfig(score_every=5), ScoreConfig(detect_every=3), ScoreConfig(max_score_every=9)):
        rule, notes = cal.choose_threshold(_ckpt(dist), other, 16.0, None, None)[1:]
        assert not notes and not rule.startswith("auto:")


# --------------------------------------------------------------------------- model files and `info`
def test_training_writes_the_model_card_and_score_distribution(trained: tuple[Path, Path]) -> None:
    work, model = trained
    _, ckpt = load_checkpoint(model)
    card = ckpt.card
    assert card["frames"] == 8 and card["clips"] == 2 and card["colour"] == "grey"
    assert card["cubes"] == 16 and card["statevad"] and card["date"].endswith("Z")
    assert card["cube"] == {"length": 1, "patch": 32, "motion_thr": 0.0}
    dist = ckpt.score_distribution
    assert dist["source"] == "training" and dist["n_frames"] == 8
    assert len(dist["thresholds"]) == len(dist["events"]) > 0
    # the footage is not on this machine: size unknown, so the distribution was made without the border rule
    assert dist["settings"]["border_min_px"] == 0.0 and "assumed" in dist["footage"]


def test_the_model_card_is_covered_by_the_checksum(trained: tuple[Path, Path], tmp_path: Path) -> None:
    data = torch.load(trained[1], weights_only=True)
    data["card"]["fps"] = [99.0]
    torch.save(data, tmp_path / "m.pt")
    with pytest.raises(UserError, match="fails its checksum"):
        load_checkpoint(tmp_path / "m.pt")


def test_info_prints_the_model_card(trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(trained[1])]) == 0
    out = capsys.readouterr().out
    for needle in ("training footage: ped2 (fake), 2 clips, 8 frames", "colour: grey", "fps: unknown",
                   "training scores: ", "training statistics: raw_mean ",
                   # what `score` alarms above without a threshold flag, and why: this model's footage is
                   # not on the machine, so its distribution has no border rule and `score` (border rule
                   # on) falls back to the automatic rule
                   "score's default threshold: ", "auto: 3 x (", "does not apply",
                   "/ flow (excess speed) "):  # the ped2 preset's flow term, named
        assert needle in out, out
    assert "{'" not in out, out  # settings read as words, not as Python dict reprs
    assert main(["info", str(trained[1]), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["card"]["frames"] == 8 and doc["preset"] == "ped2"


def test_info_on_a_model_without_a_card(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(tiny_model(tmp_path / "old.pt"))]) == 0
    out = capsys.readouterr().out
    assert "model card: none" in out
    assert "score's default threshold: " in out and "auto: 3 x (" in out, out


def test_calibrate_on_a_work_directory(trained: tuple[Path, Path], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    work, model = trained
    before = model.read_bytes()
    out = tmp_path / "calibrated.pt"
    assert main(["calibrate", str(model), str(work), "--false-alarms-per-hour", "5", "--out", str(out),
                 "--quiet"]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "about 5 false alarm(s) per hour on footage like the calibration footage" in printed
    # 8 frames cannot show 5 alarms an hour: said in a warning, not only inside the threshold's words
    assert "warning: 0.0 min of footage cannot show 5 false alarm(s) per hour" in captured.err, captured.err
    assert "calibrate on several times 12 min" in captured.err
    assert model.read_bytes() == before  # --out: the original is untouched
    _, ckpt = load_checkpoint(out)
    c = ckpt.calibration
    assert c["false_alarms_per_hour"] == 5.0 and c["source"] == "calibration" and c["n_frames"] == 8
    assert c["threshold"] == cal.threshold_for_rate(c, 5.0)[0]
    assert main(["info", str(out)]) == 0
    assert "calibrated threshold" in capsys.readouterr().out
    # in place (no --out): the model file itself is replaced, atomically, and still loads
    inplace = tmp_path / "inplace.pt"
    inplace.write_bytes(before)
    assert main(["calibrate", str(inplace), str(work), "--quiet"]) == 0
    assert load_checkpoint(inplace)[1].calibration["false_alarms_per_hour"] == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calibrated.pt", "inplace.pt"]


# ---------------------------------------------------------------------------------- `statevad score`
def test_score_calibrated_and_with_a_rate(synthetic_video_root: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """calibrate on a normal clip through `score` itself, then score with the calibrated threshold and
    with another rate: the summary says what the threshold means."""
    clip = str(sorted((synthetic_video_root / "train").iterdir())[0])
    model = tiny_model(tmp_path / "m.pt")
    out = tmp_path / "cal.pt"
    assert main(["calibrate", str(model), clip, "--out", str(out), "--no-perturb", "--boxes", "motion",
                 "--quiet"]) == 0
    calib = load_checkpoint(out)[1].calibration
    assert calib["n_frames"] > 0 and calib["settings"]["epsilon"] == 0.0
    capsys.readouterr()
    test_clip = str(sorted((synthetic_video_root / "test").iterdir())[0])
    assert main(["score", test_clip, "--model", str(out), "--out", str(tmp_path / "o1"), "--no-perturb",
                 "--no-video", "--max-frames", "12", "--boxes", "motion", "--quiet"]) == 0
    summary = capsys.readouterr().out
    assert "about 1 false alarm(s) per hour on footage like the calibration footage" in summary
    doc = json.loads((tmp_path / "o1" / "events.json").read_text())
    assert doc["threshold"] == round(calib["threshold"], 4) and "calibration footage" in doc["threshold rule"]
    assert main(["score", test_clip, "--model", str(out), "--out", str(tmp_path / "o2"), "--no-perturb",
                 "--no-video", "--max-frames", "12", "--boxes", "motion", "--quiet",
                 "--false-alarms-per-hour", "600"]) == 0
    doc2 = json.loads((tmp_path / "o2" / "events.json").read_text())
    assert "about 600 false alarm(s) per hour" in doc2["threshold rule"]
    assert doc2["threshold"] <= doc["threshold"]
    # perturbed scoring is another setting: the calibration made without it does not apply
    assert main(["score", test_clip, "--model", str(out), "--out", str(tmp_path / "o3"), "--no-video",
                 "--max-frames", "8", "--boxes", "motion", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "does not apply" in captured.err and "auto:" in captured.out


def test_score_warns_about_an_input_unlike_the_training_footage(synthetic_video_root: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    model = _model_with_card(tmp_path / "m.pt", {"resolution": ["999x555"], "colour": "grey", "fps": [10.0]})
    clip = str(sorted((synthetic_video_root / "test").iterdir())[0])
    assert main(["score", clip, "--model", str(model), "--out", str(tmp_path / "o"), "--no-perturb",
                 "--no-video", "--max-frames", "8", "--boxes", "motion", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "trained on 999x555 footage" in err
    doc = json.loads((tmp_path / "o" / "events.json").read_text())
    assert "999x555" in doc["input vs training footage"][0]


def test_score_refuses_colour_footage_on_a_grey_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    from helpers import fails_one_line

    model = _model_with_card(tmp_path / "m.pt", {"resolution": ["64x48"], "colour": "grey", "fps": [10.0]})
    video = _colour_video(tmp_path / "colour.avi")
    fails_one_line(["score", str(video), "--model", str(model), "--out", str(tmp_path / "o"), "--quiet"],
                   capsys, "colour.avi is in colour", "--allow-mismatch")
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
    assert main(["score", str(video), "--model", str(model), "--out", str(tmp_path / "o2"), "--no-perturb",
                 "--no-video", "--quiet", "--allow-mismatch"]) == 0
    assert "in colour" in capsys.readouterr().err


def test_flow_on_a_shrunk_frame_does_not_keep_a_distribution() -> None:
    # score.flow_max_side changes the flow itself (so every score): a distribution made at full size is not
    # applied; the note names the field
    dist = _dist(ScoreConfig(), 16.0)
    rule, notes = cal.choose_threshold(_ckpt(dist), ScoreConfig(flow_max_side=320), 16.0, None, None)[1:]
    assert rule.startswith("auto:") and len(notes) == 1 and "flow_max_side" in notes[0]
