"""What a person looks at: score curves, ROC curves, the annotated video and a one-page HTML report.

Everything here works on plain arrays (frame scores, boxes, per-object scores, :class:`statevad.events.Event`)
so that it serves both the offline ``statevad test`` path and the streaming ``statevad score`` path.

Conventions: frames are BGR uint8 (H, W, 3); boxes float32 (n, 4) x1, y1, x2, y2; scores are fused
z-scores (spec 7.2) and a frame with no object has the score ``EMPTY_FRAME_SCORE`` (-1e5, spec 7.3) or NaN.
"""

from __future__ import annotations

import base64
import errno
import html
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
from statevad.files import atomic_path, atomic_write_text, fsync_file, temp_sibling
from statevad.io import DEFAULT_FPS, fps_or_default
from statevad.scoring import EMPTY_FRAME_SCORE

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


def draw_boxes(frame: np.ndarray, boxes: np.ndarray, scores: np.ndarray, threshold: float,
               label: int = 3) -> np.ndarray:
    """Copy of ``frame`` with each box outlined in its score colour.

    The scores of the ``label`` most anomalous boxes above the threshold are written above them; more
    numbers overlap on a crowded frame and hide the picture.
    """
    out = frame.copy()
    h, w = out.shape[:2]
    thick = 1 if max(h, w) < 500 else 2
    order = np.argsort(np.asarray(scores, dtype=np.float64), kind="stable")  # most anomalous drawn last
    labelled = set(order[::-1][:label].tolist()) if label else set()
    for i in order:
        x1, y1, x2, y2 = (int(round(float(v))) for v in boxes[i])
        x1, x2 = max(0, min(x1, w - 1)), max(0, min(x2, w - 1))
        y1, y2 = max(0, min(y1, h - 1)), max(0, min(y2, h - 1))
        col = score_color(float(scores[i]), threshold)
        cv2.rectangle(out, (x1, y1), (x2, y2), col, thick)
        if i in labelled and float(scores[i]) > threshold:
            cv2.putText(out, f"{float(scores[i]):.1f}", (x1, max(8, y1 - 2)), cv2.FONT_HERSHEY_PLAIN,
                        0.8 if max(h, w) < 500 else 1.2, col, 1, cv2.LINE_AA)
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


def annotate_frame(frame: np.ndarray, boxes: np.ndarray, scores: np.ndarray, history: np.ndarray,
                   threshold: float, lo: float, hi: float) -> np.ndarray:
    """The annotated-video frame: coloured boxes plus the running score strip."""
    out = draw_boxes(frame, boxes, scores, threshold)
    return draw_strip(out, history, threshold, lo, hi)


# ------------------------------------------------------------------------------------- video writer


class AnnotatedVideoWriter:
    """MP4 (mp4v) writer that publishes ``dest`` only on :meth:`close` (temp sibling + rename).

    A crash never leaves a half-written ``annotated.mp4``; an early end of the input (lost stream)
    still calls :meth:`close` and yields a valid, shorter video. The strip's vertical range is fixed
    when the writer is made (from the threshold) because a streaming writer cannot rescale past frames.
    """

    def __init__(self, dest: str | os.PathLike[str], fps: float, size: tuple[int, int], threshold: float,
                 strip_range: tuple[float, float] | None = None, fourcc: str = "mp4v") -> None:
        self.dest = Path(dest)
        self.dest.parent.mkdir(parents=True, exist_ok=True)
        self.size = size  # (W, H)
        self.threshold = float(threshold)
        self.lo, self.hi = strip_range if strip_range is not None else default_strip_range(threshold)
        self.n_frames = 0
        fd, self._tmp = temp_sibling(self.dest)
        os.close(fd)
        fps = fps_or_default(fps)
        self._writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*fourcc), fps, size)
        if not self._writer.isOpened():
            self._tmp.unlink(missing_ok=True)
            raise UserError(f"cannot write video {self.dest} with codec {fourcc}: "
                            "use --no-video or another output folder")

    def write(self, frame: np.ndarray, boxes: np.ndarray, scores: np.ndarray, history: np.ndarray) -> None:
        """Annotate and append one frame (must have the size given at construction)."""
        if (frame.shape[1], frame.shape[0]) != self.size:
            raise ValueError(f"frame size {frame.shape[1]}x{frame.shape[0]} != video size {self.size}")
        out = annotate_frame(frame, boxes, scores, history, self.threshold, self.lo, self.hi)
        self._writer.write(out)
        self.n_frames += 1

    def finish(self) -> Path:
        """Finish the temporary file and check that it reads back; return its path (not yet renamed).

        ``cv2.VideoWriter`` reports no write error: on a full disk it leaves an MP4 without its index (moov
        atom), which no player opens. So the file is reopened and its frame count compared with the frames
        written; a file that fails is deleted and :class:`OSError` raised.
        """
        self._writer.release()
        ok, count = False, -1
        if self._tmp.exists() and self._tmp.stat().st_size > 0:
            cap = cv2.VideoCapture(str(self._tmp))
            try:
                ok = cap.isOpened()
                count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if ok else -1
            finally:
                cap.release()
        if not ok or count != self.n_frames:
            self._tmp.unlink(missing_ok=True)
            got = f"{count} of {self.n_frames} frames" if ok else "no readable file"
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


