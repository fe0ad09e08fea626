"""Hostile input: every bad file gives one clear line naming it and exit code 2 (or is handled as
documented: a clip shorter than the cube length is skipped with a warning) -- never a traceback, a hang
or a silently wrong number. Plus security (no unpickling, no path escapes) and property-based tests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers import fails_one_line as _fails
from helpers import make_work, train_on_one_thread
from hypothesis import given, settings
from hypothesis import strategies as st

from statevad import preparation as prep
from statevad.boxes import load_reference_boxes
from statevad.checkpoint import state_dict_sha256
from statevad.cli import main
from statevad.cubes import ClipTooShort, elastic_window
from statevad.io import natural_key
from statevad.synthetic import make_scene
from statevad.workdir import open_split

PREP = ["--boxes", "motion", "--split", "train", "--quiet"]


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_scene(tmp_path_factory.mktemp("hostile") / "scene", n_train=2, n_test=1, n_frames=12)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    work = make_work(tmp_path_factory.mktemp("hostile_work") / "work")
    return work, train_on_one_thread(work, "--model-size", "tiny", "--epochs", "1", "--batch-size", "8",
                                     "--device", "cpu", "--quiet")


def _copy(scene: Path, tmp_path: Path, name: str = "root") -> Path:
    return Path(shutil.copytree(scene, tmp_path / name))


def _video(path: Path, n: int, size: tuple[int, int] = (64, 48)) -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, size)
    for i in range(n):
        f = np.full((size[1], size[0], 3), 60, np.uint8)
        f[10:20, 2 * i:2 * i + 10] = 255
        w.write(f)
    w.release()
    return path


# -------------------------------------------------------------------------------------------- videos
def test_zero_byte_video(scene: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _copy(scene, tmp_path)
    (root / "train" / "empty.avi").write_bytes(b"")
    _fails(["prepare", "--root", str(root), "--work", str(tmp_path / "w"), *PREP], capsys,
           "empty.avi", "empty")


def test_truncated_video(scene: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _copy(scene, tmp_path)
    v = _video(root / "train" / "cut.avi", 30)
    v.write_bytes(v.read_bytes()[: v.stat().st_size // 2])
    _fails(["prepare", "--root", str(root), "--work", str(tmp_path / "w"), *PREP], capsys,
           "cut.avi", "truncated")


def test_not_a_video_with_a_video_extension(scene: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    root = _copy(scene, tmp_path)
    (root / "train" / "fake.mp4").write_text("this is not a video\n")
    _fails(["prepare", "--root", str(root), "--work", str(tmp_path / "w"), *PREP], capsys, "fake.mp4")
    _fails(["info", str(root / "train" / "fake.mp4")], capsys, "fake.mp4")


def test_frame_folder_with_mixed_sizes(scene: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    root = _copy(scene, tmp_path)
    frame = sorted((root / "train" / "01").iterdir())[3]
    cv2.imwrite(str(frame), cv2.resize(cv2.imread(str(frame)), (80, 60)))
    _fails(["prepare", "--root", str(root), "--work", str(tmp_path / "w"), *PREP], capsys, frame.name, "size")


@pytest.mark.parametrize("bad", ["0005.png", "notes.txt"])
def test_frame_folder_with_a_non_image(bad: str, scene: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    root = _copy(scene, tmp_path)
    (root / "train" / "01" / bad).write_bytes(b"garbage, not an image")
    _fails(["prepare", "--root", str(root), "--work", str(tmp_path / "w"), *PREP], capsys, bad)


@pytest.mark.parametrize("n_frames", [1, 5])
def test_one_frame_and_short_clips_are_skipped_with_a_warning(n_frames: int, scene: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Documented behaviour: a clip shorter than 2l+1 frames has no cube window; prepare skips it."""
    root = _copy(scene, tmp_path)
    _video(root / "train" / "short.avi", n_frames)
    work = tmp_path / "w"
    assert main(["prepare", "--root", str(root), "--work", str(work), *PREP]) == 0
    err = capsys.readouterr().err
    assert "warning: train clip short skipped (too short)" in err and "Traceback" not in err
    entry = json.loads((work / "manifest.json").read_text())["splits"]["train"]
    assert list(entry["skipped_clips"].values()) == [entry["skipped_clips"]["2"]]  # clip 2 = short.avi
    assert open_split(work, "train", verify=True).clip.max() == 1


