"""The media folder: each event's peak thumbnail, object crops and a browser-playable clip around the peak.

Files are written atomically (temporary sibling + rename), so the API never serves half a clip; the database
holds paths *relative* to this folder, and :meth:`MediaStore.resolve` refuses any path that would leave it
(``..``, an absolute path, a symbolic link pointing out), so no request can reach another file.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from statevad.files import atomic_path, atomic_write_bytes

MEDIA_TYPES = {".jpg": "image/jpeg", ".mp4": "video/mp4"}
CLIP_WIDTH = 480  # clips are for a glance in the browser: small files, quick to encode


def jpeg(img: np.ndarray, quality: int = 85) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - cv2 always encodes a valid uint8 image
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def crop(frame: np.ndarray, box: np.ndarray, margin: float = 0.15) -> np.ndarray:
    """The box with a small margin (context helps the operator), clipped to the frame; never empty."""
    h, w = frame.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    mx, my = (x2 - x1) * margin, (y2 - y1) * margin
    a, b = int(max(0, np.floor(x1 - mx))), int(max(0, np.floor(y1 - my)))
    c, d = int(min(w, np.ceil(x2 + mx))), int(min(h, np.ceil(y2 + my)))
    return frame[b:max(d, b + 1), a:max(c, a + 1)]


def write_clip(dest: Path, frames: list[np.ndarray], fps: float) -> None:
    """H.264 (yuv420p, +faststart) MP4 of BGR frames: what every browser's <video> plays."""
    import av

    h, w = frames[0].shape[:2]
    scale = min(1.0, CLIP_WIDTH / w)
    ow, oh = max(2, int(w * scale) // 2 * 2), max(2, int(h * scale) // 2 * 2)  # yuv420p needs even sizes
    with atomic_path(dest, suffix=".mp4") as tmp:
        with av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as box:
            stream = box.add_stream("libx264", rate=Fraction(round(fps * 1000), 1000))
            stream.width, stream.height, stream.pix_fmt = ow, oh, "yuv420p"
            stream.options = {"preset": "veryfast", "crf": "28"}
            for f in frames:
                img = cv2.resize(f, (ow, oh), interpolation=cv2.INTER_AREA) if (ow, oh) != (w, h) else f
                for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                    box.mux(packet)
            for packet in stream.encode():
                box.mux(packet)


class MediaStore:
    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root.resolve()

    def save_event(self, camera: str, key: str, thumb: bytes | None, crops: list[bytes],
                   clip: list[np.ndarray], fps: float) -> tuple[str | None, list[str], str | None]:
        """Write one event's files under ``camera/key/``; returns their relative paths."""
        folder = self.root / camera / key
        folder.mkdir(parents=True, exist_ok=True)
        rel = f"{camera}/{key}"
        thumb_rel = clip_rel = None
        if thumb is not None:
            atomic_write_bytes(folder / "thumb.jpg", thumb)
            thumb_rel = f"{rel}/thumb.jpg"
        crop_rels = []
        for i, data in enumerate(crops):
            atomic_write_bytes(folder / f"crop{i}.jpg", data)
            crop_rels.append(f"{rel}/crop{i}.jpg")
        if clip:
            write_clip(folder / "clip.mp4", clip, fps)
            clip_rel = f"{rel}/clip.mp4"
        return thumb_rel, crop_rels, clip_rel

    def resolve(self, rel: str | None) -> Path | None:
        """The file at ``rel`` inside the media folder, or None (absent, or anywhere outside it)."""
        if not rel or "\x00" in rel:
            return None
        path = (self.root / rel).resolve()
        if not path.is_relative_to(self.root) or path.suffix not in MEDIA_TYPES or not path.is_file():
            return None
        return path
