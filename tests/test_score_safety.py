"""`statevad score` under hostile conditions: signals, full disks, busy scenes, reused output folders and odd
stream inputs. Every test here failed on the code before the hostile-input review's fixes."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import tiny_model

from statevad import stream
from statevad.cli import main
from statevad.errors import UserError
from statevad.stream import driver

FAST = ["--boxes", "motion", "--no-perturb"]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("model") / "tiny.pt")


def _clip_frames(root: Path) -> list[np.ndarray]:
    from statevad import datasets
    from statevad.io import read_frames

    clip = list(datasets.load_dataset(root).clips("test"))[0]
    return list(read_frames(clip.source))


@pytest.fixture(scope="module")
def clip(synthetic_video_root: Path) -> str:
    from statevad import datasets

    return str(list(datasets.load_dataset(synthetic_video_root).clips("test"))[0].source)


@pytest.fixture(scope="module")
def long_video(synthetic_video_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic test clip played forwards and backwards 40 times (2400 frames): long enough to
    signal a run in its middle."""
    frames = _clip_frames(synthetic_video_root)
    path = tmp_path_factory.mktemp("long") / "long.mp4"
    h, w = frames[0].shape[:2]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (w, h))
    for k in range(40):
        for f in (frames if k % 2 == 0 else frames[::-1]):
            vw.write(f)
    vw.release()
    return path


def _rows(out: Path) -> list[list[str]]:
    return [r.split(",") for r in (out / "scores.csv").read_text().splitlines()[1:]]


