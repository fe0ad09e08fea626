import numpy as np
import pytest

from statevad import stream
from statevad.boxes import bundled_detector
from statevad.config import CubeConfig
from statevad.cubes import clip_cubes
from statevad.errors import UserError
from statevad.labels import fit_labels, load_labels
from statevad.scoring import EMPTY_FRAME_SCORE
from statevad.stream import stages


def _frames(n: int, h: int = 24, w: int = 32, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def _flow_fn(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Deterministic fake flow that depends on both frames (so pairing mistakes show)."""
    d = a[..., :2].astype(np.float32) - 0.5 * b[..., :2].astype(np.float32)
    return d + 1.0


def _box_fn(p: np.ndarray, c: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Fake boxes that depend on the hard-border triple; some frames have none."""
    k = (int(p[0, 0, 0]) + 2 * int(c[0, 0, 0]) + int(n[0, 0, 0])) % 4
    return np.array([[1 + i, 2, 10 + 3 * i, 15] for i in range(k)], np.float32).reshape(-1, 4)


class _Recorder:
    def __init__(self) -> None:
        self.raw: list[np.ndarray] = []
        self.flow: list[np.ndarray] = []

    def __call__(self, raw, flow, speed):
        self.raw.append(raw)
        self.flow.append(flow)
        s = raw.reshape(len(raw), -1).mean(1).astype(np.float64)
        return s, s * 2, s - 100


def _offline(frames, length):
    n = len(frames)
    flows = np.stack([_flow_fn(frames[t], frames[t + 1]) for t in range(n - 1)] + [None] * 0)
    flows = np.concatenate([flows, flows[-1:]])
    boxes = [_box_fn(frames[max(t - 1, 0)], frames[t], frames[min(t + 1, n - 1)]) for t in range(n)]
    return clip_cubes(np.stack(frames), flows, boxes, CubeConfig(length=length, patch=8))


@pytest.mark.parametrize("n,length,batch", [(7, 3, 1), (20, 3, 4), (13, 2, 3), (9, 1, 100)])
def test_stream_cubes_equal_offline_cubes(n, length, batch):
    frames = _frames(n, seed=n)
    rec = _Recorder()
    eng = stream.StreamScorer(length=length, patch=8, box_fn=_box_fn, flow_fn=_flow_fn, net_fn=rec,
                              batch_frames=batch)
    results = []
    max_buf = 0
    for f in frames:
        results += eng.push(f)
        max_buf = max(max_buf, eng.buffered)
        # delay: once a full window exists, frame t is final when t + l + 1 has arrived (+ batching)
        if eng.n_received > 2 * length + 1:
            assert len(results) >= eng.n_received - length - batch
    results += eng.finish()
    assert [r.index for r in results] == list(range(n))
    assert max_buf <= 2 * length + 3 + batch
    off = _offline(frames, length)
    raw = np.concatenate(rec.raw) if rec.raw else np.zeros((0,))
    flow = np.concatenate(rec.flow) if rec.flow else np.zeros((0,))
    assert len(raw) == len(off) and eng.n_cubes == len(off)
    np.testing.assert_array_equal(raw, off.raw)
    np.testing.assert_array_equal(flow, off.flow)
    frame_of = np.concatenate([np.full(len(r.scores), r.index) for r in results])
    np.testing.assert_array_equal(frame_of, off.frame)
    np.testing.assert_array_equal(np.concatenate([r.boxes for r in results]), off.box)
    # the frame score is the max over its objects, NO_OBJECT without objects
    for r in results:
        assert r.score == (r.scores.max() if len(r.scores) else EMPTY_FRAME_SCORE)


def test_stream_shorter_than_a_cube():
    eng = stream.StreamScorer(length=3, patch=8, box_fn=_box_fn, flow_fn=_flow_fn, net_fn=_Recorder())
    res = []
    for f in _frames(4):
        res += eng.push(f)
    res += eng.finish()
    assert [r.index for r in res] == [0, 1, 2, 3]
    assert all(r.score == EMPTY_FRAME_SCORE for r in res) and eng.too_short


def test_stream_rejects_size_change():
    eng = stream.StreamScorer(length=1, patch=8, box_fn=_box_fn, flow_fn=_flow_fn, net_fn=_Recorder())
    eng.push(np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(ValueError):
        eng.push(np.zeros((12, 10, 3), np.uint8))


def test_load_labels_formats(tmp_path):
    np.save(tmp_path / "l.npy", np.array([0, 1, 1]))
    (tmp_path / "l.txt").write_text("0\n1\n1\n")
    (tmp_path / "l.json").write_text('{"intervals": [[1, 2]], "n_frames": 3}')
    (tmp_path / "c.json").write_text('{"clips": {"02": [0, 1, 1]}}')
    for name in ("l.npy", "l.txt", "l.json", "c.json"):
        assert load_labels(tmp_path / name)[0].tolist() == [0, 1, 1]
    (tmp_path / "d.json").write_text('{"02": [[1, 2]]}')  # a dataset labels.json: intervals, pad 0
    lab, pad = load_labels(tmp_path / "d.json")
    assert lab.tolist() == [0, 1, 1] and pad == 0
    assert fit_labels(lab, 5, pad).tolist() == [0, 1, 1, 0, 0]
    (tmp_path / "bad.txt").write_text("0 7")
    with pytest.raises(UserError):
        load_labels(tmp_path / "bad.txt")
    with pytest.raises(UserError):
        load_labels(tmp_path / "missing.npy")


# ---------------------------------------------------------------------------- end to end (CLI)
def _decode(path):
    import cv2

    cap = cv2.VideoCapture(str(path))
    n, shape = 0, None
    while True:
        ok, f = cap.read()
        if not ok:
            break
        n, shape = n + 1, f.shape
    cap.release()
    return n, shape


@pytest.fixture(scope="module")
def untrained_model(tmp_path_factory):
    """A tiny untrained network with plausible statistics: enough to exercise every output quickly."""
    import torch

    from statevad.checkpoint import save_checkpoint
    from statevad.config import get_preset, with_model_size
    from statevad.model import STATE

    p = get_preset("generic")
    p.model = with_model_size(p.model, "tiny")
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_checkpoint(path, STATE(p.model).eval(), p,
                    {"raw_mean": 50.0, "raw_std": 20.0, "flow_mean": 500.0, "flow_std": 300.0,
                     "motion_mean": 1.0, "motion_std": 1.0}, None)
    return path


@pytest.fixture()
def synthetic_clip(request):
    """(source, labels, n_frames, (H, W)) of the synthetic scene's first test clip."""
    from statevad import datasets

    root = request.getfixturevalue("synthetic_root")
    ds = datasets.load_dataset(root)
    clip = list(ds.clips("test"))[0]
    lab = np.asarray(ds.labels("test"))[clip.start:clip.start + clip.n_frames]
    return str(clip.source), lab, int(clip.n_frames), tuple(clip.size)


def test_score_cli_writes_every_output(synthetic_clip, untrained_model, tmp_path, capsys):
    import json

    import cv2

    from statevad.cli import main

    src, lab, n, (h, w) = synthetic_clip
    np.save(tmp_path / "lab.npy", lab)
    out = tmp_path / "out"
    rc = main(["score", src, "--model", str(untrained_model), "--out", str(out), "--boxes", "motion",
               "--labels", str(tmp_path / "lab.npy"), "--quiet", "--no-perturb"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "scored" in printed and "threshold" in printed
    rows = (out / "scores.csv").read_text().splitlines()
    assert rows[0].startswith("frame,time_s,score,n_objects")
    assert [int(r.split(",")[0]) for r in rows[1:]] == list(range(n))
    n_obj = sum(int(r.split(",")[3]) for r in rows[1:])
    objs = [json.loads(x) for x in (out / "objects.jsonl").read_text().splitlines()]
    assert len(objs) == n_obj > 0 and {"frame", "box", "e_raw", "e_flow", "speed", "score"} <= set(objs[0])
    assert all(o["speed"] >= 0 for o in objs)
    ev = json.loads((out / "events.json").read_text())
    assert ev["frames scored"] == n and isinstance(ev["events"], list)
    assert _decode(out / "annotated.mp4") == (n, (h, w, 3))
    assert cv2.imread(str(out / "score_curve.png")) is not None
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "<table>" in html
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


def test_score_lost_stream_leaves_valid_outputs(synthetic_clip, untrained_model, tmp_path, monkeypatch):
    """A source that fails after 15 frames (camera unplugged, truncated file) ends the run cleanly."""
    import cv2

    from statevad import io as sio

    src, _lab, n, (h, w) = synthetic_clip

    class Dying:
        fps = 10.0

        def __iter__(self):
            for i, f in enumerate(sio.open_source(src, strict=False)):
                if i == 15:
                    raise OSError("connection lost")
                yield f

    monkeypatch.setattr(stream.driver, "open_source", lambda spec, strict=False: Dying())
    opts = stream.ScoreOptions(boxes="motion", progress=False)
    res = stream.score(src, untrained_model, tmp_path / "o", opts)
    assert res.n_frames == 15 and "lost" in res.end_reason
    assert len((tmp_path / "o" / "scores.csv").read_text().splitlines()) == 16
    assert _decode(tmp_path / "o" / "annotated.mp4") == (15, (h, w, 3))
    assert cv2.imread(str(tmp_path / "o" / "score_curve.png")) is not None


def test_score_max_frames_and_short_input(synthetic_clip, untrained_model, tmp_path):
    src, _lab, _n, _ = synthetic_clip
    res = stream.score(src, untrained_model, tmp_path / "a", stream.ScoreOptions(
        boxes="motion", max_frames=12, perturb=True, progress=False, video=False))
    assert res.n_frames == 12 and "max-frames" in res.end_reason
    assert not (tmp_path / "a" / "annotated.mp4").exists()
    res = stream.score(src, untrained_model, tmp_path / "b", stream.ScoreOptions(
        boxes="motion", max_frames=4, progress=False))
    assert res.n_frames == 4 and res.n_objects == 0  # shorter than one 7-frame cube


def test_score_bad_inputs_exit_2(synthetic_clip, untrained_model, tmp_path, capsys):
    from statevad.cli import main

    src = synthetic_clip[0]
    assert main(["score", src, "--model", str(tmp_path / "none.pt"), "--out", str(tmp_path / "o")]) == 2
    assert main(["score", str(tmp_path / "missing.mp4"), "--model", str(untrained_model),
                 "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert main(["score", src, "--model", str(untrained_model), "--out", str(tmp_path / "o"),
                 "--labels", str(tmp_path / "nolabels.npy")]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 3 and "Traceback" not in err


def test_score_model_without_motion_statistics(synthetic_clip, tmp_path, capsys):
    """A model file from before the motion term: a clear error, and --w-motion 0 scores it as STATE did."""
    import torch

    from statevad.checkpoint import save_checkpoint
    from statevad.cli import main
    from statevad.config import get_preset, with_model_size
    from statevad.model import STATE

    p = get_preset("ped2")  # its fallback scoring settings have the motion term
    assert p.score.w_motion > 0
    p.model = with_model_size(p.model, "tiny")
    torch.manual_seed(0)
    old = save_checkpoint(tmp_path / "old.pt", STATE(p.model).eval(), p,
                          {"raw_mean": 50.0, "raw_std": 20.0, "flow_mean": 500.0, "flow_std": 300.0}, None)
    args = ["score", synthetic_clip[0], "--model", str(old), "--boxes", "motion", "--quiet", "--no-video",
            "--max-frames", "10", "--no-perturb"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "motion_mean" in err and "--w-motion 0" in err and "Traceback" not in err
    assert not (tmp_path / "a" / "scores.csv").exists()
    assert main([*args, "--out", str(tmp_path / "b"), "--w-motion", "0"]) == 0
    assert (tmp_path / "b" / "scores.csv").is_file()


def test_detector_file_is_found_by_content(tmp_path):
    """A model scores with the detector its training cubes were made with: the recorded path (another
    machine's, often) if it holds that model, else the bundled one if it is the same model; a different
    model is refused, not silently used (unless the boxes do not need a detector)."""
    import shutil

    from statevad.config import BoxConfig
    from statevad.errors import UserError
    from statevad.files import sha256_file

    bundled = bundled_detector()
    if not bundled.is_file():
        pytest.skip(f"no bundled detector at {bundled}")
    sha = sha256_file(bundled)
    gone = str(tmp_path / "elsewhere" / "nanodet.onnx")  # prepared on another machine
    assert stages.detector_file(gone, sha) == bundled
    assert stages.detector_file(gone, None) == bundled  # older model files: no checksum recorded
    copy = tmp_path / "mine.onnx"
    shutil.copyfile(bundled, copy)
    assert stages.detector_file(str(copy), sha) == copy
    assert stages.detector_file(str(copy), None) == copy
    other = "0" * 64  # a custom detector that is not on this machine
    with pytest.raises(UserError, match="different model.*--boxes motion"):
        stages.detector_file(gone, other)
    copy.write_bytes(b"replaced")  # same path, other content: not the model the cubes were made with
    with pytest.raises(UserError, match="copy that detector file"):
        stages.detector_file(str(copy), other)
    fn, desc = stages.box_fn(BoxConfig(detector_path=gone), "motion", other)  # no detector needed
    assert desc.startswith("motion")