def test_non_ascii_and_space_paths(scene: Path, tmp_path: Path) -> None:
    root = _copy(scene, tmp_path / "données vidéo", "scène 1 ü")
    work = tmp_path / "travail à faire" / "w d"
    assert main(["prepare", "--root", str(root), "--work", str(work), "--boxes", "motion", "--quiet"]) == 0
    for split in ("train", "test"):
        d = open_split(work, split, verify=True)
        assert len(d) > 0 and d.n_frames == sum(c["n_frames"] for c in d.clips)
    assert "scène 1 ü" in json.loads((work / "manifest.json").read_text())["dataset"]["root"]


# ------------------------------------------------------------------------------------ NaN / inf
def test_nan_flow_is_refused_at_prepare(scene: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Decision (README): non-finite flow stops prepare, naming clip and frame; it is not zeroed."""
    import statevad.flow

    real = statevad.flow.clip_flow

    def nan_flow(frames: np.ndarray, *a: object, **k: object) -> np.ndarray:
        out = np.array(real(frames, *a, **k), np.float32)
        out[4, 3, 3, 0] = np.inf
        return out

    monkeypatch.setattr(statevad.flow, "clip_flow", nan_flow)
    _fails(["prepare", "--root", str(scene), "--work", str(tmp_path / "w"), *PREP], capsys,
           "clip 01", "frame 4", "NaN or inf")
    assert not (tmp_path / "w" / "manifest.json").exists()


def test_nan_in_training_cubes_stops_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    work = make_work(tmp_path / "work")
    flow = np.load(work / "train" / "flow.npy")
    flow[3, 0, 0, 0, 0] = np.nan
    np.save(work / "train" / "flow.npy", flow)
    _fails(["train", "--work", str(work), "--model-size", "tiny", "--epochs", "1", "--device", "cpu",
            "--quiet"], capsys, "diverged", "NaN")


# ---------------------------------------------------------------------------------------- labels
def test_label_interval_outside_the_clip(scene: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    root = _copy(scene, tmp_path)
    (root / "labels.json").write_text('{"01": [[5, 400]]}')
    _fails(["prepare", "--root", str(root), "--work", str(tmp_path / "w"), "--boxes", "motion", "--quiet"],
           capsys, "labels.json", "01")


def test_frame_label_file_of_the_wrong_length(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "frames_layout"
    for split in ("training", "testing"):
        d = root / split / "frames" / "01"
        d.mkdir(parents=True)
        for i in range(9):
            cv2.imwrite(str(d / f"{i:03d}.jpg"), np.full((48, 64, 3), 20 * i, np.uint8))
    (root / "testing" / "test_frame_mask").mkdir()
    np.save(root / "testing" / "test_frame_mask" / "01.npy", np.zeros(7, np.uint8))  # 7 labels, 9 frames
    _fails(["prepare", "--root", str(root), "--work", str(tmp_path / "w"), "--boxes", "motion", "--quiet"],
           capsys, "01.npy")


# ----------------------------------------------------------------------------------- model files
def _tamper(src: Path, dst: Path, edit) -> Path:  # noqa: ANN001 - a small local callback
    data = torch.load(src, weights_only=True)
    edit(data)
    torch.save(data, dst)
    return dst


def test_model_files_from_another_version_or_tampered(trained: tuple[Path, Path], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    work, model = trained
    test = ["test", "--work", str(work), "--device", "cpu", "--out", str(tmp_path / "r"), "--quiet",
            "--model"]

    def other_version(d: dict) -> None:
        d["format"] = "statevad-model/2"

    def flipped(d: dict) -> None:
        k = next(k for k, v in d["state_dict"].items() if v.is_floating_point())
        d["state_dict"][k].view(-1)[0] += 0.5

    def nan_weights(d: dict) -> None:  # checksum recomputed: only the finiteness check catches it
        k = next(k for k, v in d["state_dict"].items() if v.is_floating_point())
        d["state_dict"][k].view(-1)[0] = float("nan")
        d["sha256"] = state_dict_sha256(d["state_dict"])

    def nan_stats(d: dict) -> None:
        d["stats"]["raw_std"] = float("inf")

    for name, edit, needle in (("v2.pt", other_version, "another statevad version"),
                               ("flip.pt", flipped, "checksum"), ("nan.pt", nan_weights, "NaN/inf weights"),
                               ("stats.pt", nan_stats, "raw_std")):
        _fails([*test, str(_tamper(model, tmp_path / name, edit))], capsys, name, needle)
    torn = tmp_path / "torn.pt"
    torn.write_bytes(model.read_bytes()[:3000])
    _fails([*test, str(torn)], capsys, "torn.pt", "corrupted")


class _Boom:
    """Unpickling this would create a file: proof that a loader ran pickled code."""

    def __init__(self, flag: str) -> None:
        self.flag = flag

    def __reduce__(self) -> tuple:
        return (Path.touch, (Path(self.flag),))


def test_a_model_file_carrying_pickled_code_is_not_executed(trained: tuple[Path, Path], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    work, _ = trained
    flag = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "statevad-model/1", "state_dict": {}, "x": _Boom(str(flag))}, evil)
    _fails(["test", "--work", str(work), "--model", str(evil), "--quiet"], capsys, "evil.pt")
    assert not flag.exists()


@pytest.mark.parametrize("kind", ["pickled code", "text"])
def test_a_rejected_model_file_is_never_met_with_advice_to_unpickle_it(kind: str, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]
                                                                       ) -> None:
    """torch's weights-only error opens with "re-running with weights_only=False will likely succeed";
    cut to one line it lost the warning that this runs the file's code. The error keeps only the cause."""
    bad = tmp_path / "model.pt"
    if kind == "text":
        bad.write_text("garbage, not a model\n")
    else:
        torch.save({"x": _Boom(str(tmp_path / "pwned"))}, bad)
    line = _fails(["info", str(bad)], capsys, "model.pt", "not a statevad model file",
                  "not a plain-data torch file")
    for advice in ("weights_only", "add_safe_globals", "safe_globals"):
        assert advice not in line, line
    assert not (tmp_path / "pwned").exists()


def test_pickled_reference_boxes_need_an_explicit_opt_in(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from statevad.errors import UserError

    boxes = np.empty(3, dtype=object)
    for i in range(3):
        boxes[i] = np.array([[1, 2, 10, 20]] * i, np.float32).reshape(-1, 4)
    path = tmp_path / "boxes_original.npy"
    np.save(path, boxes, allow_pickle=True)
    monkeypatch.delenv("STATEVAD_ALLOW_PICKLE", raising=False)
    with pytest.raises(UserError, match="pickled object array.*STATEVAD_ALLOW_PICKLE"):
        load_reference_boxes(path, 3)
    with pytest.warns(UserWarning, match="unpickling"):
        per = load_reference_boxes(path, 3, allow_pickle=True)
    assert [len(b) for b in per] == [0, 1, 2]
    monkeypatch.setenv("STATEVAD_ALLOW_PICKLE", "1")
    with pytest.warns(UserWarning, match="only do this for files you trust"):
        assert len(load_reference_boxes(path, None)) == 3


def test_manifest_paths_cannot_escape_the_work_dir(tmp_path: Path) -> None:
    from statevad.errors import UserError

    work = make_work(tmp_path / "work")
    m = json.loads((work / "manifest.json").read_text())
    m["splits"]["../../outside"] = m["splits"]["train"]
    (work / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(UserError, match="not a prepared work directory"):
        open_split(work, "train")
    with pytest.raises(UserError, match="unknown split"):
        open_split(work, "../../outside")
    clips_dir = (work / "train" / "clips").resolve()
    for name in ("../../evil", "/etc/passwd", "..", "a/../../b", "Testing/01", "\\..\\x"):
        c = prep.cache_name(name)
        assert "/" not in c and not c.startswith(".")  # one plain, visible file name
        assert (clips_dir / f"0000_{c}.npz").resolve().parent == clips_dir


# ------------------------------------------------------------------------------------- properties
@settings(max_examples=300, deadline=None)
@given(st.integers(0, 6), st.integers(1, 80), st.data())
def test_elastic_window_properties(length: int, n_frames: int, data: st.DataObject) -> None:
    size = 2 * length + 1
    if n_frames < size:
        with pytest.raises(ClipTooShort):
            elastic_window(0, n_frames, length)
        return
    t = data.draw(st.integers(0, n_frames - 1))
    w = elastic_window(t, n_frames, length)
    assert len(w) == size and np.all(np.diff(w) == 1)  # 2l+1 consecutive frames
    assert w[0] >= 0 and w[-1] < n_frames and t in w  # inside the clip, containing the target
    if length <= t < n_frames - length:
        assert w[length] == t  # centred whenever it fits (shifted, not padded, at the edges)


def _spec_context_range(i: int, video_of: list[int], length: int) -> list[int]:
    """Spec 4.1 literally, on the concatenated frames of all videos: global clamp, then shift by -offset."""
    n = len(video_of)
    i = min(max(i, length), n - 1 - length)
    win = list(range(i - length, i + length + 1))
    offset = sum(video_of[f] - video_of[i] for f in win)
    return [f - offset for f in win]


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 4), st.lists(st.integers(0, 12), min_size=1, max_size=4), st.data())
def test_elastic_window_matches_spec_4_1(length: int, extra: list[int], data: st.DataObject) -> None:
    lengths = [2 * length + 1 + e for e in extra]  # every video long enough for a window
    video_of = [v for v, n in enumerate(lengths) for _ in range(n)]
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    g = data.draw(st.integers(0, len(video_of) - 1))
    v = video_of[g]
    ours = elastic_window(g - int(starts[v]), lengths[v], length) + starts[v]
    assert ours.tolist() == _spec_context_range(g, video_of, length)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 10**6), min_size=1, max_size=30, unique=True),
       st.sampled_from(["", "frame_", "img"]), st.sampled_from([".jpg", ".png", ""]), st.randoms())
