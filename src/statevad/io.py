"""Frame sources: video files, frame folders, cameras and stream URLs behind one iterable interface.

Every source yields frames in the pipeline's single convention (docs/ARCHITECTURE.md): ``np.ndarray``
``uint8`` of shape ``(H, W, 3)`` in **BGR** order, exactly as OpenCV decodes; grayscale inputs are
replicated to three equal channels so that no later stage needs a special case.

Two failure policies, because the two callers want opposite things:

* ``strict=True`` (datasets, training, evaluation): any defect is a :class:`~statevad.errors.UserError`
  naming the path: a file that does not open, a video that ends before the frame count its header
  declares (truncated), a folder holding a non-image or unreadable file, frames of mixed sizes. A silently
  short clip would shift the global frame index and misalign every label after it.
* ``strict=False`` (live scoring): iteration stops cleanly at the first failure with one warning on
  stderr, so a dropped stream or a file that is still being written ends the run instead of crashing it.

Frame folders are listed in natural order (``2.jpg`` before ``10.jpg``); hidden files (``.DS_Store``,
macOS ``._001.tif`` twins) and sub-folders are ignored, any other non-image file is an error.
"""

from __future__ import annotations

import math
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2  # statevad/__init__.py has already silenced FFmpeg's own log lines (OPENCV_FFMPEG_LOGLEVEL)
import numpy as np

from statevad.errors import UserError

# Frame folders and many streams carry no frame rate; times (events, time_s) then assume this one.
DEFAULT_FPS = 25.0


def valid_fps(fps: object) -> float | None:
    """``fps`` as a float when it is a plausible frame rate (0.5 to 1000 frames/s), else None."""
    try:
        value = float(fps)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and 0.5 <= value <= 1000 else None


def checked_fps(fps: float | None) -> float | None:
    """A user's ``--fps``: None stays None (not given); an implausible rate is one clear error."""
    if fps is None:
        return None
    if valid_fps(fps) is None:
        raise UserError(f"--fps must be a frame rate between 0.5 and 1000 frames per second, got {fps!r}")
    return float(fps)


def fps_or_default(fps: object) -> float:
    """:func:`valid_fps`, or :data:`DEFAULT_FPS` when the rate is unknown or implausible."""
    return valid_fps(fps) or DEFAULT_FPS

VIDEO_EXTS: frozenset[str] = frozenset(
    {".mp4", ".avi", ".mkv", ".mov", ".mpg", ".mpeg", ".webm", ".m4v", ".wmv", ".flv", ".ts", ".mts",
     ".m2ts", ".3gp", ".ogv", ".mjpeg", ".mjpg", ".h264", ".264", ".y4m", ".asf", ".vob", ".dv"}
)
IMAGE_EXTS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"})
URL_SCHEMES: tuple[str, ...] = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://",
                                "rtp://", "srt://")

_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that orders embedded numbers by value, so unpadded frame names (``2.jpg``, ``10.jpg``) and
    clip names keep their temporal order; the original code's plain lexicographic sort breaks on them."""
    # re.split with one group alternates text and digit runs, so odd positions are the numbers (testing
    # str.isdigit instead would also accept "²", which int() rejects). The trailing (-1, name) only breaks
    # ties ("01" vs "1", "A" vs "a"), so the order never depends on the file system's listing order.
    parts = _DIGITS.split(name)
    key = tuple((0, int(p)) if i % 2 else (1, p.lower()) for i, p in enumerate(parts) if p != "")
    return (*key, (-1, name))


def is_url(spec: str) -> bool:
    return spec.lower().startswith(URL_SCHEMES)


def file_url_path(spec: str) -> Path | None:
    """The local path of a ``file://`` URL (``file:///a/b%20c.mp4`` -> ``/a/b c.mp4``), None for other specs.

    Only local files are accepted: ``file://localhost/...`` and ``file:///...``; another host is an error.
    """
    if not spec.lower().startswith("file:"):
        return None
    from urllib.parse import unquote, urlparse

    url = urlparse(spec)
    if url.netloc not in ("", "localhost"):
        raise UserError(f"{spec}: a file:// URL must name a file on this machine (file:///path/to/video.mp4)")
    return Path(unquote(url.path))


# A read that fails after waiting this long is a stalled stream, not its end (FFmpeg gives up on a silent
# network stream after its own read timeout, about 30 s).
STALL_S = 5.0


def list_images(folder: Path) -> list[Path]:
    """Visible files of ``folder`` in natural order (sub-folders and hidden files skipped)."""
    files = [p for p in folder.iterdir() if not p.name.startswith(".") and p.is_file()]
    return sorted(files, key=lambda p: natural_key(p.name))


def to_bgr(frame: np.ndarray) -> np.ndarray:
    """Bring any decoded image to uint8 HxWx3 BGR (gray replicated, alpha dropped, 16 bit scaled)."""
    if frame.dtype != np.uint8:
        frame = cv2.convertScaleAbs(frame, alpha=255.0 / max(float(np.iinfo(frame.dtype).max), 1.0)) \
            if np.issubdtype(frame.dtype, np.integer) else np.clip(frame * 255.0, 0, 255).astype(np.uint8)
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if frame.shape[2] == 1:
        return cv2.cvtColor(frame[..., 0], cv2.COLOR_GRAY2BGR)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    return frame


