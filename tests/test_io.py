"""Frame sources (statevad.io): conventions, natural order, strict vs lenient failures, bit-exact Ped2."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statevad.cli import main
from statevad.errors import UserError
from statevad.io import (
    FolderSource,
    LiveSource,
    VideoFileSource,
    natural_key,
    open_source,
    read_frames,
)


def _noise(n: int, h: int = 24, w: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def _write_video(path: Path, frames: np.ndarray, fourcc: str = "FFV1") -> Path:
    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10.0, (w, h))
    assert writer.isOpened(), f"OpenCV cannot write {fourcc} to {path.suffix}"
    for f in frames:
        writer.write(f)
    writer.release()
    return path


def _write_folder(folder: Path, frames: np.ndarray, names: list[str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    names = names or [f"{i}.png" for i in range(len(frames))]
    for name, f in zip(names, frames, strict=True):
        assert cv2.imwrite(str(folder / name), f)
    return folder


# ------------------------------------------------------------------------------------- natural order
def test_natural_key_orders_numbers_by_value() -> None:
    names = ["10.jpg", "2.jpg", "1.jpg", "frame_100.png", "frame_9.png", "Test010", "Test002"]
    assert sorted(names, key=natural_key) == [
        "1.jpg", "2.jpg", "10.jpg", "frame_9.png", "frame_100.png", "Test002", "Test010"]


def test_natural_key_handles_any_text_and_breaks_ties() -> None:
    # "²" is str.isdigit() but not a number for int(): it once crashed the key
    assert sorted(["b²", "a1²", "1²"], key=natural_key) == ["1²", "a1²", "b²"]
    # equal numbers / case: a fixed order, whatever order the file system lists them in
    assert sorted(["1.jpg", "01.jpg"], key=natural_key) == sorted(["01.jpg", "1.jpg"], key=natural_key)
    assert sorted(["frame1", "frame"], key=natural_key) == ["frame", "frame1"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 10**9), min_size=1, max_size=12, unique=True),
       st.text("abcXYZ_-", max_size=4), st.sampled_from([".jpg", ".png", ".tif", ""]))
def test_natural_key_sorts_numbered_names_by_value(numbers: list[int], prefix: str, ext: str) -> None:
    names = [f"{prefix}{n}{ext}" for n in numbers]
    assert sorted(names, key=natural_key) == [f"{prefix}{n}{ext}" for n in sorted(numbers)]


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=12), st.text(max_size=12))
def test_natural_key_is_a_total_order_on_any_names(a: str, b: str) -> None:
    ka, kb = natural_key(a), natural_key(b)  # never raises, whatever the characters
    assert (ka == kb) == (a == b)


def test_folder_is_read_in_natural_order(tmp_path: Path) -> None:
    frames = _noise(11)
    # frame i is written as "i.png" (unpadded): lexicographic order would put 10.png before 2.png
    folder = _write_folder(tmp_path / "clip", frames)
    (folder / ".DS_Store").write_bytes(b"junk")  # hidden files are ignored
    (folder / "sub").mkdir()  # so are sub-folders
    got = read_frames(folder)
    np.testing.assert_array_equal(got, frames)


# ------------------------------------------------------------------------------------- conventions
def test_video_roundtrip_bgr_uint8_and_header(tmp_path: Path) -> None:
    frames = _noise(7)
    path = _write_video(tmp_path / "v.mkv", frames)
    with open_source(path) as src:
        assert isinstance(src, VideoFileSource)
        assert (src.name, src.n_frames, src.size, src.fps) == ("v", 7, (24, 32), 10.0)
        got = np.stack(list(src))
    assert got.dtype == np.uint8 and got.shape == (7, 24, 32, 3)
    np.testing.assert_array_equal(got, frames)  # FFV1 is lossless and keeps the BGR order
    # a file source can be iterated again
    assert len(list(src)) == 7
    assert read_frames(path, max_frames=3).shape == (3, 24, 32, 3)


def test_gray_images_become_three_equal_channels(tmp_path: Path) -> None:
    gray = _noise(3)[..., 0]
    folder = tmp_path / "gray"
    folder.mkdir()
    for i, g in enumerate(gray):
        cv2.imwrite(str(folder / f"{i:03d}.tif"), g)
    got = read_frames(folder)
    assert got.shape == (3, 24, 32, 3)
    for c in range(3):
        np.testing.assert_array_equal(got[..., c], gray)


def test_gray_png_folder_gives_three_equal_channels(tmp_path: Path) -> None:
    gray = _noise(2)[..., 0]
    folder = tmp_path / "png"
    folder.mkdir()
    cv2.imwrite(str(folder / "0.png"), gray[0])
    cv2.imwrite(str(folder / "1.png"), gray[1].astype(np.uint16) * 257)  # 16-bit gray PNG: scaled to 8 bit
    got = read_frames(folder)
    assert got.dtype == np.uint8 and got.shape == (2, 24, 32, 3)
    assert (got == got[..., :1]).all()
    np.testing.assert_array_equal(got[..., 0], gray)


def test_raw_stream_without_frame_count_is_readable(tmp_path: Path) -> None:
    """A raw MJPEG stream declares no count (OpenCV reports a negative number); it is still a valid video."""
    path = _write_video(tmp_path / "raw.mjpg", _noise(6), "MJPG")
    with open_source(path) as src:
        assert src.n_frames is None
    assert read_frames(path).shape == (6, 24, 32, 3)


def test_folder_source_metadata(tmp_path: Path) -> None:
    folder = _write_folder(tmp_path / "f", _noise(4, 10, 20))
    src = open_source(str(folder))
    assert isinstance(src, FolderSource)
    assert (src.name, src.n_frames, src.size, src.fps) == ("f", 4, (10, 20), None)


# ------------------------------------------------------------------------------------- bad input
def test_missing_path_and_single_image(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such file or folder"):
        open_source(tmp_path / "nope.mp4")
    img = tmp_path / "one.png"
    cv2.imwrite(str(img), _noise(1)[0])
    with pytest.raises(UserError, match="single image"):
        open_source(img)


@pytest.mark.parametrize("content", [b"", b"this is not a video at all\n" * 50])
def test_unreadable_video_names_the_path(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(content)
    for strict in (True, False):  # an input that never opens is an error in both modes
        with pytest.raises(UserError, match="bad.mp4"):
            open_source(bad, strict=strict)


@pytest.mark.parametrize(("ext", "fourcc"), [(".mkv", "FFV1"), (".avi", "MJPG")])
def test_truncated_video_strict_raises_lenient_stops(tmp_path: Path, ext: str, fourcc: str,
                                                     capfd: pytest.CaptureFixture[str]) -> None:
    full = _write_video(tmp_path / f"full{ext}", _noise(20, 48, 64), fourcc)
    cut = tmp_path / f"cut{ext}"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"cut.*ends after \d+ of the 20 frames"):
        read_frames(cut)
    capfd.readouterr()
    got = read_frames(cut, strict=False)
    assert 0 < len(got) < 20
    err = capfd.readouterr().err
    assert "warning" in err and "cut" in err
    if fourcc == "FFV1":  # lossless: the good frames are exactly the first frames of the clip
        np.testing.assert_array_equal(got, _noise(20, 48, 64)[: len(got)])
    with open_source(cut, strict=False) as src:  # plain iteration stops too, without an exception
        assert len(list(src)) == len(got)


def test_non_image_file_in_frame_folder(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    folder = _write_folder(tmp_path / "clip", _noise(5), [f"{i:03d}.png" for i in range(5)])
    (folder / "003.txt").write_text("notes")
    with pytest.raises(UserError, match=r"003\.txt.*not an image"):
        open_source(folder)
    assert len(read_frames(folder, strict=False)) == 4  # lenient: stops at the odd file (after 003.png)


def test_corrupt_image_in_frame_folder(tmp_path: Path) -> None:
    folder = _write_folder(tmp_path / "clip", _noise(4), [f"{i:03d}.png" for i in range(4)])
    (folder / "002.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(UserError, match=r"002\.png.*unreadable"):
        read_frames(folder)
    assert len(read_frames(folder, strict=False)) == 2


def test_mixed_frame_sizes(tmp_path: Path) -> None:
    folder = _write_folder(tmp_path / "clip", _noise(3), ["0.png", "1.png", "2.png"])
    cv2.imwrite(str(folder / "3.png"), _noise(1, 30, 32)[0])
    with pytest.raises(UserError, match=r"3\.png.*frame 3 is 32x30.*32x24"):
        read_frames(folder)
    assert len(read_frames(folder, strict=False)) == 3


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no image files"):
        open_source(tmp_path / "empty")


def test_camera_and_url_specs_are_live_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    """No camera here: check the dispatch (and that a closed capture is a clear UserError)."""
    opened: list[object] = []

    class FakeCap:
        def __init__(self, spec: object) -> None:
            opened.append(spec)
            self.left = 2

        def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
            return opened[-1] != 7

        def get(self, prop: int) -> float:
            return {cv2.CAP_PROP_FPS: 25.0, cv2.CAP_PROP_FRAME_HEIGHT: 4.0,
                    cv2.CAP_PROP_FRAME_WIDTH: 6.0}.get(prop, 0.0)

        def read(self) -> tuple[bool, np.ndarray | None]:
            self.left -= 1
            return (True, np.zeros((4, 6, 3), np.uint8)) if self.left >= 0 else (False, None)

        def release(self) -> None:
            pass

    monkeypatch.setattr(cv2, "VideoCapture", FakeCap)
    cam = open_source("0", strict=False)
    assert isinstance(cam, LiveSource) and cam.n_frames is None and cam.fps == 25.0
    assert len(list(cam)) == 2  # ends cleanly when the stream does
    assert isinstance(open_source(3), LiveSource)
    assert isinstance(open_source("rtsp://cam.local/stream"), LiveSource)
    assert opened == [0, 3, "rtsp://cam.local/stream"]
    with pytest.raises(UserError, match="camera index 7"):
        open_source(7)


@pytest.mark.parametrize(("name", "content"), [("broken.avi", b"RIFF\x00\x00garbage" * 10),
                                              ("empty.mp4", b""), ("notes.mp4", b"plain text\n" * 50)])
def test_cli_info_bad_video_is_one_line_exit_2(tmp_path: Path, capfd: pytest.CaptureFixture[str],
                                               name: str, content: bytes) -> None:
    bad = tmp_path / name
    bad.write_bytes(content)
    _assert_cli_fails(["info", str(bad)], capfd, name)


def _assert_cli_fails(args: list[str], capfd: pytest.CaptureFixture[str], needle: str) -> None:
    capfd.readouterr()
    assert main(args) == 2
    err = capfd.readouterr().err.strip()
    assert err.count("\n") == 0 and needle in err and "Traceback" not in err, err


def test_cli_info_decodes_a_single_clip(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """The header of a half-cut file still declares every frame: ``info`` must decode to notice."""
    full = _write_video(tmp_path / "full.avi", _noise(30), "MJPG")
    data = full.read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: len(data) // 2])
    _assert_cli_fails(["info", str(tmp_path / "cut.avi")], capfd, "cut.avi")
    folder = _write_folder(tmp_path / "mixed", _noise(2), ["0.png", "1.png"])
    cv2.imwrite(str(folder / "2.png"), _noise(1, 30, 32)[0])
    _assert_cli_fails(["info", str(folder)], capfd, "2.png")
    (tmp_path / "mixed" / "2.png").unlink()
    (tmp_path / "mixed" / "readme.txt").write_text("x")
    _assert_cli_fails(["info", str(folder)], capfd, "readme.txt")
    assert main(["info", "--json", str(full)]) == 0
    info = json.loads(capfd.readouterr().out)
    assert (info["frames"], info["resolution"], info["fps"]) == (30, "32x24", 10.0)


# ------------------------------------------------------------------------------------- real data
@pytest.mark.slow
def test_ped2_videos_are_bit_exact(ped2_root: Path) -> None:
    """Every clip of ../shared/data/ped2 decodes to the manifest's gray sha256 (channel 0 of BGR)."""
    manifest = json.loads((ped2_root / "manifest.json").read_text())["clips"]
    assert len(manifest) == 28
    for key, entry in manifest.items():
        frames = read_frames(ped2_root / "video" / f"{key}.mkv")
        assert frames.shape == (entry["frames"], entry["h"], entry["w"], 3), key
        if key == "testing/01":
            assert frames.shape[0] == 180
            assert np.array_equal(frames[..., 0], frames[..., 2])  # gray video: equal channels
        gray = np.ascontiguousarray(frames[..., 0])
        assert hashlib.sha256(gray.tobytes()).hexdigest() == entry["sha256_gray_u8"], key
