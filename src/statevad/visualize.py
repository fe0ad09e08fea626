"""What a person looks at: score curves, ROC curves, annotated frames and the annotated video.

Everything here works on plain arrays (frame scores, boxes, per-object scores, :class:`statevad.events.Event`)
so that it serves both the offline ``statevad test`` path and the streaming ``statevad score`` path. The HTML
report that gathers them is :mod:`statevad.report`.

Conventions: frames are BGR uint8 (H, W, 3); boxes float32 (n, 4) x1, y1, x2, y2; scores are fused
z-scores (spec 7.2) and a frame with no object has the score ``EMPTY_FRAME_SCORE`` (-1e5, spec 7.3) or NaN.
"""

from __future__ import annotations

import contextlib
import errno
import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from statevad.errors import UserError
from statevad.events import Event, label_intervals
from statevad.files import atomic_path, fsync_file, temp_sibling
from statevad.io import DEFAULT_FPS, fps_or_default
from statevad.scoring import EMPTY_FRAME_SCORE
from statevad.video import open_encoder, read_back

# ------------------------------------------------------------------------------------------ colours


def score_color(score: float, threshold: float) -> tuple[int, int, int]:
    """BGR colour of an object score: green far below the threshold, yellow near it, red above.

    The ramp spans ``max(|threshold|, 1)`` below the threshold, so the colours mean the same thing for
    any checkpoint (scores are z-scores) and "red" always means "flagged".
    """
    if not math.isfinite(score):
        return (160, 160, 160)
    if score > threshold:
        return (0, 0, 255)
    span = max(abs(threshold), 1.0)
    a = float(np.clip((score - (threshold - span)) / span, 0.0, 1.0))  # 0 green .. 1 yellow/orange
    return (0, int(round(200 - 40 * a)), int(round(255 * a)))


# ------------------------------------------------------------------------------------ frame drawing


def _font(h: int, w: int) -> tuple[float, int]:
    """cv2.FONT_HERSHEY_PLAIN scale and line thickness for labels on an (h, w) frame."""
    return (0.8, 1) if max(h, w) < 500 else (1.2, 1)


Rect = tuple[int, int, int, int]  # x1, y1, x2, y2 (inclusive-exclusive)


def _overlaps(a: Rect, b: Rect) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_labels(boxes: np.ndarray, sizes: Sequence[tuple[int, int]], frame_size: tuple[int, int],
                 pad: int = 1) -> list[Rect | None]:
    """Where to put one label (``sizes[i]`` = text width, height) per box, or None where none fits.

    Each label goes at the first free spot of: above the box, inside its top, below it, then the same
    right-aligned; every spot is moved inside the ``frame_size`` (W, H) area and skipped when it would overlap
    a label placed before it. So labels never overlap each other and never leave the frame; a label with no
    free spot is left out (its box keeps its colour). Boxes are served in the given order (most important
    first).
    """
    fw, fh = frame_size
    placed: list[Rect] = []
    out: list[Rect | None] = []
    for box, (tw, th) in zip(boxes, sizes, strict=True):
        w, h = tw + 2 * pad, th + 2 * pad
        if w > fw or h > fh:
            out.append(None)
            continue
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        spots = [(x1, y1 - h), (x1, y1), (x1, y2), (x2 - w, y1 - h), (x2 - w, y1), (x2 - w, y2)]
        got: Rect | None = None
        for sx, sy in spots:
            sx, sy = min(max(sx, 0), fw - w), min(max(sy, 0), fh - h)
            r = (sx, sy, sx + w, sy + h)
            if not any(_overlaps(r, q) for q in placed):
                got = r
                break
        if got is not None:
            placed.append(got)
        out.append(got)
    return out


def _put_label(img: np.ndarray, rect: Rect, text: str, color: tuple[int, int, int], scale: float,
               pad: int = 1) -> None:
    """Text on a dark box filling ``rect`` (readable on any picture)."""
    x1, y1, x2, y2 = rect
    cv2.rectangle(img, (x1, y1), (x2 - 1, y2 - 1), (0, 0, 0), -1)
    (_tw, th), _base = cv2.getTextSize(text, cv2.FONT_HERSHEY_PLAIN, scale, 1)
    cv2.putText(img, text, (x1 + pad, y1 + pad + th), cv2.FONT_HERSHEY_PLAIN, scale, color, 1, cv2.LINE_AA)