def _warn(msg: str) -> None:
    print(f"statevad: warning: {msg}", file=sys.stderr)


@contextmanager
def _quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's own log lines while probing files, so bad input gives exactly our one-line error."""
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is None:
        yield
        return
    previous = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        logging.setLogLevel(previous)


class FrameSource:
    """An iterable of BGR uint8 frames with what is known about them up front.

    ``n_frames`` comes from the container header or the folder listing (``None`` for live sources);
    ``size`` is ``(H, W)``; ``fps`` is ``None`` when unknown.
    """

    name: str
    fps: float | None
    n_frames: int | None
    size: tuple[int, int] | None
    strict: bool

    def __iter__(self) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the decoder; iterating again (file sources only) reopens it."""

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, n_frames={self.n_frames}, size={self.size}, "
                f"fps={self.fps})")

    def _fail(self, msg: str) -> None:
        """Strict: raise. Lenient: warn once; the caller then stops iterating."""
        if self.strict:
            raise UserError(msg)
        _warn(msg)

    def _check_size(self, frame: np.ndarray, index: int, where: str) -> bool:
        hw = (int(frame.shape[0]), int(frame.shape[1]))
        if self.size is None:
            self.size = hw
            return True
        if hw != self.size:
            self._fail(f"{where}: frame {index} is {hw[1]}x{hw[0]} but earlier frames are "
                       f"{self.size[1]}x{self.size[0]} (W x H); all frames of a clip must have one size")
            return False
        return True


class VideoFileSource(FrameSource):
    """A video file decoded by ``cv2.VideoCapture``; reopened for every iteration."""

    def __init__(self, path: Path, *, strict: bool = True) -> None:
        self.path = path
        self.name = path.stem
        self.strict = strict
        self._cap: cv2.VideoCapture | None = None
        if path.stat().st_size == 0:
            raise UserError(f"{path}: empty file (0 bytes); expected a video")
        cap = self._open()
        try:
            fps = float(cap.get(cv2.CAP_PROP_FPS))
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
            h, w = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        finally:
            cap.release()
        self.fps = fps if fps > 0 and np.isfinite(fps) else None
        # Raw streams (.mjpg, .h264) declare no count (OpenCV reports 0 or a huge negative number): they are
        # still valid, so the count stays unknown and iteration alone decides (no frame at all is an error).
        self.n_frames = count if count > 0 else None
        self.size = (h, w) if h > 0 and w > 0 else None

    def _open(self) -> cv2.VideoCapture:
        with _quiet_opencv():
            cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise UserError(f"{self.path}: cannot open as a video (corrupt, not a video, or an unsupported "
                            f"codec); expected a video file readable by OpenCV/FFmpeg")
        return cap

    def __iter__(self) -> Iterator[np.ndarray]:
        self.close()
        cap = self._open()
        self._cap = cap
        i = 0
        try:
            while True:
                with _quiet_opencv():
                    ok, frame = cap.read()
                if not ok or frame is None:
                    break
                frame = to_bgr(frame)
                if not self._check_size(frame, i, str(self.path)):
                    return
                yield frame
                i += 1
        finally:
            self.close()
        if self.n_frames is not None and i < self.n_frames:
            self._fail(f"{self.path}: video ends after {i} of the {self.n_frames} frames its header "
                       f"declares (truncated or corrupt file)")
        elif i == 0:
            self._fail(f"{self.path}: no frame could be decoded; expected a video file readable by "
                       f"OpenCV/FFmpeg")

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class FolderSource(FrameSource):
    """A folder of image files in natural order."""

    def __init__(self, path: Path, *, strict: bool = True) -> None:
        self.path = path
        self.name = path.name
        self.strict = strict
        self.fps = None
        self.files = list_images(path)
        if not self.files:
            raise UserError(f"{path}: frame folder holds no image files; expected "
                            f"{', '.join(sorted(IMAGE_EXTS))}")
        odd = [p.name for p in self.files if p.suffix.lower() not in IMAGE_EXTS]
        if odd and strict:
            raise UserError(f"{path / odd[0]}: not an image file in a frame folder; expected only "
                            f"{', '.join(sorted(IMAGE_EXTS))} files (remove or move it)")
        if odd:
            self.files = self.files[: next(i for i, p in enumerate(self.files) if p.name == odd[0])]
        self.n_frames = len(self.files)
        first = self._read(self.files[0]) if self.files else None
        self.size = None if first is None else (int(first.shape[0]), int(first.shape[1]))

    def _read(self, file: Path) -> np.ndarray | None:
        with _quiet_opencv():
            img = cv2.imread(str(file), cv2.IMREAD_UNCHANGED)
        if img is None:
            self._fail(f"{file}: unreadable or corrupt image; expected a valid "
                       f"{', '.join(sorted(IMAGE_EXTS))} file")
            return None
        return to_bgr(img)

    def __iter__(self) -> Iterator[np.ndarray]:
        for i, file in enumerate(self.files):
            frame = self._read(file)
            if frame is None or not self._check_size(frame, i, str(file)):
                return
            yield frame


class LiveSource(FrameSource):
    """A camera index or stream URL: no frame count, iteration ends when the stream does."""

    def __init__(self, spec: str | int, *, strict: bool = True) -> None:
        self.spec = spec
        self.name = f"camera{spec}" if isinstance(spec, int) else str(spec)
        self.strict = strict
        self.n_frames = None
        self.end_reason: str | None = None  # set when the stream stalled rather than ended
        with _quiet_opencv():
            self._cap: cv2.VideoCapture | None = cv2.VideoCapture(spec)
        if not self._cap.isOpened():
            self._cap.release()
            self._cap = None
            if isinstance(spec, int):
                raise UserError(f"cannot open camera index {spec}; check that the device is connected "
                                "and free")
            raise UserError(f"cannot open stream {spec}: FFmpeg could not connect to it or could not "
                            "decode what it sent (unreachable address, wrong URL, or a format it cannot "
                            "stream, such as an MP4 whose index is at the end:"
                            " remux it with -movflags +faststart)")
        fps = float(self._cap.get(cv2.CAP_PROP_FPS))
        h, w = int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.fps = fps if 0 < fps < 1000 else None
        self.size = (h, w) if h > 0 and w > 0 else None
        self._size_checked = False

    def __iter__(self) -> Iterator[np.ndarray]:
        i = 0
        while self._cap is not None:
            t0 = time.monotonic()
            ok, frame = self._cap.read()
            if not ok or frame is None:
                waited = time.monotonic() - t0
                if waited >= STALL_S:
                    self.end_reason = f"input stalled (no frame for {waited:.0f} s)"
                    _warn(f"{self.name}: no frame for {waited:.0f} s after {i} frames: the stream stalled")
                elif i == 0 or not self.strict:
                    _warn(f"{self.name}: stream ended or was lost after {i} frames")
                break
            frame = to_bgr(frame)
            if not self._size_checked:
                self.size = None  # the header size of a stream is only a hint: trust the first frame
                self._size_checked = True
            if not self._check_size(frame, i, self.name):
                break
            yield frame
            i += 1
        self.close()

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def open_source(spec: str | int | Path, *, strict: bool = True) -> FrameSource:
    """Open a video file, a frame folder, a camera index (int or digit string) or a stream URL."""
    if isinstance(spec, bool):
        raise UserError(f"invalid frame source {spec!r}")
    if isinstance(spec, int):
        return LiveSource(spec, strict=strict)
    text = str(spec)
    if not isinstance(spec, Path):
        local = file_url_path(text)
        if local is not None:
            return open_source(local, strict=strict)
        if text.strip().isdigit() and not Path(text).exists():
            return LiveSource(int(text), strict=strict)
        if is_url(text):
            return LiveSource(text, strict=strict)
    path = Path(text).expanduser()
    if not path.exists():
        raise UserError(f"{path}: no such file or folder; expected a video file, a frame folder, a camera "
                        f"index or a stream URL")
    if path.is_dir():
        return FolderSource(path, strict=strict)
    if path.suffix.lower() in IMAGE_EXTS:
        raise UserError(f"{path}: a single image is not a frame source; give the folder holding the frames")
    return VideoFileSource(path, strict=strict)


def probe_stream(spec: str) -> dict[str, object]:
    """``statevad info`` of a stream URL: open it, decode one frame; size, fps and frame count if known."""
    src = LiveSource(spec, strict=False)
    try:
        cap = src._cap
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap is not None else 0
        frame = None
        if cap is not None:
            with _quiet_opencv():
                ok, frame = cap.read()
            frame = frame if ok else None
        if frame is None:
            raise UserError(f"stream {spec} opened but no frame could be decoded from it (for an MP4 "
                            "file over HTTP the index must come first: remux it with -movflags +faststart)")
        h, w = frame.shape[:2]
    finally:
        src.close()
    return {"source": spec, "kind": "stream", "frames": count if count > 0 else None,
            "resolution": f"{w}x{h}", "fps": src.fps}


def read_frames(spec: str | int | Path, *, strict: bool = True, max_frames: int | None = None) -> np.ndarray:
    """All frames (or the first ``max_frames``) as one ``(N, H, W, 3) uint8`` array."""
    frames: list[np.ndarray] = []
    with open_source(spec, strict=strict) as src:
        if max_frames is not None and max_frames <= 0:
            return np.zeros((0, *(src.size or (0, 0)), 3), np.uint8)
        it = iter(src)
        for frame in it:
            frames.append(frame)
            if max_frames is not None and len(frames) >= max_frames:
                break
        if hasattr(it, "close"):
            it.close()  # runs the generator's cleanup now (releases the decoder) instead of at GC time
        if not frames:
            if strict:
                raise UserError(f"{src.name}: no frames could be read")
            return np.zeros((0, *(src.size or (0, 0)), 3), np.uint8)
    return np.stack(frames)
