"""The events `statevad serve` stores for a video file equal those `statevad score` finds in it: same frames,
same peak scores (one scoring path, one event rule)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import tiny_model

pytest.importorskip("sqlalchemy", reason="the serve extra is not installed (pip install -e '.[serve]')")
pytest.importorskip("av", reason="the serve extra is not installed (pip install -e '.[serve]')")


def test_serve_events_equal_score_events(tmp_path, synthetic_video_root, one_thread):
    from statevad.calibration import count_events, event_frames
    from statevad.cli import main
    from statevad.serve.config import CameraConfig
    from statevad.serve.db import Database
    from statevad.serve.media import MediaStore
    from statevad.serve.worker import CameraWorker, Recorder

    model = tiny_model(tmp_path / "tiny.pt")
    video = sorted((synthetic_video_root / "test").iterdir())[0]
    flags = ["--boxes", "motion", "--no-perturb", "--quiet", "--no-video"]
    assert main(["score", str(video), "--model", str(model), "--out", str(tmp_path / "s0"), *flags]) == 0
    scores = np.loadtxt(tmp_path / "s0" / "scores.csv", delimiter=",", skiprows=1, usecols=2)
    frame_t = np.loadtxt(tmp_path / "s0" / "scores.csv", delimiter=",", skiprows=1, usecols=(0, 1))
    fps = frame_t[-1, 0] / frame_t[-1, 1]
    # the threshold (from the scores alone, no labels) that splits this file into the most events: the
    # comparison is only worth something with several events, boundaries and peaks. Midpoints between the
    # (4-decimal) scores keep the threshold clear of the rounding of scores.csv.
    u = np.unique(scores[np.isfinite(scores)])
    candidates = ((u[:-1] + u[1:]) / 2)[np.diff(u) > 0.01]
    counts = count_events([scores], candidates, *event_frames(fps))
    thr = float(candidates[np.flatnonzero(counts == counts.max())[-1]])
    out = tmp_path / "s1"
    assert main(["score", str(video), "--model", str(model), "--out", str(out), "--threshold", str(thr),
                 *flags]) == 0
    expected = json.loads((out / "events.json").read_text())["events"]
    assert len(expected) >= 2

    db = Database(f"sqlite:///{tmp_path / 'e.db'}")
    recorder = Recorder()
    recorder.start()
    cam = CameraConfig(name="cam", source=str(video), model=str(model), boxes="motion", perturb=False,
                       threshold=thr)
    worker = CameraWorker(cam, db, MediaStore(tmp_path / "media"), recorder)
    worker.run()  # in this thread: one pass over the file, every frame (a file is not paced unless looped)
    recorder.close()
    assert worker.status.state == "ended" and worker.status.dropped == 0
    assert worker.status.frames == len(scores)
    stored = sorted(db.list_events(camera="cam"), key=lambda e: e["start_frame"])
    db.close()
    assert [(e["start_frame"], e["end_frame"], e["peak_frame"]) for e in stored] == \
        [(e["start"], e["end"], e["peak_frame"]) for e in expected]
    np.testing.assert_allclose([e["peak_score"] for e in stored], [e["peak_score"] for e in expected],
                               rtol=1e-9, atol=1e-9)
    assert all((tmp_path / "media" / e["thumb"]).is_file() and (tmp_path / "media" / e["clip"]).is_file()
               for e in stored)
