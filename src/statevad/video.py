"""Video files that browsers play: H.264 (or VP9) in MP4 through PyAV, checked by reading them back.

OpenCV's own writer only has MPEG-4 Part 2 (``mp4v``), which no browser plays, so the annotated video of
``statevad score`` is encoded with PyAV (FFmpeg's libraries, bundled in its wheels, with libx264 and libvpx).
The first encoder of :data:`ENCODERS` that the installed PyAV has is used; where none is (a PyAV built
without them, or no PyAV), :func:`open_encoder` falls back to OpenCV's ``mp4v`` and says so in
:attr:`Encoder.note`, so the run still gives a video (for players such as VLC, not for a browser).

An encoder writes BGR uint8 frames of one size. yuv420p (what browsers decode) needs even sizes: an odd
width or height is padded by one replicated pixel column/row, so the picture is never rescaled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import numpy as np

# (PyAV encoder name, encoder options): the first one that the installed PyAV has wins. libx264 plays in every
# browser; VP9 in MP4 plays in Chrome, Firefox and Edge. The presets favour speed: the video is a by-product.
ENCODERS: tuple[tuple[str, dict[str, str]], ...] = (
    ("libx264", {"preset": "veryfast", "crf": "23"}),
    ("libvpx-vp9", {"deadline": "realtime", "cpu-used": "8", "crf": "32", "b": "0"}),
)
BROWSER_CODECS = ("h264", "vp9")


class FrameSink(Protocol):
    def write(self, frame: np.ndarray) -> None: ...

    def release(self) -> None: ...


@dataclass
class Encoder:
    """An open encoder: ``sink`` takes BGR frames; ``codec`` names the codec; ``note`` is set on fallback."""

    sink: FrameSink
    codec: str
    note: str | None = None


def pick_encoder() -> tuple[str, dict[str, str]] | None:
    """The first encoder of :data:`ENCODERS` that the installed PyAV provides, or None."""
    try:
        import av
    except ImportError:
        return None
    for name, options in ENCODERS:
        try:
            av.codec.Codec(name, "w")
        except Exception:  # noqa: BLE001 - PyAV raises its own error types for a missing encoder
            continue
        return name, options
    return None


def _rate(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1001) if math.isfinite(fps) and fps > 0 else Fraction(25)


class _AvSink:
    """Encode BGR frames to an MP4 file with PyAV (index at the front: it plays while downloading)."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int], name: str, options: dict[str, str]):
        import av

        self._av = av
        self._c = av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"})
        try:
            self._s = self._c.add_stream(name, rate=_rate(fps))
            w, h = size
            self._s.width, self._s.height = w + w % 2, h + h % 2
            self._s.pix_fmt = "yuv420p"
            self._s.options = dict(options)
        except BaseException:
            self._c.close()
            raise
        self._closed = False

    def write(self, frame: np.ndarray) -> None:
        h, w = frame.shape[:2]
        if h % 2 or w % 2:  # yuv420p needs even sizes: replicate the last row/column
            frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        vf = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="bgr24")
        for packet in self._s.encode(vf):
            self._c.mux(packet)

    def release(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            for packet in self._s.encode():
                self._c.mux(packet)
        finally:
            self._c.close()


class _Cv2Sink:
    def __init__(self, path: Path, fps: float, size: tuple[int, int]) -> None:
        import cv2

        self._w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(_rate(fps)), size)
        if not self._w.isOpened():
            raise OSError(f"OpenCV cannot write {path}")

    def write(self, frame: np.ndarray) -> None:
        self._w.write(frame)

    def release(self) -> None:
        self._w.release()


def open_encoder(path: Path, fps: float, size: tuple[int, int]) -> Encoder:
    """Open ``path`` for writing a video of ``size`` (W, H) at ``fps``: a browser codec when available."""
    picked = pick_encoder()
    if picked is not None:
        name, options = picked
        return Encoder(_AvSink(path, fps, size, name, options), "h264" if name == "libx264" else "vp9")
    note = ("MPEG-4 Part 2 (browsers do not play it): install PyAV with libx264 "
            "(`pip install av`) for a video the report can show")
    return Encoder(_Cv2Sink(path, fps, size), "mpeg4", note)


def read_back(path: Path) -> tuple[int, str] | None:
    """(frame count, codec name) of a finished video file, or None when it does not open (no index).

    The count comes from the container's index, without decoding: a file cut short by a full disk has no
    index (moov atom) and does not open at all.
    """
    try:
        import av
    except ImportError:
        return _read_back_cv2(path)
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                return None
            v = c.streams.video[0]
            return int(v.frames), str(v.codec_context.name)
    except Exception:  # noqa: BLE001 - any failure to open means "not a playable file"
        return None


def _read_back_cv2(path: Path) -> tuple[int, str] | None:
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            return None
        return int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), "mpeg4"
    finally:
        cap.release()


def describe(codec: str) -> str:
    """Words for the summary: the codec and whether a browser plays it."""
    return f"{codec} (plays in a browser)" if codec in BROWSER_CODECS else f"{codec} (not for browsers)"

