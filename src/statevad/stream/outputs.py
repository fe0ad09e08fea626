"""The output folder of ``statevad score``: per-frame results streamed to disk, summary files at the end.

``scores.csv`` and ``objects.jsonl`` are written line by line (:class:`statevad.files.StreamFile`), the
annotated video frame by frame (H.264, :mod:`statevad.video`); events are found online
(:class:`statevad.events.EventTracker`) and each keeps its peak frame and crops of its most anomalous objects
for the report (:mod:`statevad.report`), which also gets a heat map of where anomalies occurred. Every file
appears under its real name only when it is complete: at the end every file is first finished as a temporary
sibling (synced; the video reopened and its frame count checked), and only when all of them are is each
renamed into place, so a full disk (``OSError``) leaves no file of the run under a real name.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import sys
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from statevad import video as vid
from statevad import visualize as viz
from statevad.events import Event, EventTracker
from statevad.files import StreamFile, json_text, write_temp
from statevad.labels import fit_labels
from statevad.metrics import frame_auroc
from statevad.report import EventPicture, HeatMap, ReportContent, render_report
from statevad.stream.engine import FrameResult

# Exactly the files ``statevad score`` writes (``--overwrite`` deletes these and nothing else).
OUTPUT_FILES = ("scores.csv", "objects.jsonl", "events.json", "annotated.mp4", "score_curve.png",
                "report.html")
CSV_HEADER = ["frame", "time_s", "score", "n_objects", "top_x1", "top_y1", "top_x2", "top_y2", "top_score"]


@dataclass
class Outputs:
    """Streams per-frame results to the output folder and writes the summary files at the end.

    Memory: one float per frame (for the curve), the strip history (frame width), the heat map's grid, the
    open event's picture and at most ``max_thumbnails`` event pictures (a full-size JPEG and a few
    crops each).
    """

    out: Path
    threshold: float
    fps: float
    min_gap: int
    min_len: int
    video: bool = True
    max_thumbnails: int = 100
    scores: list[float] = field(default_factory=list)
    found: list[Event] = field(default_factory=list)
    thumbs: dict[int, EventPicture] = field(default_factory=dict)
    model_card: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        self._csv = StreamFile(self.out / "scores.csv")
        self._obj = StreamFile(self.out / "objects.jsonl")
        self._writer = csv.writer(self._csv.fh)
        self._writer.writerow(CSV_HEADER)
        self._tracker = EventTracker(self.threshold, self.fps, self.min_gap, self.min_len)
        self._video: viz.AnnotatedVideoWriter | None = None
        self._history: deque[float] = deque()
        self._open_thumb: tuple[int, EventPicture] | None = None
        self._heat = HeatMap()
        self.n_objects = 0
        # source frame index of each scored frame, kept only once a live source dropped frames (the CSV,
        # JSONL and events then name source frames; the tracker counts scored frames)
        self._source: list[int] | None = None

    def add(self, r: FrameResult, source_index: int | None = None) -> None:
        """Record one frame: CSV row, JSONL objects, video frame, event tracking, thumbnail.

        ``source_index``: the frame's index in a live source that dropped frames before it (default: the
        scored frames are the source's frames, ``r.index``)."""
        seq = len(self.scores)  # the event tracker's frame number
        if source_index is not None and source_index != r.index and self._source is None:
            self._source = list(range(seq))
        if self._source is not None:
            self._source.append(r.index if source_index is None else source_index)
            r = dataclasses.replace(r, index=self._source[-1])
        score = r.score
        self.scores.append(score)
        t_s = r.index / self.fps
        if len(r.scores):
            i = int(np.argmax(r.scores))
            top = [f"{v:.1f}" for v in r.boxes[i]] + [f"{r.scores[i]:.4f}"]
        else:
            top = ["", "", "", "", ""]
        self._writer.writerow([r.index, f"{t_s:.3f}", f"{score:.4f}", len(r.scores), *top])
        speeds = r.speed if r.speed is not None else [None] * len(r.scores)
        own = r.cube_scores if r.cube_scores is not None else [None] * len(r.scores)
        for b, er, ef, sp, s, sc in zip(r.boxes, r.e_raw, r.e_flow, speeds, r.scores, own, strict=True):
            row = {"frame": r.index, "time_s": round(t_s, 3), "box": [round(float(v), 1) for v in b],
                   "e_raw": float(er), "e_flow": float(ef)}
            if sp is not None:
                row["speed"] = round(float(sp), 4)
            if sc is not None:  # score.track_frames: the object's own score; "score" is its track mean
                row["score_cube"] = float(sc)
            self._obj.fh.write(json.dumps({**row, "score": float(s)}) + "\n")
        self.n_objects += len(r.scores)
        if self.video:
            self._write_video(r, t_s)
        self._heat.add(r.frame, r.boxes, r.scores, self.threshold)
        for e in self._tracker.update(score):
            self._event_closed(e)
        if self._tracker.open_peak_frame == seq:  # the open event's peak so far: keep its picture
            self._open_thumb = (seq, EventPicture(
                viz.thumbnail_jpeg(r.frame, r.boxes, r.scores, self.threshold, width=None),
                viz.object_crops(r.frame, r.boxes, r.scores)))

    def _write_video(self, r: FrameResult, t_s: float) -> None:
        h, w = r.frame.shape[:2]
        if self._video is None:
            self._video = viz.AnnotatedVideoWriter(self.out / "annotated.mp4", self.fps, (w, h),
                                                   self.threshold)
            self._history = deque(maxlen=w)
            if self._video.note:  # no browser codec in this install: say so once, at the start
                print(f"statevad score: warning: annotated.mp4 is {self._video.note}", file=sys.stderr,
                      flush=True)
        self._history.append(r.score)
        self._video.write(r.frame, r.boxes, r.scores, np.fromiter(self._history, np.float64), t_s)

    def _event_closed(self, e: Event) -> None:
        thumb = self._open_thumb[1] if self._open_thumb is not None and self._open_thumb[0] == e.peak_frame \
            else None
        if self._source is not None:  # scored-frame numbers -> source frames and times
            src = self._source
            e = dataclasses.replace(e, start=src[e.start], end=src[e.end], start_s=src[e.start] / self.fps,
                                    end_s=(src[e.end] + 1) / self.fps, peak_frame=src[e.peak_frame])
        self.found.append(e)
        if thumb is not None:
            self.thumbs[e.peak_frame] = thumb
        self._open_thumb = None
        if len(self.thumbs) > self.max_thumbnails:  # keep the most anomalous events' pictures
            peak = {ev.peak_frame: ev.peak_score for ev in self.found}
            del self.thumbs[min(self.thumbs, key=lambda f: peak.get(f, -math.inf))]

    def close(self, summary: dict[str, Any], labels: np.ndarray | None, title: str,
              labels_pad: int = -1, *, video: bool = True) -> dict[str, Any]:
        """Finish every output file; return the events document (also written to events.json).

        ``video=False`` drops the annotated video written so far (a run stopped at once). Any error (a full
        disk) removes every temporary file and publishes nothing.
        """
        for e in self._tracker.finish():
            self._event_closed(e)
        temps: list[Any] = []
        video_note: str | None = None
        try:
            self._csv.sync()
            self._obj.sync()
            if self._video is not None and not video:
                self._video.abort()
                self._video = None
                video_note = "No annotated video: the run was stopped before its end."
            if self._video is not None:
                self._video.finish()
                summary["annotated video codec"] = vid.describe(self._video.codec)
                video_note = self._video.note
            elif self.video and video_note is None:
                video_note = "No annotated video: no frame was scored."
            elif not self.video:
                video_note = "No annotated video was written (--no-video)."
            scores = np.asarray(self.scores, np.float64)
            lab = fit_labels(labels, len(scores), labels_pad)
            curve = viz.score_curve_png(scores, self.threshold, self.fps, lab, self.found, title=title)
            extra: dict[str, bytes] = {}
            auroc = frame_auroc(lab, scores) if lab is not None else None
            if auroc is not None:
                summary["AUROC (frame, --labels)"] = round(auroc, 4)
                extra["ROC"] = viz.roc_png(lab, scores, "frame-level ROC")
            doc = {**summary, "events": [e.to_dict() for e in self.found]}
            html = render_report(ReportContent(
                title, summary, curve, self.found, self.thumbs, extra, self.model_card,
                "annotated.mp4" if self._video is not None else None, video_note,
                ("scores.csv", "objects.jsonl", "events.json", "score_curve.png"), self._heat.png()))
            for name, data in (("score_curve.png", curve), ("events.json", json_text(doc).encode("utf-8")),
                               ("report.html", html.encode("utf-8"))):
                temps.append((write_temp(self.out / name, data), self.out / name))
        except BaseException:
            for tmp, _ in temps:
                tmp.unlink(missing_ok=True)
            self.abort()
            raise
        # everything is complete on disk: the renames (no new space needed) publish the run
        self._csv.publish()
        self._obj.publish()
        if self._video is not None:
            self._video.publish()
        for tmp, dest in temps:
            os.replace(tmp, dest)
        return doc

    def abort(self) -> None:
        """Drop every temporary file of the run (nothing is published)."""
        self._csv.abort()
        self._obj.abort()
        if self._video is not None:
            self._video.abort()
            self._video = None