def thumbnail_jpeg(frame: np.ndarray, boxes: np.ndarray, scores: np.ndarray, threshold: float,
                   width: int = 320) -> bytes:
    """Small JPEG of a frame with its coloured boxes (kept in memory per event, so kept small)."""
    img = draw_boxes(frame, boxes, scores, threshold)
    h, w = img.shape[:2]
    if w > width:
        img = cv2.resize(img, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:  # pragma: no cover - cv2 always encodes a valid uint8 image
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def _fmt_time(sec: float) -> str:
    m, s = divmod(max(sec, 0.0), 60.0)
    h, m = divmod(int(m), 60)
    return f"{h}:{m:02d}:{s:05.2f}" if h else f"{m}:{s:05.2f}"


def render_report(title: str, summary: dict[str, Any], curve_png: bytes | None, found: Sequence[Event],
                  thumbnails: dict[int, bytes], extra_png: dict[str, bytes] | None = None) -> str:
    """A self-contained HTML page (images inlined as base64): summary, curve, events, peak thumbnails."""

    def img(data: bytes, mime: str, alt: str, style: str = "") -> str:
        b64 = base64.b64encode(data).decode("ascii")
        return f'<img alt="{html.escape(alt)}" style="{style}" src="data:{mime};base64,{b64}">'

    rows = []
    for i, e in enumerate(found, 1):
        thumb = thumbnails.get(e.peak_frame)
        cell = img(thumb, "image/jpeg", f"frame {e.peak_frame}", "max-width:320px") if thumb else "—"
        rows.append(
            f"<tr><td>{i}</td><td>{e.start}–{e.end}</td><td>{_fmt_time(e.start_s)}–{_fmt_time(e.end_s)}</td>"
            f"<td>{e.end_s - e.start_s:.2f} s</td><td>{e.peak_score:.2f}</td><td>{e.peak_frame}</td>"
            f"<td>{cell}</td></tr>")
    table = ("<table><tr><th>#</th><th>frames</th><th>time</th><th>duration</th><th>peak score</th>"
             "<th>peak frame</th><th>peak frame with boxes</th></tr>" + "".join(rows) + "</table>"
             if rows else "<p>No anomalous event above the threshold.</p>")
    summ = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt_value(v))}</td></tr>"
                   for k, v in summary.items())
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>",
        "body{font-family:sans-serif;margin:1.5em;max-width:1100px}table{border-collapse:collapse}",
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:middle}",
        "th{background:#f4f4f4}.legend span{display:inline-block;width:1em;height:1em;margin:0 .3em}",
        "</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<table>{summ}</table>",
        "<h2>Frame score</h2>",
        img(curve_png, "image/png", "score curve", "max-width:100%") if curve_png else "<p>(no frames)</p>",
        "<p class='legend'>Boxes: <span style='background:#00c800'></span>normal "
        "<span style='background:#ffa000'></span>near the threshold "
        "<span style='background:#ff0000'></span>above the threshold (score written beside the box).</p>",
        f"<h2>Events ({len(found)})</h2>",
        table,
    ]
    for name, data in (extra_png or {}).items():
        parts += [f"<h2>{html.escape(name)}</h2>", img(data, "image/png", name)]
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def write_report(dest: str | os.PathLike[str], title: str, summary: dict[str, Any], curve_png: bytes | None,
                 found: Sequence[Event], thumbnails: dict[int, bytes],
                 extra_png: dict[str, bytes] | None = None) -> None:
    """Write :func:`render_report` to ``dest`` atomically."""
    atomic_write_text(dest, render_report(title, summary, curve_png, found, thumbnails, extra_png))