def test_natural_key_orders_numbers_by_value(nums: list[int], prefix: str, ext: str, rnd) -> None:  # noqa: ANN001
    names = [f"{prefix}{n}{ext}" for n in nums]
    shuffled = names[:]
    rnd.shuffle(shuffled)
    assert sorted(shuffled, key=natural_key) == [f"{prefix}{n}{ext}" for n in sorted(nums)]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=12), min_size=1, max_size=20), st.randoms())
def test_natural_key_is_total_and_listing_order_independent(names: list[str], rnd) -> None:  # noqa: ANN001
    keys = [natural_key(n) for n in names]  # never raises, whatever the text (unicode digits included)
    assert all(isinstance(k, tuple) for k in keys)
    shuffled = names[:]
    rnd.shuffle(shuffled)
    assert sorted(shuffled, key=natural_key) == sorted(names, key=natural_key)


# ------------------------------------------------------------------------- settings values (hostile)
@pytest.mark.parametrize("flags, needle", [
    (["--batch-size", "0"], "train.batch_size = 0: must be >= 1"),
    (["--lr", "nan"], "train.lr = nan: must be a finite number"),
    (["--lr", "inf"], "train.lr = inf"),
    (["--lr", "-1"], "train.lr = -1.0: must be > 0"),
    (["--epochs", "0"], "train.epochs = 0"),
    (["--max-cubes", "1"], "train.max_cubes = 1"),
    (["--seed", "-1"], "train.seed = -1"),
    (["--set", "model.widths=[]"], "model.widths = ()"),
    (["--set", "model.widths=a,b,c"], "not a comma-separated list"),
    (["--set", "model.widths=8,16,30"], "widths[2]=30"),
    (["--set", "model.n_heads=0"], "model.n_heads = 0"),
    (["--set", "model.pos=spiral"], "model.pos = 'spiral'"),
    (["--set", "train.adam_eps=0"], "train.adam_eps"),
    (["--set", "train.lambda_raw=-1"], "train.lambda_raw"),
])
def test_bad_train_settings_are_one_line(flags: list[str], needle: str, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    work = make_work(tmp_path / "work")
    _fails(["train", "--work", str(work), "--model-size", "tiny", "--device", "cpu", "--quiet", *flags],
           capsys, needle)
    assert not (work / "model.pt").exists()


@pytest.mark.parametrize("flags, needle", [
    (["--set", "cube.patch=0"], "cube.patch = 0: must be >= 1"),
    (["--set", "box.motion_kernel=2"], "box.motion_kernel = 2: must be odd"),
    (["--set", "box.score_thr=nan"], "box.score_thr = nan: must be a finite number"),
    (["--set", "box.score_thr=1.5"], "box.score_thr = 1.5: must be <= 1"),
    (["--set", "box.min_area=-5"], "box.min_area = -5"),
    (["--set", "box.detector_tiles=0"], "box.detector_tiles = 0"),
    (["--set", "cube.motion_thr=inf"], "cube.motion_thr = inf"),
    (["--set", "flow.dis_preset=slow"], "flow.dis_preset = 'slow'"),
    (["--length", "0"], "cube.length = 0"),
])
def test_bad_prepare_settings_are_one_line(flags: list[str], needle: str, scene: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    _fails(["prepare", "--root", str(scene), "--work", str(tmp_path / "w"), *PREP, *flags], capsys, needle)
    assert not (tmp_path / "w" / "manifest.json").exists()


@pytest.mark.parametrize("flags, needle", [
    (["--smooth-sigma", "-1"], "score.smooth_sigma = -1.0: must be >= 0"),
    (["--epsilon", "nan"], "score.epsilon = nan"),
    (["--w-raw", "inf"], "score.w_raw = inf"),
    (["--batch-size", "0"], "score.batch_size = 0"),
    (["--set", "score.w_motion=-4"], "score.w_motion = -4.0"),
])
def test_bad_test_settings_are_one_line(flags: list[str], needle: str, trained: tuple[Path, Path],
                                        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    work, model = trained
    _fails(["test", "--work", str(work), "--model", str(model), "--device", "cpu", "--quiet",
            "--out", str(tmp_path / "r"), *flags], capsys, needle)
    assert not (tmp_path / "r" / "metrics.json").exists()


def test_bad_values_in_a_config_file_are_checked_too(tmp_path: Path) -> None:
    from statevad.config import get_preset
    from statevad.errors import UserError
    from statevad.settings import resolve

    cfg = tmp_path / "c.toml"
    cfg.write_text("[train]\nlr = nan\n")
    with pytest.raises(UserError, match="train.lr = nan"):
        resolve(get_preset("ped2"), "train", config=cfg)
    assert resolve(get_preset("ped2"), "train").train.lr == 1e-3  # every preset passes its own checks
    for name in ("ped2", "avenue", "shanghaitech", "generic"):
        get_preset(name).validate()


# ------------------------------------------------------------------------------ label files (hostile)
_LABELS = [
    ("big.json", "[0, 1e400]", "found inf"),
    ("str.json", '["a"]', "found 'a'"),
    ("null.json", "[null]", "found None"),
    ("deep.json", "[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ("frac.json", "[0, 0.5, 1]", "found 0.5"),
    ("bool.json", "[true, false]", "found True"),
    ("two.json", "[0, 2]", "found 2"),
    ("short.csv", "0,1\n1\n", "row 2 has 1 field"),
    ("huge.csv", "0\n" + "1" * 200_000 + "\n", "row 2"),
    ("frac.txt", "0\n0.5\n", "found 0.5"),
    ("word.txt", "0\nyes\n", "'yes' is not a label"),
    ("far.json", '{"intervals": [[0, 3000000000]]}', "ends past the last frame 9999999"),
    ("n.json", '{"intervals": [[0, 3]], "n_frames": 1e400}', "n_frames = inf"),
    ("inf_end.json", "[[0, 1e400]]", "bounds must be integers"),
    ("rev.json", '{"intervals": [[5, 2]], "n_frames": 9}', "[5, 2]"),
    ("two_clips.json", '{"a": [[0, 1]], "b": [[0, 1]]}', "labels for 2 clips"),
    ("obj.npy", None, "not of 0/1 labels"),
    ("nan.npy", None, "NaN or inf"),
]


@pytest.mark.parametrize("name, text, needle", _LABELS)
def test_hostile_label_files_are_one_line(name: str, text: str | None, needle: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """``statevad score --labels`` parses the file first (labels.py): one line, exit 2, nothing written."""
    path = tmp_path / name
    if name == "obj.npy":
        np.save(path, np.array(["0", "1"]))
    elif name == "nan.npy":
        np.save(path, np.array([0.0, np.nan]))
    else:
        path.write_bytes(text.encode("utf-8"))
    line = _fails(["score", str(tmp_path / "none.mp4"), "--model", str(tmp_path / "none.pt"), "--out",
                   str(tmp_path / "out"), "--labels", str(path), "--quiet"], capsys, name, needle)
    assert len(line) < 400
    assert not (tmp_path / "out").exists()


def test_label_files_that_are_valid_after_all(tmp_path: Path) -> None:
    from statevad.errors import UserError
    from statevad.labels import labels_match, load_labels

    bom = tmp_path / "bom.csv"
    bom.write_bytes("\ufeff0\n1\n1\n".encode())  # Excel's UTF-8 byte-order mark
    assert load_labels(bom)[0].tolist() == [0, 1, 1]
    ones = tmp_path / "ones.json"
    ones.write_text("[0, 1.0, -1]")
    assert load_labels(ones)[0].tolist() == [0, 1, -1]
    # the input's length, when the caller knows it, bounds intervals and must match per-frame labels
    iv = tmp_path / "iv.json"
    iv.write_text('{"intervals": [[2, 8]]}')
    lab, pad = load_labels(iv)
    assert pad == 0 and labels_match(lab, pad, 9) is None and "past" in labels_match(lab, pad, 5)
    with pytest.raises(UserError, match="ends past the last frame 4"):
        load_labels(iv, n_frames=5)
    with pytest.raises(UserError, match="3 labels for an input of 4 frames"):
        load_labels(bom, n_frames=4)
    assert "3 labels for an input of 4" in labels_match(load_labels(bom)[0], -1, 4)


# ------------------------------------------------------------------------ manifests of the wrong type
def _set_entry(m: dict, path: str, value: object) -> None:
    *keys, last = path.split(".")
    for k in keys:
        m = m[k]
    m[last] = value


@pytest.mark.parametrize("path, value, needle", [
    ("splits.train.n_frames", "eight", "n_frames = 'eight'"),
    ("splits.train.shapes", 3, "shapes is missing"),
    ("splits.train.shapes.raw", ["a"], "shapes is missing"),
    ("splits.train.checksums", [1], "checksums is not a table"),
    ("options", [], "not a prepared work directory"),
    ("splits.train", "x", "not a prepared work directory"),
    ("options.box", "x", "recorded box settings are a str"),
    ("options.box", {"score_thr": "high"}, "recorded box settings are invalid"),
    ("options.box", {"colour": 1}, "do not fit this statevad version"),
])
def test_work_manifest_fields_of_the_wrong_type(path: str, value: object, needle: str, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    work = make_work(tmp_path / "work")
    m = json.loads((work / "manifest.json").read_text())
    _set_entry(m, path, value)
    (work / "manifest.json").write_text(json.dumps(m))
    _fails(["train", "--work", str(work), "--model-size", "tiny", "--epochs", "1", "--device", "cpu",
            "--quiet"], capsys, needle)
    assert not (work / "model.pt").exists()


@pytest.mark.parametrize("content, needle", [
    ([1, 2], "entry 0 is not a clip"),
    ([{"name": 1, "n_frames": 4, "start": 0}], "entry 0 is not a clip"),
    ([{"name": "00", "n_frames": "4", "start": 0}], "entry 0 is not a clip"),
    ([{"name": "00", "n_frames": 4, "start": 0}, {"name": "01", "n_frames": 4, "start": 9}], "starts at"),
    ([{"name": "00", "n_frames": 4, "start": 0}], "the clips hold 4 frames"),
    ({"name": "00"}, "is not a list of clips"),
])
def test_frames_json_entries_of_the_wrong_type(content: object, needle: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    work = make_work(tmp_path / "work")
    (work / "train" / "frames.json").write_text(json.dumps(content))
    _fails(["train", "--work", str(work), "--model-size", "tiny", "--epochs", "1", "--device", "cpu",
            "--quiet"], capsys, "frames.json", needle)


def test_model_file_work_manifest_of_the_wrong_type(trained: tuple[Path, Path], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from statevad.checkpoint import content_sha256

    work, model = trained
    for field, value, needle in (("work_manifest", "x", "field 'work_manifest' is a str"),
                                 ("stats", [1.0], "field 'stats' is a list"),
                                 ("work_manifest", {"options": 3}, "work_manifest.options is a int")):
        data = torch.load(model, weights_only=True)
        data[field] = value
        data["content_sha256"] = content_sha256(data)  # consistently re-sealed: the type checks catch it
        bad = tmp_path / "typed.pt"
        torch.save(data, bad)
        _fails(["test", "--work", str(work), "--model", str(bad), "--device", "cpu", "--quiet", "--out",
                str(tmp_path / "r")], capsys, "typed.pt", needle)


# ------------------------------------------------------------------------------------- other files
@pytest.mark.parametrize("content", [b"", b"\x00" * 10, b"PK\x03\x04 not really a zip"])
def test_import_original_of_an_empty_or_foreign_file(content: bytes, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = tmp_path / "orig.pt"
    ckpt.write_bytes(content)
    _fails(["import-original", str(ckpt), "--out", str(tmp_path / "m.pt")], capsys, "orig.pt",
           "empty" if not content else "not a tensor-only")
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_reference_boxes_with_nan_or_inf_are_refused(value: float, tmp_path: Path) -> None:
    from statevad.errors import UserError

    boxes = np.array([[1, 2, 10, 20], [3, 4, 5, 6]], np.float32)
    boxes[1, 2] = value
    path = tmp_path / "boxes_reference_test.npz"
    np.savez(path, boxes=boxes, offsets=np.array([0, 1, 2], np.int64))
    with pytest.raises(UserError, match="frame 1 hold NaN or inf"):
        load_reference_boxes(path, 2)


# ------------------------------------------------- issue 19: calibrate, --false-alarms-per-hour, info MODEL
@pytest.mark.parametrize("rate", ["nan", "-1", "0", "inf", "-inf", "1e300"])
def test_calibrate_with_a_nonsense_rate(rate: str, trained: tuple[Path, Path],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    work, model = trained
    _fails(["calibrate", str(model), str(work), f"--false-alarms-per-hour={rate}", "--quiet"], capsys,
           "--false-alarms-per-hour", "> 0")


@pytest.mark.parametrize("content, needle", [(None, "does not exist"), (b"", "empty"),
                                             (b"garbage, not a model", "not a statevad model file"),
                                             (b"PK\x03\x04 half a zip", "not a statevad model file")])
def test_calibrate_and_info_with_a_missing_or_corrupt_model(content: bytes | None, needle: str,
                                                            trained: tuple[Path, Path], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "model.pt"
    if content is not None:
        bad.write_bytes(content)
    _fails(["calibrate", str(bad), str(trained[0]), "--quiet"], capsys, "model.pt", needle)
    _fails(["info", str(bad)], capsys, "model.pt", needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if content is None else ["model.pt"])


@pytest.mark.parametrize("kind, needle", [("empty video", "empty"), ("empty folder", "empty.d"),
                                          ("missing", "no such file"), ("text as video", "not.mp4")])
def test_calibrate_on_empty_or_unreadable_footage(kind: str, needle: str, trained: tuple[Path, Path],
                                                  tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    footage = {"empty video": tmp_path / "empty.mp4", "empty folder": tmp_path / "empty.d",
               "missing": tmp_path / "gone.mp4", "text as video": tmp_path / "not.mp4"}[kind]
    if kind == "empty video":
        footage.write_bytes(b"")
    elif kind == "empty folder":
        footage.mkdir()
    elif kind == "text as video":
        footage.write_text("not a video\n")
    model = trained[1]
    before = model.read_bytes()
    _fails(["calibrate", str(model), str(footage), "--quiet"], capsys, needle)
    assert model.read_bytes() == before


def test_calibrate_on_footage_shorter_than_a_cube(trained: tuple[Path, Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    _fails(["calibrate", str(trained[1]), str(_video(tmp_path / "two.avi", 2)), "--quiet", "--out",
            str(tmp_path / "c.pt")], capsys, "nothing to calibrate")
    assert not (tmp_path / "c.pt").exists()


@pytest.mark.parametrize("flags, needle", [
    (["--fps", "0"], "--fps"), (["--fps", "nan"], "--fps"), (["--clips", "99"], "clips 99"),
    (["--border-min-size", "-3"], "--border-min-size"), (["--border-min-size", "nan"], "--border-min-size"),
    (["--out", "/dev/null/x.pt"], "--out"),
])
def test_calibrate_bad_options(flags: list[str], needle: str, trained: tuple[Path, Path],
                               capsys: pytest.CaptureFixture[str]) -> None:
    work, model = trained
    _fails(["calibrate", str(model), str(work), "--quiet", *flags], capsys, needle)


def test_calibrate_on_a_test_split_with_anomalies_warns(trained: tuple[Path, Path], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    work, model = trained
    out = tmp_path / "c.pt"
    assert main(["calibrate", str(model), str(work), "--split", "test", "--out", str(out), "--quiet"]) == 0
    assert "anomalous frames" in capsys.readouterr().err and out.is_file()


@pytest.mark.parametrize("flags, needle", [
    (["--false-alarms-per-hour", "nan"], "> 0"), (["--false-alarms-per-hour", "-2"], "> 0"),
    (["--false-alarms-per-hour", "0"], "> 0"), (["--false-alarms-per-hour", "inf"], "> 0"),
    (["--border-min-size", "-1"], "--border-min-size"), (["--border-min-size", "inf"], "--border-min-size"),
    (["--threshold", "5", "--false-alarms-per-hour", "1"], "either --threshold or"),
])
def test_score_bad_alarm_options(flags: list[str], needle: str, trained: tuple[Path, Path], tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    video = _video(tmp_path / "v.avi", 12)
    _fails(["score", str(video), "--model", str(trained[1]), "--out", str(tmp_path / "o"), "--quiet",
            *flags], capsys, needle)
    assert not (tmp_path / "o").exists()


def test_score_with_a_rate_needs_a_distribution(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from helpers import tiny_model

    _fails(["score", str(_video(tmp_path / "v.avi", 12)), "--model", str(tiny_model(tmp_path / "m.pt")),
            "--out", str(tmp_path / "o"), "--false-alarms-per-hour", "2", "--quiet"], capsys,
           "statevad calibrate")


@pytest.mark.parametrize("field, value, needle", [
    ("calibration", {"source": "calibration"}, "calibration.footage"),
    ("score_distribution", "not a table", "score_distribution"),
    ("card", ["a", "list"], "card"),
])
def test_model_file_with_a_malformed_distribution_or_card(field: str, value: object, needle: str,
                                                          trained: tuple[Path, Path], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Resealed (checksums recomputed) so that the field check itself is what refuses it."""
    from statevad.checkpoint import _sealed

    data = torch.load(trained[1], weights_only=True)
    data[field] = value
    bad = tmp_path / "m.pt"
    torch.save(_sealed(data), bad)
    _fails(["info", str(bad)], capsys, needle)
    _fails(["calibrate", str(bad), str(trained[0]), "--quiet"], capsys, needle)