def draw_boxes(frame: np.ndarray, boxes: np.ndarray, scores: np.ndarray, threshold: float,
               label: int = 3, label_area: tuple[int, int] | None = None) -> np.ndarray:
    """Copy of ``frame`` with each box outlined in its score colour.

    The scores of the ``label`` most anomalous boxes above the threshold are written beside them
    (:func:`place_labels`: never overlapping, never outside ``label_area`` (W, H), the whole frame by
    default); more numbers would hide the picture of a crowded frame.
    """
    out = frame.copy()
    h, w = out.shape[:2]
    thick = 1 if max(h, w) < 500 else 2
    sc = np.asarray(scores, dtype=np.float64)
    order = np.argsort(sc, kind="stable")  # most anomalous drawn last
    for i in order:
        x1, y1, x2, y2 = (int(round(float(v))) for v in boxes[i])
        x1, x2 = max(0, min(x1, w - 1)), max(0, min(x2, w - 1))
        y1, y2 = max(0, min(y1, h - 1)), max(0, min(y2, h - 1))
        cv2.rectangle(out, (x1, y1), (x2, y2), score_color(float(sc[i]), threshold), thick)
    top = [int(i) for i in order[::-1][:label] if sc[i] > threshold] if label else []
    if top:
        scale, _ = _font(h, w)
        texts = [f"{sc[i]:.1f}" for i in top]
        sizes = [cv2.getTextSize(t, cv2.FONT_HERSHEY_PLAIN, scale, 1)[0] for t in texts]
        rects = place_labels(np.asarray(boxes)[top], [(a, b + 2) for a, b in sizes], label_area or (w, h))
        for i, text, rect in zip(top, texts, rects, strict=True):
            if rect is not None:
                _put_label(out, rect, text, score_color(float(sc[i]), threshold), scale)
    return out


