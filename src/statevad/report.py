"""``report.html``: the one page a person opens after ``statevad score``.

The page is self-contained except for the run's own files beside it: the annotated video is embedded with
a ``<video>`` element that points at ``annotated.mp4`` (H.264, :mod:`statevad.video`), and the data files
(scores.csv, objects.jsonl, events.json, score_curve.png) are linked by their names, so the folder can be
moved or served as it is. Pictures (curve, heat map, event frames, object crops) are inlined as base64.

Sections, each with an ``id`` (a browser test looks for them): ``run`` (date, statevad version, settings),
``model-card`` (whatever the model file says about itself), ``video``, ``files``, ``curve``, ``heatmap``
(where in the view anomalies occurred), ``events`` (each with its full-size peak frame, opened by a click, and
crops of its most anomalous objects) and any extra plots (the ROC with ``--labels``).
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from statevad.events import Event
from statevad.visualize import _figure_png, _plt, fmt_time


@dataclass
class EventPicture:
    """What the report shows of one event: its peak frame with boxes (full size, JPEG) and object crops."""

    frame_jpeg: bytes
    crops: list[tuple[bytes, float]] = field(default_factory=list)  # (JPEG, score), most anomalous first


@dataclass
class HeatMap:
    """Where in the view anomalies occurred: each object above the threshold adds ``score - threshold`` to
    every cell of a coarse grid that its box covers, so the map is anomalous area weighted by how far above
    the threshold it was. The grid's longer side is ``cells`` (memory is fixed whatever the input's length).
    """

    cells: int = 96
    grid: np.ndarray | None = None
    background: np.ndarray | None = None  # a small grey copy of the first frame, for orientation
    scale: float = 1.0  # grid cells per frame pixel
    n_boxes: int = 0

    def add(self, frame: np.ndarray, boxes: np.ndarray, scores: np.ndarray, threshold: float) -> None:
        h, w = frame.shape[:2]
        if self.grid is None:
            self.scale = min(1.0, self.cells / max(h, w))
            gh, gw = max(1, round(h * self.scale)), max(1, round(w * self.scale))
            self.grid = np.zeros((gh, gw), np.float64)
            grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.ndim == 3 else frame
            bw = min(w, 480)
            self.background = cv2.resize(grey, (bw, max(1, round(h * bw / w))), interpolation=cv2.INTER_AREA)
        sc = np.asarray(scores, dtype=np.float64)
        gh, gw = self.grid.shape
        for box, s in zip(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), sc, strict=True):
            if not (math.isfinite(s) and s > threshold):
                continue
            x1, y1, x2, y2 = box * self.scale
            a, b = int(np.clip(math.floor(x1), 0, gw)), int(np.clip(math.ceil(x2), 0, gw))
            c, d = int(np.clip(math.floor(y1), 0, gh)), int(np.clip(math.ceil(y2), 0, gh))
            if b > a and d > c:
                self.grid[c:d, a:b] += s - threshold
                self.n_boxes += 1

    def png(self) -> bytes | None:
        """The map over the greyed first frame, or None when nothing was above the threshold."""
        if self.grid is None or self.background is None or not self.n_boxes:
            return None
        plt = _plt()
        bh, bw = self.background.shape[:2]
        fig, ax = plt.subplots(figsize=(6.4, 6.4 * bh / bw + 0.4))
        ax.imshow(self.background, cmap="gray", alpha=0.6, extent=(0, bw, bh, 0))
        heat = np.ma.masked_less_equal(self.grid, 0.0)
        im = ax.imshow(heat, cmap="inferno", alpha=0.75, extent=(0, bw, bh, 0), interpolation="nearest")
        fig.colorbar(im, ax=ax, fraction=0.035, pad=0.02, label="sum of (score - threshold) over boxes")
        ax.set_axis_off()
        ax.set_title(f"where anomalies occurred ({self.n_boxes} objects above the threshold)", fontsize=9)
        fig.tight_layout()
        return _figure_png(fig)


def _img(data: bytes, mime: str, alt: str, cls: str = "", style: str = "") -> str:
    b64 = base64.b64encode(data).decode("ascii")
    return (f'<img alt="{html.escape(alt)}" class="{cls}" style="{style}" '
            f'src="data:{mime};base64,{b64}">')


def _fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, Mapping):
        return ", ".join(f"{k}={_fmt_value(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt_value(x) for x in v)
    return str(v)


def _table(fields: Mapping[str, Any]) -> str:
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt_value(v))}</td></tr>"
                   for k, v in fields.items() if v is not None and v != "")
    return f"<table>{rows}</table>"


def _event_rows(found: Sequence[Event], pictures: Mapping[int, EventPicture]) -> str:
    rows = []
    for i, e in enumerate(found, 1):
        pic = pictures.get(e.peak_frame)
        frame = (_img(pic.frame_jpeg, "image/jpeg", f"frame {e.peak_frame} (click for full size)", "thumb")
                 if pic else "—")
        crops = " ".join(
            f"<figure>{_img(c, 'image/jpeg', f'object score {s:.2f}', 'crop')}<figcaption>{s:.2f}"
            "</figcaption></figure>" for c, s in pic.crops) if pic and pic.crops else "—"
        rows.append(
            f"<tr><td>{i}</td><td>{e.start}–{e.end}</td><td>{fmt_time(e.start_s)}–{fmt_time(e.end_s)}</td>"
            f"<td>{e.end_s - e.start_s:.2f} s</td><td>{e.peak_score:.2f}</td><td>{e.peak_frame}</td>"
            f"<td>{frame}</td><td class='crops'>{crops}</td></tr>")
    if not rows:
        return "<p>No anomalous event above the threshold.</p>"
    return ("<table><tr><th>#</th><th>frames</th><th>time</th><th>duration</th><th>peak score</th>"
            "<th>peak frame</th><th>peak frame with boxes (click: full size)</th>"
            "<th>most anomalous objects</th></tr>" + "".join(rows) + "</table>")


_STYLE = (
    "body{font-family:sans-serif;margin:1.5em;max-width:1200px}table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:middle}"
    "th{background:#f4f4f4}.legend span{display:inline-block;width:1em;height:1em;margin:0 .3em}"
    "img.thumb{max-width:320px;cursor:zoom-in}figure{display:inline-block;margin:2px;text-align:center}"
    "figcaption{font-size:80%}video{max-width:100%}dialog{padding:0;border:0;max-width:98vw}"
    "dialog img{max-width:96vw;max-height:92vh;cursor:zoom-out}"
)
# A click on an event frame shows it full size in a dialog; a click on the dialog closes it.
_SCRIPT = (
    "<script>document.querySelectorAll('img.thumb').forEach(function(t){t.addEventListener('click',"
    "function(){var d=document.getElementById('full');document.getElementById('fullimg').src=t.src;"
    "d.showModal();});});document.getElementById('full').addEventListener('click',function(){"
    "this.close();});</script>"
)


@dataclass
class ReportContent:
    """Everything the page shows; only ``title`` and ``summary`` are required."""

    title: str
    summary: dict[str, Any]
    curve_png: bytes | None = None
    found: Sequence[Event] = ()
    pictures: Mapping[int, EventPicture] = field(default_factory=dict)
    extra_png: Mapping[str, bytes] = field(default_factory=dict)
    model_card: Mapping[str, Any] | None = None
    video: str | None = None  # file name of the annotated video beside the page
    video_note: str | None = None  # why there is no video, or what is odd about it
    data_files: Sequence[str] = ()  # names of the data files beside the page
    heatmap_png: bytes | None = None
    created: str | None = None  # ISO date-time of the run (now by default)
    version: str | None = None  # statevad version (this one by default)


def render_report(c: ReportContent) -> str:
    """The HTML page for ``c``."""
    from statevad import __version__

    created = c.created or dt.datetime.now(dt.UTC).astimezone().isoformat(timespec="seconds")
    run = {"date": created, "statevad version": c.version or __version__, **c.summary}
    if c.video:
        video = (f"<video id='annotated' controls preload='metadata' src='{html.escape(c.video)}'>"
                 f"<a href='{html.escape(c.video)}'>{html.escape(c.video)}</a></video>"
                 "<p>The strip at the bottom shows the frame score over the last frames (dashed line: the "
                 "threshold; red: above it) with the time, the current score and the threshold.</p>")
        if c.video_note:
            video += f"<p>{html.escape(c.video_note)}</p>"
    else:
        video = f"<p>{html.escape(c.video_note or 'No annotated video was written (--no-video).')}</p>"
    files = "".join(f"<li><a href='{html.escape(n)}'>{html.escape(n)}</a></li>" for n in c.data_files)
    card = (_table(c.model_card) if c.model_card else
            "<p>The model file carries no model card (it predates them): retrain to get one.</p>")
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(c.title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(c.title)}</h1>",
        "<section id='run'><h2>Run</h2>", _table(run), "</section>",
        "<section id='model-card'><h2>Model card</h2>", card, "</section>",
        "<section id='video'><h2>Annotated video</h2>", video,
        "<p class='legend'>Boxes: <span style='background:#00c800'></span>normal "
        "<span style='background:#ffa000'></span>near the threshold "
        "<span style='background:#ff0000'></span>above the threshold (score written beside the box).</p>",
        "</section>",
        "<section id='files'><h2>Data files</h2>", f"<ul>{files}</ul>" if files else "<p>none</p>",
        "</section>",
        "<section id='curve'><h2>Frame score</h2>",
        _img(c.curve_png, "image/png", "score curve", style="max-width:100%") if c.curve_png
        else "<p>(no frames)</p>", "</section>",
        "<section id='heatmap'><h2>Where in the view</h2>",
        _img(c.heatmap_png, "image/png", "heat map of anomalies", style="max-width:100%")
        if c.heatmap_png else "<p>No object was above the threshold.</p>", "</section>",
        f"<section id='events'><h2>Events ({len(c.found)})</h2>", _event_rows(c.found, c.pictures),
        "</section>",
    ]
    for name, data in c.extra_png.items():
        parts += [f"<section><h2>{html.escape(name)}</h2>", _img(data, "image/png", name), "</section>"]
    parts += ["<dialog id='full'><img id='fullimg' alt='full-size frame'></dialog>", _SCRIPT,
              "</body></html>\n"]
    return "\n".join(parts)


def model_card(ckpt: Any) -> dict[str, Any]:
    """The model card to show: the fields the model file stores about its training (``ckpt.card``, a dict,
    where the file has one) plus what every model file has (path, checksum, preset). Missing fields are
    simply not shown."""
    card: dict[str, Any] = {}
    stored = getattr(ckpt, "card", None)
    if isinstance(stored, Mapping):
        card.update({str(k): v for k, v in stored.items()})
    card.setdefault("model file", str(getattr(ckpt, "path", "") or ""))
    sha = getattr(ckpt, "sha256", None)
    if sha:
        card.setdefault("weights sha256", f"{str(sha)[:16]}…")
    preset = getattr(ckpt, "preset", None)
    name = getattr(preset, "name", None)
    if name:
        card.setdefault("preset", name)
    sel = getattr(ckpt, "selection", None)
    if isinstance(sel, Mapping) and "epsilon" in sel:  # statevad.selection's record (no label used)
        rule = sel.get("weight_rule", "grid")
        card.setdefault("scoring settings", (
            f"selected without labels ({rule} rule): eps {sel.get('epsilon')}, weights raw "
            f"{sel.get('w_raw')} / flow {sel.get('w_flow')} / motion {sel.get('w_motion')}"
            + (f" / appearance {sel['appearance'].get('w_appearance')}"
               + (" (a-priori)" if sel.get("w_appearance") is None else "")
               if isinstance(sel.get("appearance"), Mapping) else "")
            + f", {sel.get('stats_source')} statistics (pseudo-anomaly AUROC "
            f"{float(sel.get('objective', float('nan'))):.3f} on {sel.get('n_held_out')} held-out cubes)"))
    return card
