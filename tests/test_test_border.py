"""`statevad test` applies `statevad score`'s border rule (issue 20): a cube whose box touches the frame
border with a short side under ``--border-min-size`` does not count in its frame's score, and a frame left
without a counted cube scores what `score` gives a frame without objects."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import make_work, tiny_preset

from statevad.calibration import series_from_cubes
from statevad.cli import main
from statevad.errors import UserError
from statevad.evaluation import run_test
from statevad.files import atomic_save_npy, atomic_write_json
from statevad.scoring import EMPTY_FRAME_SCORE
from statevad.stream.engine import FrameResult
from statevad.training import train
from statevad.workdir import open_split

W, H = 64, 48


def _video(path: Path, n: int) -> Path:
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (W, H))
    for _ in range(n):
        wr.write(np.full((H, W, 3), 128, np.uint8))
    wr.release()
    return path


@pytest.fixture(scope="module")
def bordered(tmp_path_factory) -> tuple[Path, Path]:
    """make_work's work dir, its test cubes' boxes set so that cube 0 of every frame is a 10-px sliver at the
    left border (skipped at 16 px) and cube 1 lies inside the 64x48 frame, except on the first frame, where
    cube 1 is a sliver at the bottom border too (no cube left); the test clips' footage is a 64x48 video."""
    tmp = tmp_path_factory.mktemp("border")
    work = make_work(tmp / "work")
    model = train(work, tiny_preset(), out=work / "model.pt", progress=False)
    box = np.load(work / "test" / "box.npy")
    box[0::2] = [0, 10, 10, 40]
    box[1::2] = [20, 8, 44, 40]
    box[1] = [20, 40, 44, H]
    atomic_save_npy(work / "test" / "box.npy", box)
    clips = json.loads((work / "test" / "frames.json").read_text())
    for c in clips:
        c["source"] = str(_video(tmp / f"{c['name']}.avi", int(c["n_frames"])))
    atomic_write_json(work / "test" / "frames.json", clips)
    return work, model


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_border_cubes_do_not_count_in_the_frame_score(bordered, tmp_path) -> None:
    work, model = bordered
    # each cube's own score (no track mean): the rule's effect on the frame max alone
    own = ["score.track_frames=0"]
    on = run_test(work, model, out=tmp_path / "on", progress=False, sets=own)
    off = run_test(work, model, out=tmp_path / "off", progress=False, border_min_px=0, sets=own)
    cubes = _rows(tmp_path / "on" / "objects.csv")
    score = np.array([float(r["score"]) for r in cubes])
    scored = np.array([int(r["scored"]) for r in cubes])
    assert scored.tolist() == [0, 0] + [0, 1] * (len(cubes) // 2 - 1)
    frames_on = np.array([float(r["score"]) for r in _rows(tmp_path / "on" / "scores.csv")])
    frames_off = np.array([float(r["score"]) for r in _rows(tmp_path / "off" / "scores.csv")])
    # the frame without a counted cube scores as `score` scores a frame without objects
    empty = FrameResult(0, np.zeros((1, 1, 3), np.uint8), np.zeros((0, 4)), *(np.zeros(0),) * 3).score
    assert frames_on[0] == empty == EMPTY_FRAME_SCORE
    np.testing.assert_allclose(frames_on[1:], score[3::2], rtol=1e-5)  # only the inside cube counts
    np.testing.assert_allclose(frames_off, np.maximum(score[0::2], score[1::2]), rtol=1e-5)  # rule off
    # the same frame scores as the calibration's (stream-equivalent) rule on the same cubes
    split = open_split(work, "test")
    ref = np.concatenate(series_from_cubes(split, score, range(len(split.clips)), 16.0, (H, W)))
    np.testing.assert_allclose(frames_on, ref, rtol=1e-5)
    rule = on["border_rule"]
    assert rule["min_px"] == 16.0 and rule["cubes_skipped"] == len(cubes) // 2 + 1
    assert rule["clips_without_frame_size"] == [] and "not counted" in rule["meaning"]
    assert off["border_rule"]["min_px"] == 0.0 and off["border_rule"]["cubes_skipped"] == 0
    assert json.loads((tmp_path / "on" / "metrics.json").read_text())["border_rule"] == rule


def test_border_flag_is_validated_and_unknown_sizes_turn_the_rule_off(bordered, tmp_path, capsys) -> None:
    work, model = bordered
    base = ["test", "--work", str(work), "--model", str(model), "--quiet"]
    for bad in ("-1", "nan", "inf"):
        assert main([*base, "--border-min-size", bad, "--out", str(tmp_path / "bad")]) == 2
        assert "--border-min-size must be a size in pixels" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    with pytest.raises(UserError, match="border-min-size"):
        run_test(work, model, out=tmp_path / "bad", progress=False, border_min_px=-2)
    assert main([*base, "--border-min-size", "0", "--out", str(tmp_path / "zero")]) == 0
    assert json.loads((tmp_path / "zero" / "metrics.json").read_text())["border_rule"]["cubes_skipped"] == 0
    capsys.readouterr()
    # footage not on this machine (make_work's own clips): the rule cannot apply, said once, recorded
    plain = make_work(tmp_path / "plain")
    res = run_test(plain, model, out=tmp_path / "plain_r", progress=False)
    assert res["border_rule"]["clips_without_frame_size"] == ["00", "01"]
    assert res["border_rule"]["cubes_skipped"] == 0
    assert capsys.readouterr().err.count("border rule is off") == 1


def test_the_track_window_in_seconds_follows_each_clips_frame_rate(bordered, tmp_path, capsys) -> None:
    """score.track_seconds (the generic preset's track mean): seconds at the clip's own frame rate, read
    from its footage (10 frames/s here); footage not found: the training footage's rate, else 25, warned."""
    import shutil

    work, model = bordered
    secs = run_test(work, model, out=tmp_path / "s", progress=False, border_min_px=0,
                    sets=["score.track_seconds=0.5"])
    assert secs["track_mean"] == {"window_frames": [5], "seconds": 0.5, "fps_given": None,
                                  "clips_with_assumed_rate": []}
    frames = run_test(work, model, out=tmp_path / "f", progress=False, border_min_px=0,
                      sets=["score.track_frames=5"])
    assert frames["track_mean"]["window_frames"] == [5] and frames["track_mean"]["seconds"] is None
    assert _rows(tmp_path / "s" / "scores.csv") == _rows(tmp_path / "f" / "scores.csv")
    assert "frame rate of test clip(s)" not in capsys.readouterr().err

    moved = tmp_path / "moved"
    shutil.copytree(work, moved)
    clips = json.loads((moved / "test" / "frames.json").read_text())
    for c in clips:
        c["source"] = str(tmp_path / "gone" / Path(c["source"]).name)
    atomic_write_json(moved / "test" / "frames.json", clips)
    res = run_test(moved, model, out=tmp_path / "m", progress=False, border_min_px=0,
                   sets=["score.track_seconds=0.4"])
    assert res["track_mean"]["window_frames"] == [10]  # 0.4 s at the assumed 25 frames/s
    assert res["track_mean"]["clips_with_assumed_rate"] == [c["name"] for c in clips]
    assert "frame rate of test clip(s)" in capsys.readouterr().err
    # the user gives the rate (`statevad test --fps`, as for a frame folder): 0.4 s at 20 frames/s, no warning
    given = run_test(moved, model, out=tmp_path / "g", progress=False, border_min_px=0,
                     sets=["score.track_seconds=0.4"], fps=20)
    assert given["track_mean"]["window_frames"] == [8] and given["track_mean"]["fps_given"] == 20
    assert given["track_mean"]["clips_with_assumed_rate"] == []
    assert "frame rate of test clip(s)" not in capsys.readouterr().err
    for bad in (0, -5, float("nan"), 1e6):
        with pytest.raises(UserError, match="--fps must be a frame rate"):
            run_test(moved, model, out=tmp_path / "bad", progress=False, fps=bad)
    assert not (tmp_path / "bad").exists()
