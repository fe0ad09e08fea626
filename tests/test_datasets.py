"""Dataset layouts on tiny fake trees (exact folder structure, noise frames), ground truth and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.io import savemat

from statevad.cli import main
from statevad.datasets import describe, detect_layout, load_dataset
from statevad.errors import UserError

H, W = 12, 16


def _noise(n: int, seed: int = 0, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def _frames(folder: Path, n: int, fmt: str = "{:03d}.jpg", start: int = 0, gray: bool = False,
            seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(_noise(n, seed)):
        cv2.imwrite(str(folder / fmt.format(i + start)), f[..., 0] if gray else f)
    return folder


def _video(path: Path, n: int, fourcc: str = "MJPG", seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 25.0, (W, H))
    assert writer.isOpened()
    for f in _noise(n, seed):
        writer.write(f)
    writer.release()
    return path


def _cell(items: list[np.ndarray]) -> np.ndarray:
    cell = np.empty((1, len(items)), dtype=object)
    for i, item in enumerate(items):
        cell[0, i] = item
    return cell


def _fail_cli(args: list[str], capfd: pytest.CaptureFixture[str], *needles: str) -> None:
    """The CLI contract for bad input: exit 2, exactly one line on stderr, no traceback."""
    capfd.readouterr()
    assert main(args) == 2
    err = capfd.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


# --------------------------------------------------------------------------------------------- layouts
def test_ped2_video_layout(ped2_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ds = load_dataset(ped2_root)
    assert (ds.layout, ds.name) == ("ped2-video", "ped2")
    assert (len(ds.train), ds.n_frames("train"), len(ds.test), ds.n_frames("test")) == (16, 2550, 12, 2010)
    assert ds.test[1].start == 180 and ds.test[0].size == (240, 360)
    labels = ds.labels()
    assert labels is not None and labels.dtype == np.int8 and int(labels.sum()) == 1648
    assert labels[:60].sum() == 0 and labels[60:180].all()  # clip 01: anomalous from frame 61 (1-based)
    assert set(ds.reference_boxes) == {"train", "test"}
    masks = ds.test[0].pixel_masks()
    assert masks is not None and masks.shape == (180, 240, 360) and masks.dtype == bool
    np.testing.assert_array_equal(masks.any(axis=(1, 2)), ds.test[0].labels.astype(bool))
    capsys.readouterr()
    assert main(["info", str(ped2_root)]) == 0  # what `statevad info ../shared/data/ped2` prints
    out = capsys.readouterr().out
    for needle in ("ped2-video", "train: 16 clips, 2550 frames", "test: 12 clips, 2010 frames",
                   "1648 anomalous", "360x240"):
        assert needle in out
    assert main(["info", "--json", str(ped2_root)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["train"]["clips"], info["train"]["frames"]) == (16, 2550)
    test = info["test"]
    assert (test["clips"], test["frames"], test["anomalous_frames"]) == (12, 2010, 1648)
    assert info["resolution"] == ["360x240"] and info["test"]["pixel_masks"] is True
    assert describe(ped2_root, as_json=True) == 0 and json.loads(capsys.readouterr().out) == info


def test_ucsd_official_layout(tmp_path: Path) -> None:
    base = tmp_path / "UCSD_Anomaly_Dataset.v1p2" / "UCSDped2"
    for k, n in ((1, 5), (2, 4)):
        _frames(base / "Train" / f"Train{k:03d}", n, "{:03d}.tif", start=1, gray=True)
    for k, n in ((1, 6), (2, 7)):
        _frames(base / "Test" / f"Test{k:03d}", n, "{:03d}.tif", start=1, gray=True)
    gt = base / "Test" / "Test002_gt"  # masks for clip 2 only, as in Ped1
    gt.mkdir()
    for i in range(7):
        mask = np.zeros((H, W), np.uint8)
        if 2 <= i <= 4:
            mask[2:5, 3:7] = 255
        cv2.imwrite(str(gt / f"{i + 1:03d}.bmp"), mask)
    (base / "Test" / "UCSDped2.m").write_text(
        "TestVideoFile = {};\nTestVideoFile{end+1}.gt_frame = [2:3, 5:6];\n"
        "TestVideoFile{end+1}.gt_frame = [3:5];\n")
    (base / "Train" / "Train001" / ".DS_Store").write_bytes(b"x")
    for root in (base, base.parent):  # the UCSDped2 folder or the release folder holding one subset
        assert detect_layout(root) == "ucsd"
        ds = load_dataset(root)
        assert ds.name == "ped2"
        assert [c.name for c in ds.train] == ["Train001", "Train002"]
        assert [c.name for c in ds.test] == ["Test001", "Test002"]
        assert [c.start for c in ds.test] == [0, 6] and ds.n_frames("train") == 9
        np.testing.assert_array_equal(ds.test[0].labels, [0, 1, 1, 0, 1, 1])
        np.testing.assert_array_equal(ds.test[1].labels, [0, 0, 1, 1, 1, 0, 0])
        assert ds.test[0].pixel_masks() is None
        masks = ds.test[1].pixel_masks()
        assert masks is not None and masks.shape == (7, H, W)
        np.testing.assert_array_equal(masks.any(axis=(1, 2)), ds.test[1].labels.astype(bool))
    _frames(base.parent / "UCSDped1" / "Train" / "Train001", 2, "{:03d}.tif", start=1)
    with pytest.raises(UserError, match="UCSDped1, UCSDped2; give one of them"):
        load_dataset(base.parent)
    frames = ds.train[0].read()
    assert frames.shape == (5, H, W, 3) and np.array_equal(frames[..., 0], frames[..., 1])  # gray tif -> BGR


def test_frames_release_with_mat_labels(tmp_path: Path) -> None:
    root = tmp_path / "ped2"
    for k in (1, 2):
        _frames(root / "training" / "frames" / f"{k:02d}", 4)
    _frames(root / "testing" / "frames" / "01", 5)
    _frames(root / "testing" / "frames" / "02", 3)
    # ano_pred's ped2.mat: variable gt, per clip a 2xK array of 1-based inclusive [start; end]
    savemat(root / "ped2.mat", {"gt": _cell([np.array([[2], [3]]), np.array([[1, 3], [1, 3]])])})
    ds = load_dataset(root)
    assert (ds.layout, ds.name) == ("frames", "ped2")
    np.testing.assert_array_equal(ds.labels(), [0, 1, 1, 0, 0, 1, 0, 1])
    assert ds.labels("train") is None


def test_frames_release_with_npy_masks_and_unpadded_names(tmp_path: Path) -> None:
    root = tmp_path / "myset"
    _frames(root / "training" / "frames" / "1", 3, "{}.jpg")
    for k in (2, 10):  # natural order: clip 2 before clip 10
        _frames(root / "testing" / "frames" / str(k), 12, "{}.jpg", seed=k)
    mask_dir = root / "testing" / "test_frame_mask"
    mask_dir.mkdir(parents=True)
    np.save(mask_dir / "2.npy", np.r_[np.zeros(6), np.ones(6)].astype(np.int64))
    ds = load_dataset(root)
    assert [c.name for c in ds.test] == ["2", "10"] and ds.test[1].start == 12
    labels = ds.labels()
    assert list(labels[:12]) == [0] * 6 + [1] * 6 and (labels[12:] == -1).all()  # clip 10 has no GT
    # frames within a clip are read in natural order (2.jpg before 10.jpg)
    np.testing.assert_array_equal(ds.test[1].read()[10], cv2.imread(str(ds.test[1].source / "10.jpg")))


def test_avenue_layout(tmp_path: Path) -> None:
    root = tmp_path / "Avenue Dataset"
    for k in (1, 2):
        _video(root / "training_videos" / f"{k:02d}.avi", 4, seed=k)
        _video(root / "testing_videos" / f"{k:02d}.avi", 5, seed=10 + k)
    gt = root / "ground_truth_demo" / "testing_label_mask"
    gt.mkdir(parents=True)
    masks = np.zeros((5, H, W), np.uint8)
    masks[3, 1:3, 1:3] = 1
    savemat(gt / "1_label.mat", {"volLabel": _cell(list(masks))})
    savemat(gt / "2_label.mat", {"volLabel": _cell(list(np.zeros((5, H, W), np.uint8)))})
    ds = load_dataset(root)
    assert (ds.layout, ds.name) == ("avenue", "avenue")
    assert [c.n_frames for c in ds.train + ds.test] == [4, 4, 5, 5]
    np.testing.assert_array_equal(ds.labels(), [0, 0, 0, 1, 0] + [0] * 5)
    pm = ds.test[0].pixel_masks()
    assert pm is not None and pm.shape == (5, H, W) and pm[3].sum() == 4
    assert ds.test[0].read().shape == (5, H, W, 3)


def test_avenue_partial_download_is_matched_by_clip_number(tmp_path: Path) -> None:
    """Test videos 08, 17 and 21 only: each gets N_label.mat of its own number, not of its position."""
    root = tmp_path / "avenue"
    _video(root / "training_videos" / "01.avi", 4, seed=1)
    gt = root / "ground_truth_demo" / "testing_label_mask"
    gt.mkdir(parents=True)
    lengths = {8: 5, 17: 6, 21: 4}
    for k in range(1, 22):
        n = lengths.get(k, 9)  # the other clips' labels (absent videos) have other lengths
        masks = np.zeros((n, H, W), np.uint8)
        masks[min(k % n, n - 1), 0, 0] = 1
        savemat(gt / f"{k}_label.mat", {"volLabel": _cell(list(masks))})
    for k, n in lengths.items():
        _video(root / "testing_videos" / f"{k:02d}.avi", n, seed=k)
    ds = load_dataset(root)
    assert [c.name for c in ds.test] == ["08", "17", "21"]
    for c, k in zip(ds.test, lengths, strict=True):
        expect = np.zeros(lengths[k], np.uint8)
        expect[k % lengths[k]] = 1
        np.testing.assert_array_equal(c.labels, expect)


@pytest.mark.parametrize("text, ok", [
    ("\ufeffclip,start,end\na,1,2\n", True),  # a UTF-8 byte-order mark (Excel)
    ("clip,start,end\na,1\n", False),  # a short row
    ("clip,start,end\na,1,2,9\n", False),  # a long row
    ("clip,start,end\na," + "1" * 200_000 + ",2\n", False),  # a field over csv's 128 KB limit
    ("clip,start,end\na,1e400,2\n", False),
])
def test_generic_labels_csv_hostile(tmp_path: Path, text: str, ok: bool) -> None:
    gen = tmp_path / "gen"
    _frames(gen / "test" / "a", 4)
    (gen / "labels.csv").write_bytes(text.encode("utf-8"))
    if ok:
        np.testing.assert_array_equal(load_dataset(gen).labels(), [0, 1, 1, 0])
    else:
        with pytest.raises(UserError, match=r"labels\.csv") as exc:
            load_dataset(gen)
        assert len(str(exc.value)) < 500


def test_shanghaitech_layout(tmp_path: Path) -> None:
    root = tmp_path / "shanghaitech"
    _video(root / "training" / "videos" / "01_001.avi", 4)
    _video(root / "training" / "videos" / "02_001.avi", 3)
    for name, n in (("01_0014", 4), ("12_0148", 3)):
        _frames(root / "testing" / "frames" / name, n)
    (root / "testing" / "test_frame_mask").mkdir(parents=True)
    np.save(root / "testing" / "test_frame_mask" / "01_0014.npy", np.array([0, 1, 1, 0]))
    np.save(root / "testing" / "test_frame_mask" / "12_0148.npy", np.array([0, 0, 0]))
    (root / "testing" / "test_pixel_mask").mkdir()
    np.save(root / "testing" / "test_pixel_mask" / "01_0014.npy", np.zeros((4, H, W), np.uint8))
    ds = load_dataset(root)
    assert (ds.layout, ds.name) == ("shanghaitech", "shanghaitech")
    assert [(c.name, c.scene) for c in ds.train] == [("01_001", "01"), ("02_001", "02")]
    assert [(c.name, c.scene, c.start) for c in ds.test] == [("01_0014", "01", 0), ("12_0148", "12", 4)]
    np.testing.assert_array_equal(ds.labels(), [0, 1, 1, 0, 0, 0, 0])
    assert ds.test[0].pixel_masks().shape == (4, H, W) and ds.test[1].pixel_masks() is None


def test_shanghaitech_frames_release_gets_scenes(tmp_path: Path) -> None:
    root = tmp_path / "data"
    _frames(root / "training" / "frames" / "03_001", 2)
    _frames(root / "testing" / "frames" / "03_0031", 2)
    ds = load_dataset(root)
    assert (ds.layout, ds.name, ds.test[0].scene, ds.train[0].scene) == ("frames", "shanghaitech", "03", "03")


def test_generic_layout_csv_labels_mixed_sources(tmp_path: Path) -> None:
    root = tmp_path / "footage"
    _video(root / "train" / "cam_morning.avi", 4)
    _frames(root / "train" / "cam_evening", 3, "img{}.png")
    _video(root / "test" / "a.avi", 6)
    _frames(root / "test" / "b", 5, "{}.png")
    (root / "labels.csv").write_text("clip,start,end\na,1,2\na,5,5\n")
    ds = load_dataset(root)
    assert (ds.layout, ds.name) == ("generic", "generic")
    assert [c.name for c in ds.train] == ["cam_evening", "cam_morning"]
    np.testing.assert_array_equal(ds.test[0].labels, [0, 1, 1, 0, 0, 1])
    assert ds.test[1].labels is None  # not listed: unknown
    np.testing.assert_array_equal(ds.labels(), [0, 1, 1, 0, 0, 1] + [-1] * 5)


def test_generic_layout_json_labels_and_preset_from_root_name(tmp_path: Path) -> None:
    root = tmp_path / "avenue_experiments" / "shop_cam"  # a parent's name must not pick the Avenue preset
    _frames(root / "train" / "10", 2, "{}.png")
    _frames(root / "train" / "2", 3, "{}.png")
    _video(root / "test" / "day10.avi", 4)
    _frames(root / "test" / "day2", 5, "{}.png")
    (root / "test" / "labels.json").write_text(json.dumps({"day2": [[0, 0], [3, 4]], "day10": []}))
    ds = load_dataset(root)
    assert (ds.layout, ds.name) == ("generic", "generic")
    assert [(c.name, c.start) for c in ds.train] == [("2", 0), ("10", 3)]
    assert [(c.name, c.start, c.source.suffix) for c in ds.test] == [("day2", 0, ""), ("day10", 5, ".avi")]
    np.testing.assert_array_equal(ds.labels(), [1, 0, 0, 1, 1] + [0] * 4)
    assert {c.scene for c in ds.train + ds.test} == {"0"}
    assert all(c.pixel_masks() is None for c in ds.test)


def test_reference_boxes_are_found_in_any_layout(tmp_path: Path) -> None:
    root = tmp_path / "g"
    _frames(root / "train" / "x", 2)
    np.savez(root / "boxes_reference_train.npz", boxes=np.zeros((0, 4), np.float32),
             offsets=np.zeros(3, np.int64))
    assert load_dataset(root).reference_boxes == {"train": root / "boxes_reference_train.npz"}


# --------------------------------------------------------------------------------------------- bad input
def test_missing_empty_and_unknown_roots(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_dataset(tmp_path / "nope")
    _fail_cli(["info", str(tmp_path / "nope")], capfd, "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="empty"):
        load_dataset(tmp_path / "empty")
    _fail_cli(["info", str(tmp_path / "empty")], capfd, "empty")
    (tmp_path / "odd" / "stuff").mkdir(parents=True)
    (tmp_path / "odd" / "notes.txt").write_text("hi")
    with pytest.raises(UserError, match="unknown dataset layout.*training_videos.*train/"):
        load_dataset(tmp_path / "odd")
    _fail_cli(["info", str(tmp_path / "odd")], capfd, "unknown dataset layout")


@pytest.mark.parametrize("content", [b"", b"plain text, not a video\n" * 40])
def test_unreadable_video_in_dataset(tmp_path: Path, content: bytes,
                                     capfd: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "g"
    _frames(root / "train" / "ok", 2)
    (root / "test").mkdir()
    (root / "test" / "bad.mp4").write_bytes(content)
    with pytest.raises(UserError, match="bad.mp4"):
        load_dataset(root)
    _fail_cli(["info", str(root)], capfd, "bad.mp4")
    _fail_cli(["info", str(root / "test" / "bad.mp4")], capfd, "bad.mp4")


def test_truncated_video_is_caught_on_read(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "g"
    full = _video(tmp_path / "full.avi", 30)
    (root / "train").mkdir(parents=True)
    data = full.read_bytes()
    (root / "train" / "cut.avi").write_bytes(data[: len(data) // 2])
    ds = load_dataset(root)  # the header still declares 30 frames
    clip = ds.train[0]
    assert clip.n_frames == 30
    with pytest.raises(UserError, match=r"cut\.avi.*ends after \d+ of the 30 frames"):
        clip.read()
    with pytest.raises(UserError, match="cut.avi"):
        list(clip.iter_frames())


def test_mixed_sizes_and_non_image_in_clip(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "g"
    clip_dir = _frames(root / "train" / "c1", 3, "{:03d}.png")
    cv2.imwrite(str(clip_dir / "003.png"), _noise(1, h=H + 2)[0])
    ds = load_dataset(root)
    with pytest.raises(UserError, match=r"003\.png.*frame 3"):
        ds.train[0].read()
    _frames(root / "test" / "c2", 2, "{:03d}.png")
    (root / "test" / "c2" / "Thumbs.db").write_bytes(b"\0\1")
    with pytest.raises(UserError, match=r"Thumbs\.db.*not an image"):
        load_dataset(root)
    _fail_cli(["info", str(root)], capfd, "Thumbs.db")


def test_ground_truth_length_mismatch(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "frames_ds"
    _frames(root / "testing" / "frames" / "01", 4)
    (root / "testing" / "test_frame_mask").mkdir(parents=True)
    np.save(root / "testing" / "test_frame_mask" / "01.npy", np.zeros(5))
    with pytest.raises(UserError, match=r"01\.npy.*5 frames.*has 4"):
        load_dataset(root)
    _fail_cli(["info", str(root)], capfd, "01.npy")

    gen = tmp_path / "gen"
    _frames(gen / "test" / "a", 4)
    (gen / "labels.json").write_text(json.dumps({"a": [[2, 4]]}))  # 0-based inclusive: 4 is past the end
    with pytest.raises(UserError, match="labels.json"):
        load_dataset(gen)
    (gen / "labels.json").write_text(json.dumps({"zz": [[0, 1]]}))
    with pytest.raises(UserError, match=r"labels\.json.*zz"):
        load_dataset(gen)


def test_interval_files_outside_the_clip(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    base = tmp_path / "UCSDped2"
    _frames(base / "Train" / "Train001", 3, "{:03d}.tif", start=1, gray=True)
    _frames(base / "Test" / "Test001", 4, "{:03d}.tif", start=1, gray=True)
    m_file = base / "Test" / "UCSDped2.m"
    m_file.write_text("TestVideoFile{end+1}.gt_frame = [3:5];\n")  # 1-based: frame 5 of a 4-frame clip
    with pytest.raises(UserError, match=r"UCSDped2\.m.*\[3, 5\] of clip Test001.*4 frames"):
        load_dataset(base)
    _fail_cli(["info", str(base)], capfd, "UCSDped2.m", "Test001")
    m_file.write_text("TestVideoFile{end+1}.gt_frame = [3:4];\nTestVideoFile{end+1}.gt_frame = [1:2];\n")
    # a partial download (Test001 only of two clips): matched by the clip's number, not refused
    np.testing.assert_array_equal(load_dataset(base).labels(), [0, 0, 1, 1])
    (base / "Test" / "Test001").rename(base / "Test" / "Test002")
    np.testing.assert_array_equal(load_dataset(base).labels(), [1, 1, 0, 0])
    (base / "Test" / "Test002").rename(base / "Test" / "Test005")  # no entry 5: unnumbered, counts differ
    with pytest.raises(UserError, match=r"UCSDped2\.m.*2 clips but 1 test clips"):
        load_dataset(base)
    (base / "Test" / "Test005").rename(base / "Test" / "Test001")
    m_file.write_text("TestVideoFile{end+1}.gt_frame = [3:4];\n")
    np.testing.assert_array_equal(load_dataset(base).labels(), [0, 0, 1, 1])

    root = tmp_path / "frames_ds"
    _frames(root / "testing" / "frames" / "01", 3)
    savemat(root / "ped2.mat", {"gt": _cell([np.array([[0], [2]])])})  # 0 is not a 1-based frame
    with pytest.raises(UserError, match=r"ped2\.mat.*\[0, 2\] of clip 01"):
        load_dataset(root)

    gen = tmp_path / "gen"
    _frames(gen / "test" / "a", 4)
    (gen / "labels.json").write_text(json.dumps({"a": [[2, 4]]}))
    _fail_cli(["info", str(gen)], capfd, "labels.json", "[2, 4]")


def test_pixel_masks_that_do_not_fit_the_clip(tmp_path: Path) -> None:
    root = tmp_path / "sht"
    _video(root / "training" / "videos" / "01_001.avi", 2)
    _frames(root / "testing" / "frames" / "01_0014", 3)
    (root / "testing" / "test_pixel_mask").mkdir(parents=True)
    np.save(root / "testing" / "test_pixel_mask" / "01_0014.npy", np.zeros((3, H, W + 1), np.uint8))
    with pytest.raises(UserError, match=r"pixel masks of clip 01_0014.*17x12.*16x12"):
        load_dataset(root).test[0].pixel_masks()
    np.save(root / "testing" / "test_pixel_mask" / "01_0014.npy", np.zeros((2, H, W), np.uint8))
    with pytest.raises(UserError, match=r"01_0014.*\(3, H, W\)"):
        load_dataset(root).test[0].pixel_masks()

    p2 = tmp_path / "p2"
    _video(p2 / "video" / "testing" / "01.avi", 2)
    (p2 / "gt").mkdir()
    np.savez(p2 / "gt" / "pixel_masks_test_packbits.npz", **{"07": np.zeros((2, H, 2), np.uint8)})
    with pytest.raises(UserError, match=r"pixel_masks_test_packbits\.npz.*clip 01"):
        load_dataset(p2).test[0].pixel_masks()


def test_ped2_video_label_length_mismatch(tmp_path: Path) -> None:
    root = tmp_path / "p"
    _video(root / "video" / "testing" / "01.avi", 5)
    (root / "gt").mkdir()
    np.save(root / "gt" / "frame_labels_test.npy", np.zeros(7, np.uint8))
    with pytest.raises(UserError, match=r"frame_labels_test\.npy.*7.*5"):
        load_dataset(root)


def test_info_on_single_sources(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    video = _video(tmp_path / "one.avi", 6)
    assert main(["info", str(video)]) == 0
    out = capsys.readouterr().out
    assert "frames: 6" in out and f"{W}x{H}" in out
    folder = _frames(tmp_path / "clip", 3, "{}.png")
    assert main(["info", "--json", str(folder)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["frames"] == 3 and info["resolution"] == f"{W}x{H}"


def test_clips_pickle_for_worker_processes(ped2_root):
    """`prepare --jobs N` sends clips to worker processes: mask loaders must not be closures."""
    import pickle

    from statevad.datasets import load_dataset

    clip = load_dataset(ped2_root).test[0]
    clone = pickle.loads(pickle.dumps(clip))
    assert clone.pixel_masks().shape == (clip.n_frames, 240, 360)