def strip_height(h: int) -> int:
    """Height of the running score strip: a sixth of the frame, at least 16 px, within the frame."""
    return int(min(max(16, h // 6), max(1, h // 2)))


def draw_strip(frame: np.ndarray, history: np.ndarray, threshold: float, lo: float, hi: float) -> np.ndarray:
    """Overlay the running score strip on the bottom of ``frame`` in place (the size never changes).

    ``history`` holds the most recent frame scores, newest last, one pixel column per frame; the
    threshold is a dashed line, the part above it is filled red. Drawn *over* the frame rather than
    appended so that the annotated video keeps the input's exact size.
    """
    h, w = frame.shape[:2]
    sh = strip_height(h)
    y0 = h - sh
    region = frame[y0:h]
    region[:] = (region.astype(np.uint16) * 2 // 5).astype(np.uint8)  # darken, keep some context
    hist = np.asarray(history, dtype=np.float64)[-w:]
    span = max(hi - lo, 1e-6)

    def y_of(v: float) -> int:
        return int(round(y0 + (sh - 2) * (1.0 - np.clip((v - lo) / span, 0.0, 1.0)) + 1))

    ty = y_of(threshold)
    for x in range(0, w, 6):
        cv2.line(frame, (x, ty), (min(x + 2, w - 1), ty), (200, 200, 200), 1)
    x_off = w - len(hist)
    pts = []
    for i, v in enumerate(hist):
        if not math.isfinite(v) or v <= EMPTY_FRAME_SCORE / 2:
            continue
        x = x_off + i
        y = y_of(v)
        if v > threshold:
            cv2.line(frame, (x, y), (x, ty), (0, 0, 200), 1)
        pts.append((x, y))
    if len(pts) >= 2:
        cv2.polylines(frame, [np.array(pts, dtype=np.int32)], False, (255, 255, 255), 1, cv2.LINE_AA)
    elif pts:
        cv2.circle(frame, pts[0], 1, (255, 255, 255), -1)
    return frame


def strip_text(history: np.ndarray, threshold: float, t_s: float | None) -> str:
    """The strip's caption: the time, the current frame score and the threshold."""
    cur = float(history[-1]) if len(history) else math.nan
    now = f"{cur:.2f}" if math.isfinite(cur) and cur > EMPTY_FRAME_SCORE / 2 else "-"
    when = f"{fmt_time(t_s)}  " if t_s is not None else ""
    return f"{when}score {now}  thr {threshold:.2f}"


def draw_strip_text(frame: np.ndarray, text: str) -> np.ndarray:
    """Write ``text`` at the top left of the strip (in place); shortened, never past the frame's edge."""
    h, w = frame.shape[:2]
    scale, _ = _font(h, w)
    sh = strip_height(h)
    while text:
        (tw, th), _base = cv2.getTextSize(text, cv2.FONT_HERSHEY_PLAIN, scale, 1)
        if tw + 4 <= w and th + 3 <= sh:
            cv2.rectangle(frame, (0, h - sh), (tw + 3, h - sh + th + 3), (0, 0, 0), -1)  # over the curve
            cv2.putText(frame, text, (2, h - sh + th + 2), cv2.FONT_HERSHEY_PLAIN, scale, (255, 255, 255), 1,
                        cv2.LINE_AA)
            break
        text = text.split("  ", 1)[1] if "  " in text else ""  # drop the leading part (time first)
    return frame


def annotate_frame(frame: np.ndarray, boxes: np.ndarray, scores: np.ndarray, history: np.ndarray,
                   threshold: float, lo: float, hi: float, t_s: float | None = None) -> np.ndarray:
    """The annotated-video frame: coloured boxes, the running score strip and its caption (time, score,
    threshold). Box labels stay above the strip."""
    h, w = frame.shape[:2]
    out = draw_boxes(frame, boxes, scores, threshold, label_area=(w, h - strip_height(h)))
    draw_strip(out, history, threshold, lo, hi)
    return draw_strip_text(out, strip_text(np.asarray(history), threshold, t_s))


# ------------------------------------------------------------------------------------- video writer


class AnnotatedVideoWriter:
    """Annotated video (H.264 MP4 through :mod:`statevad.video`) that publishes ``dest`` only on
    :meth:`close` (temp sibling + rename).

    A crash never leaves a half-written ``annotated.mp4``; an early end of the input (lost stream)
    still calls :meth:`close` and yields a valid, shorter video. The strip's vertical range is fixed
    when the writer is made (from the threshold) because a streaming writer cannot rescale past frames.
    """

    def __init__(self, dest: str | os.PathLike[str], fps: float, size: tuple[int, int], threshold: float,
                 strip_range: tuple[float, float] | None = None) -> None:
        self.dest = Path(dest)
        self.dest.parent.mkdir(parents=True, exist_ok=True)
        self.size = size  # (W, H)
        self.fps = fps_or_default(fps)
        self.threshold = float(threshold)
        self.lo, self.hi = strip_range if strip_range is not None else default_strip_range(threshold)
        self.n_frames = 0
        fd, self._tmp = temp_sibling(self.dest)
        os.close(fd)
        try:
            enc = open_encoder(self._tmp, self.fps, size)
        except (OSError, ValueError) as exc:
            self._tmp.unlink(missing_ok=True)
            raise UserError(f"cannot write video {self.dest} ({exc}): use --no-video or another output "
                            "folder") from None
        self._writer = enc.sink
        self.codec, self.note = enc.codec, enc.note

    def write(self, frame: np.ndarray, boxes: np.ndarray, scores: np.ndarray, history: np.ndarray,
              t_s: float | None = None) -> None:
        """Annotate and append one frame (must have the size given at construction); ``t_s`` its time."""
        if (frame.shape[1], frame.shape[0]) != self.size:
            raise ValueError(f"frame size {frame.shape[1]}x{frame.shape[0]} != video size {self.size}")
        if t_s is None:
            t_s = self.n_frames / self.fps
        out = annotate_frame(frame, boxes, scores, history, self.threshold, self.lo, self.hi, t_s)
        self._writer.write(out)
        self.n_frames += 1

    def finish(self) -> Path:
        """Finish the temporary file and check that it reads back; return its path (not yet renamed).

        A full disk can leave an MP4 without its index (moov atom), which no player opens, even where the
        encoder reported nothing. So the file is reopened and its frame count compared with the frames
        written; a file that fails is deleted and :class:`OSError` raised.
        """
        try:
            self._writer.release()
        except OSError:
            self._tmp.unlink(missing_ok=True)
            raise
        except Exception as exc:  # noqa: BLE001 - PyAV's write errors that are not OSError
            self._tmp.unlink(missing_ok=True)
            raise OSError(errno.EIO, f"the annotated video could not be finished ({exc})",
                          str(self.dest)) from None
        back = read_back(self._tmp) if self._tmp.exists() and self._tmp.stat().st_size > 0 else None
        if back is None or back[0] != self.n_frames:
            self._tmp.unlink(missing_ok=True)
            got = f"{back[0]} of {self.n_frames} frames" if back else "no readable file"
            raise OSError(errno.EIO, f"the annotated video did not read back ({got}; disk full?)",
                          str(self.dest))
        fsync_file(self._tmp)
        return self._tmp

    def publish(self) -> Path:
        """Rename the finished file (:meth:`finish`) into place."""
        os.replace(self._tmp, self.dest)
        return self.dest

    def close(self) -> Path:
        """Finish the file, check it and rename it into place."""
        self.finish()
        return self.publish()

    def abort(self) -> None:
        """Drop the partial file (used when an unexpected error aborts the run)."""
        with contextlib.suppress(Exception):  # the file is dropped whatever the encoder says
            self._writer.release()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> AnnotatedVideoWriter:
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def default_strip_range(threshold: float) -> tuple[float, float]:
    """Vertical range of the score strip: the threshold sits at two thirds of the height."""
    span = max(abs(threshold), 1.0) * 1.5
    return threshold - 2 * span, threshold + span


# ------------------------------------------------------------------------------------------- plots


def _figure_png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def score_curve_png(scores: np.ndarray, threshold: float | None, fps: float = DEFAULT_FPS,
                    labels: np.ndarray | None = None, found: Sequence[Event] = (),
                    title: str = "frame anomaly score") -> bytes:
    """PNG bytes of the frame score over time: threshold line, labelled anomalies shaded.

    Frames without objects (``EMPTY_FRAME_SCORE``) or unscored (NaN) are gaps in the line, not -1e5 spikes,
    so the y axis stays readable. Detected events are marked by a bar under the curve.
    """
    plt = _plt()
    s = np.asarray(scores, dtype=np.float64).copy()
    s[~np.isfinite(s) | (s <= EMPTY_FRAME_SCORE / 2)] = np.nan
    fps = fps_or_default(fps)
    t = np.arange(len(s)) / fps
    fig, ax = plt.subplots(figsize=(10, 3.2))
    if labels is not None:
        for a, b in label_intervals(labels):
            ax.axvspan(a / fps, (b + 1) / fps, color="tab:red", alpha=0.15, lw=0,
                       label="labelled anomaly" if a == label_intervals(labels)[0][0] else None)
    ax.plot(t, s, color="tab:blue", lw=1.0, label="frame score")
    if threshold is not None:
        ax.axhline(threshold, color="tab:red", ls="--", lw=1.0, label=f"threshold {threshold:.2f}")
    finite = s[np.isfinite(s)]
    if len(finite):
        lo, hi = float(finite.min()), float(finite.max())
        if threshold is not None:
            lo, hi = min(lo, threshold), max(hi, threshold)
        pad = 0.05 * max(hi - lo, 1e-3)
        ax.set_ylim(lo - 3 * pad, hi + pad)
        for i, e in enumerate(found):
            ax.hlines(lo - 2 * pad, e.start / fps, (e.end + 1) / fps, color="black", lw=3,
                      label="detected event" if i == 0 else None)
    ax.set_xlim(0, max(len(s), 1) / fps)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("score (z)")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8, framealpha=0.8)
    fig.tight_layout()
    return _figure_png(fig)


def save_score_curve(dest: str | os.PathLike[str], scores: np.ndarray, threshold: float | None,
                     fps: float = DEFAULT_FPS, labels: np.ndarray | None = None, found: Sequence[Event] = (),
                     title: str = "frame anomaly score") -> bytes:
    """Write :func:`score_curve_png` to ``dest`` atomically; return the bytes (for the report)."""
    data = score_curve_png(scores, threshold, fps, labels, found, title)
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
    return data


def roc_png(labels: np.ndarray, scores: np.ndarray, title: str = "ROC") -> bytes:
    """PNG bytes of the ROC curve of frame scores against 0/1 labels (frames labelled -1 ignored)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    lab = np.asarray(labels).ravel()
    sc = np.asarray(scores, dtype=np.float64).ravel()
    keep = (lab >= 0) & np.isfinite(sc)
    lab, sc = lab[keep], sc[keep]
    if len(np.unique(lab)) < 2:
        raise UserError("ROC needs both normal and anomalous labelled frames: check the labels file")
    fpr, tpr, _ = roc_curve(lab, sc)
    auc = roc_auc_score(lab, sc)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot(fpr, tpr, color="tab:blue", lw=1.5, label=f"AUROC {auc:.3f}")
    ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return _figure_png(fig)


def save_roc(dest: str | os.PathLike[str], labels: np.ndarray, scores: np.ndarray,
             title: str = "ROC") -> None:
    """Write :func:`roc_png` to ``dest`` atomically."""
    data = roc_png(labels, scores, title)
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


# ------------------------------------------------------------------------------------------- report


def _jpeg(img: np.ndarray, quality: int = 85) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - cv2 always encodes a valid uint8 image
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def thumbnail_jpeg(frame: np.ndarray, boxes: np.ndarray, scores: np.ndarray, threshold: float,
                   width: int | None = 320) -> bytes:
    """JPEG of a frame with its coloured boxes, at most ``width`` wide (None: full size)."""
    img = draw_boxes(frame, boxes, scores, threshold)
    h, w = img.shape[:2]
    if width is not None and w > width:
        img = cv2.resize(img, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
    return _jpeg(img)


def object_crops(frame: np.ndarray, boxes: np.ndarray, scores: np.ndarray, k: int = 3,
                 height: int = 96, margin: float = 0.25) -> list[tuple[bytes, float]]:
    """JPEG crops (with a ``margin`` of context, ``height`` px high) of the ``k`` highest-scoring objects,
    most anomalous first, each with its score: what the model found odd, large enough to see."""
    sc = np.asarray(scores, dtype=np.float64)
    h, w = frame.shape[:2]
    out: list[tuple[bytes, float]] = []
    for i in np.argsort(-sc, kind="stable")[:k]:
        if not math.isfinite(sc[i]):
            continue
        x1, y1, x2, y2 = (float(v) for v in boxes[i])
        mx, my = margin * max(x2 - x1, 1.0), margin * max(y2 - y1, 1.0)
        a, b = int(max(0, math.floor(x1 - mx))), int(min(w, math.ceil(x2 + mx)))
        c, d = int(max(0, math.floor(y1 - my))), int(min(h, math.ceil(y2 + my)))
        if b - a < 1 or d - c < 1:
            continue
        crop = frame[c:d, a:b]
        scale = height / crop.shape[0]
        crop = cv2.resize(crop, (max(1, round(crop.shape[1] * scale)), height),
                          interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
        out.append((_jpeg(crop, 90), float(sc[i])))
    return out


def fmt_time(sec: float) -> str:
    """m:ss.ss (h:mm:ss.ss past an hour)."""
    m, s = divmod(max(sec, 0.0), 60.0)
    h, m = divmod(int(m), 60)
    return f"{h}:{m:02d}:{s:05.2f}" if h else f"{m}:{s:05.2f}"