def _decode_count(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def _assert_consistent(out: Path, video: str = "any") -> int:
    """scores.csv contiguous from 0, objects.jsonl and events.json agree with it, no temp file left."""
    rows = _rows(out)
    n = len(rows)
    assert n > 0
    assert [int(r[0]) for r in rows] == list(range(n))  # no gap, ever
    objs = [json.loads(x) for x in (out / "objects.jsonl").read_text().splitlines()]
    assert len(objs) == sum(int(r[3]) for r in rows)
    assert all(0 <= o["frame"] < n for o in objs)
    ev = json.loads((out / "events.json").read_text())
    assert ev["frames scored"] == n and ev["objects scored"] == len(objs)
    assert (out / "report.html").is_file() and (out / "score_curve.png").is_file()
    if video == "complete":
        assert _decode_count(out / "annotated.mp4") == n
    elif video == "absent":
        assert not (out / "annotated.mp4").exists()
    elif (out / "annotated.mp4").exists():
        assert _decode_count(out / "annotated.mp4") == n
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    return n


# ------------------------------------------------------------------------------------------ 1. signals
def _score_process(video: Path, model: Path, out: Path, *extra: str) -> tuple[subprocess.Popen, list[str]]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "statevad", "score", str(video), "--model", str(model),
                             "--out", str(out), *FAST, "--batch-frames", "2", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    err: list[str] = []

    def pump() -> None:
        assert proc.stderr is not None
        while chunk := proc.stderr.read1(4096):
            err.append(chunk.decode("utf-8", "replace"))

    threading.Thread(target=pump, daemon=True).start()
    return proc, err


def _wait_scored(proc: subprocess.Popen, err: list[str], n: int, timeout: float = 120.0) -> int:
    """Wait until the progress bar shows at least ``n`` frames scored; return that count."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        counts = [int(m) for m in re.findall(r"scoring:.*?\|\s*(\d+)/", "".join(err))]
        if counts and counts[-1] >= n:
            return counts[-1]
        assert proc.poll() is None, "".join(err)
        time.sleep(0.05)
    raise AssertionError(f"no progress after {timeout} s: {''.join(err)[-2000:]}")


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_once_finishes_frames_read(long_video, model, tmp_path, signum, code):
    """First Ctrl-C (or a SIGTERM): reading stops, the frames read are finished, every output is complete."""
    out = tmp_path / "o"
    proc, err = _score_process(long_video, model, out)
    seen = _wait_scored(proc, err, 15)
    proc.send_signal(signum)
    rc = proc.wait(timeout=120)
    time.sleep(0.2)
    text = "".join(err)
    assert rc == code, text
    assert "finishing" in text and "frames already read" in text and "Ctrl-C again" in text
    assert "Traceback" not in text
    n = _assert_consistent(out, video="complete")
    assert seen <= n < 2400
    ev = json.loads((out / "events.json").read_text())
    assert "interrupted" in ev["ended"]


def test_sigint_twice_stops_at_once_with_valid_outputs(long_video, model, tmp_path):
    out = tmp_path / "o"
    proc, err = _score_process(long_video, model, out)
    _wait_scored(proc, err, 15)
    proc.send_signal(signal.SIGINT)
    t0 = time.monotonic()
    while "finishing" not in "".join(err) and time.monotonic() - t0 < 30:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    rc = proc.wait(timeout=120)
    time.sleep(0.2)
    text = "".join(err)
    assert rc == 130 and "Traceback" not in text, text
    _assert_consistent(out)  # whether the second signal came before or after the flush: valid, no gap


def test_second_signal_inside_the_network_step(clip, model, tmp_path, monkeypatch):
    """Deterministic: the first SIGINT lands in a network call, the second one in the flush's network call.
    The frames scored before it are written (no gap), the half-written video is dropped, exit code 130."""
    real = driver.net_fn
    calls = {"n": 0}

    def net_fn(*a, **k):
        net = real(*a, **k)

        def wrapped(raw, flow, speed):
            calls["n"] += 1
            if calls["n"] in (4, 5):  # call 4: during reading; call 5: the flush after the first signal
                os.kill(os.getpid(), signal.SIGINT)
            return net(raw, flow, speed)

        return wrapped

    monkeypatch.setattr(driver, "net_fn", net_fn)
    before = signal.getsignal(signal.SIGINT)
    out = tmp_path / "o"
    res = stream.score(clip, model, out, stream.ScoreOptions(boxes="motion", perturb=False, progress=False,
                                                             batch_frames=2))
    assert res.exit_code == 130 and "stopped at once" in res.end_reason
    n = _assert_consistent(out, video="absent")
    assert n == res.n_frames and 8 <= n < 60  # (at least) the four batches scored before the flush
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored


def test_engine_is_exception_safe():
    """A KeyboardInterrupt inside any stage leaves the engine as it was: the same push can be retried,
    finish() works, and the results are those of an uninterrupted run (the old engine: KeyError, gaps)."""
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (24, 32, 3), dtype=np.uint8) for _ in range(23)]

    def make(fail_at: dict[str, int]):
        count = {"flow": 0, "boxes": 0, "net": 0}

        def hit(stage: str) -> None:
            count[stage] += 1
            if count[stage] == fail_at.get(stage):
                raise KeyboardInterrupt

        def flow(a, b):
            hit("flow")
            return np.ones((*a.shape[:2], 2), np.float32) * (a[..., :1] / 255.0)

        def boxes(p, c, n):
            hit("boxes")
            return np.array([[1, 2, 12, 15], [5, 5, 20, 20]], np.float32)

        def net(raw, fl, speed):
            hit("net")
            s = raw.reshape(len(raw), -1).mean(1).astype(np.float64)
            return s, s, s

        return stream.StreamScorer(length=2, patch=8, box_fn=boxes, flow_fn=flow, net_fn=net, batch_frames=3)

    def run(eng, stop_after=None):
        out = []
        for i, f in enumerate(frames[:stop_after]):
            for _ in range(3):
                try:
                    out += eng.push(f)
                    break
                except KeyboardInterrupt:  # in flow/boxes: the frame was not taken, push it again;
                    assert eng.n_received in (i, i + 1)  # in the network: it was, its batch waits
                    if eng.n_received == i + 1:
                        break
        for _ in range(3):
            try:
                out += eng.finish()
                break
            except KeyboardInterrupt:
                pass
        return out

    ref = run(make({}))
    for fail in ({"flow": 5}, {"boxes": 7}, {"net": 2}, {"net": 8}):
        got = run(make(fail))
        assert [r.index for r in got] == list(range(len(frames))), fail
        for a, b in zip(ref, got, strict=True):
            np.testing.assert_array_equal(a.scores, b.scores)
    # interrupted in the flush network step, then finish() again: the old engine raised KeyError
    got = run(make({"net": 7}), stop_after=10)
    assert [r.index for r in got] == list(range(10))


def test_bad_box_is_a_user_error_with_valid_outputs(clip, model, tmp_path, monkeypatch, capsys):
    """A NaN box (any ValueError in a stage) was taken for 'input changed' and the run ended as if normal."""
    real = driver.box_fn

    def box_fn(cfg, spec, sha=None):
        fn, desc = real(cfg, "motion", sha)
        state = {"t": 0}

        def bad(p, c, n):
            state["t"] += 1
            b = fn(p, c, n)
            return np.array([[np.nan, 0, 4, 4]], np.float32) if state["t"] == 20 else b

        return bad, desc

    monkeypatch.setattr(driver, "box_fn", box_fn)
    out = tmp_path / "o"
    assert main(["score", clip, "--model", str(model), "--out", str(out), *FAST, "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error:" in err[0] and "non-finite" in err[0] and "Traceback" not in err[0]
    assert "frames scored before it" in err[0]
    n = _assert_consistent(out, video="absent")
    assert 0 < n < 20


def test_reference_boxes_running_out_keep_outputs(clip, model, tmp_path, capsys):
    boxes = np.array([[2, 2, 20, 20]] * 12, np.float32)
    np.savez(tmp_path / "b.npz", boxes=boxes, offsets=np.arange(13))
    out = tmp_path / "o"
    assert main(["score", clip, "--model", str(model), "--out", str(out), "--boxes",
                 str(tmp_path / "b.npz"), "--no-perturb", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "boxes for 12 frames" in err and err.count("\n") == 1
    _assert_consistent(out, video="absent")


# ----------------------------------------------------------------------------------------- 2. full disk
def test_full_disk_is_one_error_and_no_file_published(clip, model, tmp_path, monkeypatch, capsys):
    real = os.fsync

    def fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", fsync)
    out = tmp_path / "o"
    rc = main(["score", clip, "--model", str(model), "--out", str(out), *FAST, "--quiet",
               "--max-frames", "12"])
    monkeypatch.setattr(os, "fsync", real)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "disk is full" in err[0] and str(out) in err[0]
    assert list(out.iterdir()) == []  # nothing under a real name, no temp left


def test_unreadable_video_is_never_published(tmp_path, monkeypatch):
    """cv2.VideoWriter reports no error: a file without its index must not appear as annotated.mp4."""
    from statevad.visualize import AnnotatedVideoWriter

    w = AnnotatedVideoWriter(tmp_path / "annotated.mp4", 10.0, (32, 24), 1.0)
    for _ in range(5):
        w.write(np.zeros((24, 32, 3), np.uint8), np.zeros((0, 4), np.float32), np.zeros(0), np.zeros(3))
    tmp = w._tmp
    release = w._writer.release

    def truncating_release():
        release()
        data = tmp.read_bytes()
        tmp.write_bytes(data[: len(data) // 3])  # what a full disk leaves: no moov atom

    monkeypatch.setattr(w, "_writer", type("W", (), {"release": staticmethod(truncating_release)})())
    with pytest.raises(OSError, match="did not read back"):
        w.close()
    assert list(tmp_path.iterdir()) == []


def test_full_disk_while_writing_the_video(clip, model, tmp_path, monkeypatch, capsys):
    from statevad import visualize

    def finish(self):
        self._writer.release()
        self._tmp.unlink()
        raise OSError(errno.ENOSPC, "No space left on device", str(self.dest))

    monkeypatch.setattr(visualize.AnnotatedVideoWriter, "finish", finish)
    out = tmp_path / "o"
    rc = main(["score", clip, "--model", str(model), "--out", str(out), *FAST, "--quiet",
               "--max-frames", "12"])
    err = capsys.readouterr().err
    assert rc == 2 and "disk is full" in err and err.count("\n") == 1
    assert list(out.iterdir()) == []


# ----------------------------------------------------------------------------------- 5. objects per frame
def test_objects_per_frame_are_capped():
    """1,200 boxes a frame made 10 s a frame: the cap keeps the ones that move most, deterministically."""
    h, w = 64, 96
    grid = np.array([[x, y, x + 4, y + 4] for y in range(0, h - 4, 2) for x in range(0, w - 4, 2)],
                    np.float32)

    def flow(a, b):
        f = np.zeros((h, w, 2), np.float32)
        f[40:50, 60:80, 0] = 3.0  # only this region moves
        return f

    seen = []

    def net(raw, fl, speed):
        seen.append(len(raw))
        s = np.arange(len(raw), dtype=np.float64)
        return s, s, s

    frames = [np.full((h, w, 3), i, np.uint8) for i in range(9)]
    eng = stream.StreamScorer(length=1, patch=8, box_fn=lambda p, c, n: grid, flow_fn=flow, net_fn=net,
                              batch_frames=1, max_objects=7)
    res = [r for f in frames for r in eng.push(f)] + eng.finish()
    assert [len(r.boxes) for r in res] == [7] * len(frames) and eng.n_capped == len(frames)
    kept = res[0].boxes
    assert np.all((kept[:, 0] >= 56) & (kept[:, 2] <= 84) & (kept[:, 1] >= 36) & (kept[:, 3] <= 54))
    assert all(np.array_equal(r.boxes, kept) for r in res)  # deterministic
    order = [np.flatnonzero((grid == b).all(1))[0] for b in kept]
    assert order == sorted(order)  # the kept boxes keep their original order


def test_cap_is_reported(clip, model, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["score", clip, "--model", str(model), "--out", str(out), *FAST, "--quiet",
                 "--max-objects", "1", "--no-video"]) == 0
    err = capsys.readouterr().err
    assert err.count("--max-objects") == 1  # warned once
    ev = json.loads((out / "events.json").read_text())
    assert ev["frames with objects capped"] > 0 and ev["max objects per frame"] == 1
    assert max(int(r[3]) for r in _rows(out)) == 1
    assert main(["score", clip, "--model", str(model), "--out", str(tmp_path / "x"), "--max-objects",
                 "-1"]) == 2


# ------------------------------------------------------------------------------------- 9. output folders
def test_non_empty_out_is_refused_unless_overwrite(clip, model, tmp_path, capsys):
    out = tmp_path / "o"
    args = ["score", clip, "--model", str(model), "--out", str(out), *FAST, "--quiet"]
    assert main([*args, "--max-frames", "20"]) == 0
    assert (out / "annotated.mp4").is_file()
    (out / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert main([*args, "--max-frames", "8", "--no-video"]) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "--overwrite" in err and err.count("\n") == 1
    assert len(_rows(out)) == 20  # untouched
    assert main([*args, "--max-frames", "8", "--no-video", "--overwrite"]) == 0
    assert len(_rows(out)) == 8
    assert not (out / "annotated.mp4").exists()  # the old 20-frame video is not listed as this run's
    assert (out / "notes.txt").read_text() == "mine"  # only this command's files are deleted


def test_stale_temps_are_cleaned(clip, model, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = out / f".scores.p{dead.pid}-abc.tmp.csv"
    stale.write_text("half")
    res = stream.score(clip, model, out, stream.ScoreOptions(boxes="motion", perturb=False, progress=False,
                                                             max_frames=9, video=False))
    assert res.n_frames == 9 and not stale.exists()


# -------------------------------------------------------------------------------------- 11. stream inputs
def test_file_url_is_the_local_path(clip, model, tmp_path, capsys):
    url = Path(clip).resolve().as_uri()
    assert url.startswith("file:///")
    assert main(["score", url, "--model", str(model), "--out", str(tmp_path / "o"), *FAST, "--quiet",
                 "--max-frames", "9"]) == 0
    assert len(_rows(tmp_path / "o")) == 9
    assert main(["info", url, "--json"]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["frames"] == 60
    with pytest.raises(UserError, match="this machine"):
        from statevad.io import open_source

        open_source("file://otherhost/x.mp4")


def test_info_of_an_unreachable_url_is_one_error(capsys):
    assert main(["info", "http://127.0.0.1:9/none.mp4"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "http://127.0.0.1:9/none.mp4" in err and "cannot open stream" in err


def test_frame_folder_warns_about_fps(synthetic_root, model, tmp_path, capsys):
    from statevad import datasets

    folder = str(list(datasets.load_dataset(synthetic_root).clips("test"))[0].source)
    assert main(["score", folder, "--model", str(model), "--out", str(tmp_path / "a"), *FAST, "--quiet",
                 "--max-frames", "9", "--no-video"]) == 0
    err = capsys.readouterr().err
    assert err.count("--fps") == 1 and "25" in err
    assert main(["score", folder, "--model", str(model), "--out", str(tmp_path / "b"), *FAST, "--quiet",
                 "--max-frames", "9", "--no-video", "--fps", "10"]) == 0
    assert "--fps" not in capsys.readouterr().err


def test_stalled_stream_is_reported(monkeypatch):
    from statevad import io as sio

    class Cap:
        def __init__(self, *_a):
            self.n = 0

        def isOpened(self):
            return True

        def get(self, prop):
            return {cv2.CAP_PROP_FPS: 10.0}.get(prop, 0.0)

        def read(self):
            self.n += 1
            if self.n > 3:
                return False, None
            return True, np.zeros((8, 8, 3), np.uint8)

        def release(self):
            pass

    clock = iter([0.0, 1.0, 2.0, 3.0, 40.0])  # three reads, then one that waits 37 s and fails
    monkeypatch.setattr(sio.cv2, "VideoCapture", Cap)
    monkeypatch.setattr(sio.time, "monotonic", lambda: next(clock))
    src = sio.open_source("rtsp://camera/stream", strict=False)
    end = {"reason": "end of input"}
    frames = list(driver._frames(src, end))
    assert len(frames) == 3 and end["reason"] == "input stalled (no frame for 37 s)"


@pytest.mark.parametrize("flag,value", [("--fps", "nan"), ("--fps", "inf"), ("--fps", "0"), ("--fps", "-5"),
                                        ("--batch-frames", "0"), ("--max-frames", "0"),
                                        ("--max-frames", "-3"), ("--threshold", "nan"),
                                        ("--threshold", "-inf"), ("--threshold", "inf")])
def test_bad_numbers_are_one_line_errors(clip, model, tmp_path, capsys, flag, value):
    assert main(["score", clip, "--model", str(model), "--out", str(tmp_path / "o"), "--quiet",
                 f"{flag}={value}"]) == 2  # FLAG=VALUE: argparse would read "-inf" as an option
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and flag in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("labels", [[0] * 400, [0, 1] * 3, {"intervals": [[10, 9000]]}])
def test_labels_of_another_length_are_refused(clip, model, tmp_path, capsys, labels):
    """A 400-frame label file on a shorter clip printed an AUROC all the same."""
    path = tmp_path / "labels.json"
    path.write_text(json.dumps(labels))
    assert main(["score", clip, "--model", str(model), "--out", str(tmp_path / "o"), "--quiet",
                 "--labels", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--labels do not belong to" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


# ------------------------------------------------------------------------------------------- progress
def test_progress_counts_frames_scored(clip, model, tmp_path, monkeypatch):
    """The bar counted frames read: it reached the end while l+1+batch frames were still being scored."""
    log: list[tuple[int, int]] = []

    class Bar:
        def __init__(self, **kw):
            self.n = 0

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def update(self, k=1):
            self.n += k
            log.append((self.n, len(sinks[0].scores)))

        def set_postfix_str(self, *a, **k):  # "read N" beside the count
            pass

    sinks: list = []
    real_outputs = driver.Outputs

    def outputs(*a, **k):
        sinks.append(real_outputs(*a, **k))
        return sinks[-1]

    monkeypatch.setattr(driver, "tqdm", Bar)
    monkeypatch.setattr(driver, "Outputs", outputs)
    res = stream.score(clip, model, tmp_path / "o", stream.ScoreOptions(boxes="motion", perturb=False,
                                                                        video=False))
    assert log[-1][0] == res.n_frames == 60
    assert all(shown == scored for shown, scored in log)
