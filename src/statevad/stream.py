"""``statevad score``: streaming boxes -> flow -> cubes -> perturbed scores on a video, folder or live source.

Frames are processed as they arrive. Frame t's boxes need t+1 (the hard-border triple of spec 3), its flow
is t -> t+1 (spec 2), and its cube needs the frames and flows of its elastic window (spec 4.1), so frame t
is scored once frame t+l+1 has arrived (``l`` = cube half-length). At the start of the stream the window is
shifted right exactly as spec 4.1 shifts it at a clip start; when the stream ends the last l+1 frames are
flushed with windows shifted left, so a finished stream gives the same cubes as ``statevad prepare`` on the
same footage. A ring buffer holds only the frames and flows still needed (about 2l+2 plus one network
batch), and every per-frame result goes straight to ``scores.csv`` / ``objects.jsonl`` / the video, so
memory stays bounded on an hour-long input. Only one float per frame (the frame score, for the curve) and
a capped set of small JPEG thumbnails (one per event) are kept.

The engine (:class:`StreamScorer`) knows nothing about files or models: it takes three callables (boxes,
flow, network), which makes its window logic testable against :func:`statevad.cubes.clip_cubes` and lets
the speed benchmark time each stage.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from statevad import visualize as viz
from statevad.errors import UserError, atomic_write_json

NO_OBJECT = viz.NO_OBJECT

# Automatic threshold (documented in README "Scoring footage"): a fused cube score is a weighted sum of two
# (three with the motion term) z-scores over the *unperturbed training* cubes, so on normal footage it has
# mean about 0 and a standard deviation of at most |w_raw| + |w_flow| (+ |w_motion|). We flag a frame when
# its most anomalous object lies AUTO_Z such deviations above the training mean. See ``auto_threshold``.
AUTO_Z = 3.0

BoxFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
FlowFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
# (raw (N,T,P,P,3) uint8, flow (N,T,P,P,2) float16) -> (e_raw, e_flow, fused) each (N,) float64
NetFn = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]

STAGES = ("decode", "boxes", "flow", "cubes", "network", "outputs")


def bundled_detector() -> Path:
    """The NanoDet-m ONNX file shipped inside the package (default detector for ``statevad score``)."""
    import statevad

    return Path(statevad.__file__).resolve().parent / "data" / "nanodet-m-416.onnx"


def auto_threshold(w_raw: float, w_flow: float, w_motion: float = 0.0, z: float = AUTO_Z) -> float:
    """Default frame threshold: ``z`` times the largest possible std of the fused training score."""
    return float(z * (abs(w_raw) + abs(w_flow) + abs(w_motion)))


# ------------------------------------------------------------------------------------------- engine


@dataclass
class FrameResult:
    """Everything known about one scored frame; ``frame`` is the ring-buffer image (do not keep it)."""

    index: int
    frame: np.ndarray
    boxes: np.ndarray  # (n, 4) float32, the scored objects
    e_raw: np.ndarray  # (n,) SSE
    e_flow: np.ndarray  # (n,) SSE
    scores: np.ndarray  # (n,) fused z-score
    n_dropped: int = 0  # boxes dropped by the motion filter (spec 4.4)
    speed: np.ndarray | None = None  # (n,) mean flow speed of each object's cube, pixels per frame

    @property
    def score(self) -> float:
        """Frame score: max over objects, ``NO_OBJECT`` when there is none (spec 7.3)."""
        return float(self.scores.max()) if len(self.scores) else NO_OBJECT


@dataclass
class _Pending:
    t: int
    boxes: np.ndarray
    raw: np.ndarray
    flow: np.ndarray
    n_dropped: int


class StreamScorer:
    """Push frames one by one; get :class:`FrameResult` objects, in frame order, as they become final.

    ``length`` is the cube half-length l (cubes have 2l+1 frames). ``batch_frames`` frames' cubes go
    through the network together (fewer, larger forward/backward passes are much faster on CPU). Stage
    times (seconds) accumulate in :attr:`timing`.
    """

    def __init__(self, *, length: int, patch: int, box_fn: BoxFn, flow_fn: FlowFn, net_fn: NetFn,
                 motion_thr: float = 0.0, batch_frames: int = 4) -> None:
        if length < 0 or patch < 1 or batch_frames < 1:
            raise ValueError("length >= 0, patch >= 1 and batch_frames >= 1 are required")
        self.length, self.patch, self.motion_thr = length, patch, motion_thr
        self.size = 2 * length + 1
        self.box_fn, self.flow_fn, self.net_fn = box_fn, flow_fn, net_fn
        self.batch_frames = batch_frames
        self.timing: dict[str, float] = {s: 0.0 for s in STAGES}
        self.n_cubes = 0
        self.too_short = False
        self._frames: dict[int, np.ndarray] = {}
        self._flows: dict[int, np.ndarray] = {}
        self._boxes: dict[int, np.ndarray] = {}
        self._n = 0  # frames received
        self._next = 0  # next target frame to cube
        self._batch: list[_Pending] = []
        self._shape: tuple[int, ...] | None = None
        self._finished = False

    @property
    def n_received(self) -> int:
        return self._n

    @property
    def buffered(self) -> int:
        """Frames held in the ring buffer (bounded: about 2l+2 + batch_frames)."""
        return len(self._frames)

    def push(self, frame: np.ndarray) -> list[FrameResult]:
        """Add the next frame; return the frames whose scores became final."""
        if self._finished:
            raise RuntimeError("push after finish")
        if self._shape is None:
            self._shape = frame.shape
        elif frame.shape != self._shape:
            raise ValueError(f"frame {self._n} has shape {frame.shape}, the stream started with "
                             f"{self._shape}")
        k = self._n
        self._frames[k] = frame
        self._n += 1
        if k >= 1:
            self._flow_and_boxes(k - 1, nxt=k)
        out: list[FrameResult] = []
        known = self._n - 1  # frames 0..known-1 have their flow and boxes
        while known >= self.size and self._next + self.length <= known - 1:
            self._cube(self._next, max(self._next - self.length, 0))
            if len(self._batch) >= self.batch_frames:
                out.extend(self._run_batch())
        self._evict()
        return out

    def finish(self) -> list[FrameResult]:
        """End of stream: last frame's flow/boxes with replicated borders, flush the last frames."""
        if self._finished:
            return []
        self._finished = True
        n = self._n
        if n == 0:
            return []
        self._flow_and_boxes(n - 1, nxt=n - 1)
        if n >= self.size:
            from statevad.cubes import elastic_window

            for t in range(self._next, n):
                self._cube(t, int(elastic_window(t, n, self.length)[0]))
        else:
            # Shorter than one cube: no window exists (spec 4.1), so these frames carry no objects.
            self.too_short = True
            empty = np.zeros((0, 4), np.float32)
            for t in range(self._next, n):
                self._batch.append(_Pending(t, empty, _no_raw(self.size, self.patch),
                                            _no_flow(self.size, self.patch), 0))
            self._next = n
        out = self._run_batch()
        self._frames.clear()
        self._flows.clear()
        self._boxes.clear()
        return out

    # -- internals ------------------------------------------------------------------------------
    def _flow_and_boxes(self, t: int, nxt: int) -> None:
        """Flow t -> nxt (the last frame reuses t-1 -> t) and boxes of t from (t-1, t, nxt)."""
        f_cur = self._frames[t]
        t0 = time.perf_counter()
        if nxt == t and t >= 1:
            self._flows[t] = self._flows[t - 1]
        else:
            self._flows[t] = np.asarray(self.flow_fn(f_cur, self._frames[nxt]), np.float32)
        t1 = time.perf_counter()
        prev = self._frames[max(t - 1, 0)]
        self._boxes[t] = np.asarray(self.box_fn(prev, f_cur, self._frames[nxt]), np.float32).reshape(-1, 4)
        t2 = time.perf_counter()
        self.timing["flow"] += t1 - t0
        self.timing["boxes"] += t2 - t1

    def _cube(self, t: int, start: int) -> None:
        from statevad.cubes import frame_cubes, motion_energy

        t0 = time.perf_counter()
        boxes = self._boxes.pop(t)
        if len(boxes):
            win = range(start, start + self.size)
            frames = np.stack([self._frames[i] for i in win])
            flows = np.stack([self._flows[i] for i in win])
            raw, fl = frame_cubes(frames, flows, boxes, self.patch)
            keep = motion_energy(fl) > self.motion_thr
            item = _Pending(t, boxes[keep], raw[keep], fl[keep].astype(np.float16), int((~keep).sum()))
        else:
            item = _Pending(t, boxes, _no_raw(self.size, self.patch), _no_flow(self.size, self.patch), 0)
        self._batch.append(item)
        self._next = t + 1
        self.timing["cubes"] += time.perf_counter() - t0

    def _run_batch(self) -> list[FrameResult]:
        batch, self._batch = self._batch, []
        if not batch:
            return []
        raw = np.concatenate([p.raw for p in batch])
        flow = np.concatenate([p.flow for p in batch])
        t0 = time.perf_counter()
        if len(raw):
            e_raw, e_flow, fused = (np.asarray(a, np.float64) for a in self.net_fn(raw, flow))
        else:
            e_raw = e_flow = fused = np.zeros(0, np.float64)
        self.timing["network"] += time.perf_counter() - t0
        from statevad.scoring import cube_motion

        speed = cube_motion(flow) if len(flow) else np.zeros(0, np.float64)  # reported per object
        self.n_cubes += len(raw)
        out, a = [], 0
        for p in batch:
            b = a + len(p.raw)
            out.append(FrameResult(p.t, self._frames[p.t], p.boxes, e_raw[a:b], e_flow[a:b], fused[a:b],
                                   p.n_dropped, speed[a:b]))
            a = b
        return out

    def _evict(self) -> None:
        """Drop frames/flows no future window, box triple or pending result can need."""
        keep_from = min(self._next - self.length, self._n - max(self.size, 3))
        if self._batch:
            keep_from = min(keep_from, self._batch[0].t)
        for store in (self._frames, self._flows):
            for i in [i for i in store if i < keep_from]:
                del store[i]


def _no_raw(t: int, p: int) -> np.ndarray:
    return np.zeros((0, t, p, p, 3), np.uint8)


def _no_flow(t: int, p: int) -> np.ndarray:
    return np.zeros((0, t, p, p, 2), np.float16)


# ------------------------------------------------------------------------------------------ outputs


class _StreamFile:
    """A text file written line by line to a hidden temp sibling and renamed into place on close."""

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.stem}.", suffix=f".tmp{dest.suffix}", dir=dest.parent)
        self.tmp = Path(tmp)
        viz.chmod_default(self.tmp)
        self.fh: IO[str] = os.fdopen(fd, "w", encoding="utf-8", newline="")

    def close(self) -> None:
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        os.replace(self.tmp, self.dest)

    def abort(self) -> None:
        self.fh.close()
        self.tmp.unlink(missing_ok=True)


CSV_HEADER = ["frame", "time_s", "score", "n_objects", "top_x1", "top_y1", "top_x2", "top_y2", "top_score"]


@dataclass
class Outputs:
    """Streams per-frame results to the output folder and writes the summary files at the end.

    Memory: one float per frame (for the curve), the strip history (frame width), the open event's
    thumbnail and at most ``max_thumbnails`` event thumbnails.
    """

    out: Path
    threshold: float
    fps: float
    min_gap: int
    min_len: int
    video: bool = True
    max_thumbnails: int = 100
    scores: list[float] = field(default_factory=list)
    found: list[viz.Event] = field(default_factory=list)
    thumbs: dict[int, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        self._csv = _StreamFile(self.out / "scores.csv")
        self._obj = _StreamFile(self.out / "objects.jsonl")
        self._writer = csv.writer(self._csv.fh)
        self._writer.writerow(CSV_HEADER)
        self._tracker = viz.EventTracker(self.threshold, self.fps, self.min_gap, self.min_len)
        self._video: viz.AnnotatedVideoWriter | None = None
        self._history: deque[float] = deque()
        self._open_thumb: tuple[int, bytes] | None = None
        self.n_objects = 0

    def add(self, r: FrameResult) -> None:
        """Record one frame: CSV row, JSONL objects, video frame, event tracking, thumbnail."""
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
        for b, er, ef, sp, s in zip(r.boxes, r.e_raw, r.e_flow, speeds, r.scores, strict=True):
            row = {"frame": r.index, "time_s": round(t_s, 3), "box": [round(float(v), 1) for v in b],
                   "e_raw": float(er), "e_flow": float(ef)}
            if sp is not None:
                row["speed"] = round(float(sp), 4)
            self._obj.fh.write(json.dumps({**row, "score": float(s)}) + "\n")
        self.n_objects += len(r.scores)
        if self.video:
            self._write_video(r)
        for e in self._tracker.update(score):
            self._event_closed(e)
        if self._tracker.open_peak_frame == r.index:
            self._open_thumb = (r.index, viz.thumbnail_jpeg(r.frame, r.boxes, r.scores, self.threshold))

    def _write_video(self, r: FrameResult) -> None:
        h, w = r.frame.shape[:2]
        if self._video is None:
            self._video = viz.AnnotatedVideoWriter(self.out / "annotated.mp4", self.fps, (w, h),
                                                   self.threshold)
            self._history = deque(maxlen=w)
        self._history.append(r.score)
        self._video.write(r.frame, r.boxes, r.scores, np.fromiter(self._history, np.float64))

    def _event_closed(self, e: viz.Event) -> None:
        self.found.append(e)
        if self._open_thumb is not None and self._open_thumb[0] == e.peak_frame:
            self.thumbs[e.peak_frame] = self._open_thumb[1]
        self._open_thumb = None
        if len(self.thumbs) > self.max_thumbnails:  # keep the most anomalous events' pictures
            peak = {ev.peak_frame: ev.peak_score for ev in self.found}
            del self.thumbs[min(self.thumbs, key=lambda f: peak.get(f, -math.inf))]

    def close(self, summary: dict[str, Any], labels: np.ndarray | None, title: str,
              labels_pad: int = -1) -> dict[str, Any]:
        """Finish every output file; return the events document (also written to events.json)."""
        for e in self._tracker.finish():
            self._event_closed(e)
        self._csv.close()
        self._obj.close()
        if self._video is not None:
            self._video.close()
        scores = np.asarray(self.scores, np.float64)
        lab = _fit_labels(labels, len(scores), labels_pad)
        curve = viz.save_score_curve(self.out / "score_curve.png", scores, self.threshold, self.fps, lab,
                                     self.found, title=title)
        extra: dict[str, bytes] = {}
        if lab is not None and _has_two_classes(lab):
            auroc = _auroc(lab, scores)
            summary["AUROC (frame, --labels)"] = round(auroc, 4)
            extra["ROC"] = viz.roc_png(lab, scores, "frame-level ROC")
        doc = {**summary, "events": [e.to_dict() for e in self.found]}
        atomic_write_json(self.out / "events.json", doc)
        viz.write_report(self.out / "report.html", title, summary, curve, self.found, self.thumbs, extra)
        for name in ("events.json", "score_curve.png", "report.html"):  # errors.atomic_* leave 0600
            viz.chmod_default(self.out / name)
        return doc

    def abort(self) -> None:
        self._csv.abort()
        self._obj.abort()
        if self._video is not None:
            self._video.abort()


def _fit_labels(labels: np.ndarray | None, n: int, pad: int = -1) -> np.ndarray | None:
    """Labels cut or padded (with ``pad``; -1 = unknown) to the n scored frames."""
    if labels is None:
        return None
    lab = np.full(n, pad, np.int8)
    m = min(n, len(labels))
    lab[:m] = np.asarray(labels[:m], np.int8)
    return lab


def _has_two_classes(lab: np.ndarray) -> bool:
    k = lab[lab >= 0]
    return bool(k.size) and 0 < int(k.sum()) < k.size


def _auroc(lab: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    known = lab >= 0
    return float(roc_auc_score(lab[known], scores[known]))


def load_labels(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """Per-frame labels from a file, and the label of frames past its end (0 for intervals, else -1).

    Accepted: ``.npy`` or ``.txt``/``.csv`` with one 0/1 per frame; JSON as a list of 0/1,
    ``{"labels": [...]}``, ``{"intervals": [[first, last], ...], "n_frames": N}`` or a dataset
    ``labels.json`` with one clip (``{"<clip>": [[first, last], ...]}``); intervals are 0-based inclusive.
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"--labels {p}: no such file (give per-frame 0/1 labels as .npy, .txt or .json)")
    pad = -1
    try:
        if p.suffix == ".npy":
            arr = np.load(p, allow_pickle=False)
        elif p.suffix == ".json":
            arr, pad = _labels_from_json(json.loads(p.read_text()))
        else:
            arr = np.array([int(float(x)) for x in p.read_text().replace(",", "\n").split()])
    except (ValueError, OSError, KeyError, TypeError) as exc:
        raise UserError(f"--labels {p}: cannot read per-frame labels ({exc}); "
                        "expected 0/1 per frame or 0-based [first, last] intervals") from None
    arr = np.asarray(arr).astype(np.int64).ravel()
    if not np.isin(arr, (-1, 0, 1)).all():
        raise UserError(f"--labels {p}: labels must be 0, 1 (or -1 for unknown), one per frame")
    return arr.astype(np.int8), pad


def _intervals(pairs: Any, n: int | None) -> np.ndarray:
    pairs = [(int(a), int(b)) for a, b in pairs]
    if any(a < 0 or b < a for a, b in pairs):
        raise ValueError(f"bad interval in {pairs}")
    lab = np.zeros(n if n is not None else max((b + 1 for _, b in pairs), default=0), np.int64)
    for a, b in pairs:
        lab[a:b + 1] = 1
    return lab


def _is_pairs(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, list) and len(x) == 2 for x in v) and bool(v)


def _labels_from_json(data: Any) -> tuple[np.ndarray, int]:
    if isinstance(data, list):
        return (_intervals(data, None), 0) if _is_pairs(data) else (np.asarray(data), -1)
    if isinstance(data, dict):
        if isinstance(data.get("labels"), list):
            return np.asarray(data["labels"]), -1
        if "intervals" in data:
            n = int(data["n_frames"]) if "n_frames" in data else None
            return _intervals(data["intervals"], n), 0
        clips = data.get("clips", data)
        if isinstance(clips, dict) and len(clips) == 1:
            (only,) = clips.values()
            return _labels_from_json(only)
        if isinstance(clips, dict):
            raise ValueError(f"labels for {len(clips)} clips; keep only the entry of this input")
    raise ValueError("unrecognised JSON label layout")


# ----------------------------------------------------------------------------------------- driver


@dataclass
class ScoreOptions:
    """``statevad score`` settings; None means "from the checkpoint" (or automatic)."""

    threshold: float | None = None
    labels: np.ndarray | None = None
    labels_pad: int = -1  # label of frames past the end of ``labels`` (0 when they came as intervals)
    max_frames: int | None = None
    perturb: bool = True
    boxes: str | None = None  # box source (auto/detector/motion/detector+motion) or a reference .npz
    device: str | None = None
    bf16: bool | None = None
    w_motion: float | None = None  # weight of the motion term (0 = STATE as published)
    video: bool = True
    batch_frames: int = 4
    min_gap_s: float = 0.5
    min_len_s: float = 0.2
    fps: float | None = None  # override the source's frame rate
    progress: bool = True
    title: str | None = None


@dataclass
class ScoreResult:
    out: Path
    n_frames: int
    n_objects: int
    threshold: float
    threshold_rule: str
    events: list[viz.Event]
    end_reason: str
    timing: dict[str, float]
    wall_s: float
    auroc: float | None = None
    cpu_s: float = 0.0  # process CPU time (all threads): comparable across loaded and idle machines
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))


def _open_source(spec: str) -> Any:
    from statevad.io import open_source

    return open_source(spec, strict=False)


def _source_fps(src: Any) -> float:
    fps = getattr(src, "fps", None)
    try:
        fps = float(fps) if fps is not None else 0.0
    except (TypeError, ValueError):
        fps = 0.0
    return fps if math.isfinite(fps) and 0.5 <= fps <= 1000 else 25.0


def _source_len(src: Any) -> int | None:
    for name in ("n_frames", "frame_count", "__len__"):
        v = getattr(src, name, None)
        try:
            v = v() if callable(v) else v
            if v is not None and int(v) > 0:
                return int(v)
        except (TypeError, ValueError):
            continue
    return None


def _frames(src: Any, end: dict[str, str]) -> Iterator[np.ndarray]:
    """Frames of a source as BGR uint8; a read error ends the stream (reason recorded in ``end``)."""
    import cv2

    it = iter(src)
    while True:
        try:
            f = next(it)
        except StopIteration:
            return
        except (OSError, RuntimeError, ValueError, UserError, cv2.error) as exc:
            end["reason"] = f"input lost ({type(exc).__name__}: {exc})"
            return
        f = np.asarray(f)
        if f.ndim == 2:
            f = np.repeat(f[:, :, None], 3, axis=2)
        yield np.ascontiguousarray(f, dtype=np.uint8)


def detector_file(recorded: str | None, sha256: str | None) -> Path:
    """The detector to score with: the model file the training cubes were made with, found by its content.

    The path recorded by ``statevad prepare`` (often another machine's) is tried first, then the bundled
    NanoDet. A different model is refused rather than used: its boxes would not be the kind of boxes the
    network was trained on, and nothing downstream would notice. Model files without a recorded checksum
    (older ones) keep the old rule: the recorded path if it exists, else the bundled detector.
    """
    from statevad.prepare import sha256_file

    paths = ([Path(recorded)] if recorded else []) + [bundled_detector()]
    found = [p.resolve() for p in paths if p.is_file()]
    candidates = list(dict.fromkeys(found))  # the recorded path is often the bundled file: hash it once
    if sha256 is None:
        return candidates[0] if candidates else bundled_detector()
    for path in candidates:
        if sha256_file(path) == sha256:
            return path
    raise UserError(f"the model was prepared with the detector {recorded or '(unnamed)'} (sha256 "
                    f"{sha256[:12]}...), which is not at that path on this machine, and the bundled "
                    f"detector {bundled_detector()} is a different model: copy that detector file to "
                    f"{recorded}, or score with --boxes motion")


def _box_fn(cfg: Any, spec: str | None, detector_sha256: str | None = None) -> tuple[BoxFn, str]:
    """The box callable and a description; ``spec`` may name a source or a reference .npz file."""
    from statevad.boxes import BoxExtractor

    if spec and (spec.endswith(".npz") or spec.endswith(".npy") or os.sep in spec):
        per_frame = _reference_boxes(Path(spec))
        state = {"t": 0}

        def ref(_p: np.ndarray, _c: np.ndarray, _n: np.ndarray) -> np.ndarray:
            t = state["t"]
            state["t"] += 1
            if t >= len(per_frame):
                raise UserError(f"--boxes {spec} has boxes for {len(per_frame)} frames; the input is longer")
            return per_frame[t]

        return ref, f"reference boxes from {spec}"
    import dataclasses

    if (spec or cfg.source).lower() != "motion":  # every other source uses the detector when there is one
        cfg = dataclasses.replace(cfg, detector_path=str(detector_file(cfg.detector_path, detector_sha256)))
    ext = BoxExtractor(cfg, spec)
    return ext, f"{ext.source} ({ext.reason})"


def stage_settings(preset: Any, work_manifest: dict[str, Any] | None
                   ) -> tuple[Any, Any, str | None, str | None]:
    """Box config, flow config, box source and detector checksum the model was *trained* with.

    Scoring must build cubes the way the training cubes were built, so the options recorded by
    ``statevad prepare`` (carried in the checkpoint) win over the preset. Reference boxes exist only for
    a benchmark's own frames, so a model trained on them scores new footage with ``auto`` boxes.
    """
    from statevad.config import BoxConfig, FlowConfig

    box, flow, source, sha = preset.box, preset.flow, None, None
    opts = (work_manifest or {}).get("options") if isinstance(work_manifest, dict) else None
    if isinstance(opts, dict):
        try:
            box = BoxConfig(**opts["box"]) if isinstance(opts.get("box"), dict) else box
            flow = FlowConfig(**opts["flow"]) if isinstance(opts.get("flow"), dict) else flow
        except TypeError:  # written by another version: keep the preset's settings
            box, flow = preset.box, preset.flow
        source = opts.get("box_source")
        sha = opts.get("detector_sha256") if isinstance(opts.get("detector_sha256"), str) else None
    if source == "reference":
        source = "auto"
    return box, flow, source, sha


def _reference_boxes(path: Path) -> list[np.ndarray]:
    """User-supplied per-frame boxes; the loader refuses pickled files unless the user opted in."""
    from statevad.boxes import load_reference_boxes

    if not path.is_file():
        raise UserError(f"--boxes {path}: no such file (give a box source name or a reference .npz)")
    return load_reference_boxes(path, None)


def _net_fn(model: Any, stats: dict[str, float], epsilon: float, w_raw: float, w_flow: float,
            w_motion: float, bf16: bool, max_batch: int) -> NetFn:
    from statevad import scoring
    from statevad.model import inference_copy

    model = inference_copy(model)  # BatchNorm folded into the convolutions: same numbers, less work

    def net(raw: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        parts = [scoring.perturbed_errors(model, raw[a:a + max_batch], flow[a:a + max_batch],
                                          epsilon=epsilon, bf16=bf16) for a in range(0, len(raw), max_batch)]
        e_raw = np.concatenate([p[0] for p in parts])
        e_flow = np.concatenate([p[1] for p in parts])
        motion = scoring.cube_motion(flow) if w_motion else None
        return e_raw, e_flow, scoring.fuse(e_raw, e_flow, stats, w_raw, w_flow, motion, w_motion)

    return net


def score(input_spec: str, model_path: str | os.PathLike[str], out: str | os.PathLike[str],
          opts: ScoreOptions | None = None) -> ScoreResult:
    """Score ``input_spec`` with the model file; write every output into ``out``; return a summary."""
    from statevad.flow import FlowEstimator
    from statevad.training import load_checkpoint, resolve_device

    opts = opts or ScoreOptions()
    if opts.max_frames is not None and opts.max_frames < 1:
        raise UserError(f"--max-frames must be >= 1, got {opts.max_frames}")
    if opts.batch_frames < 1:
        raise UserError(f"--batch-frames must be >= 1, got {opts.batch_frames}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file: give a folder for the outputs")
    wall0, cpu0 = time.perf_counter(), time.process_time()
    preset_dev = opts.device or "auto"
    model, ckpt = load_checkpoint(model_path, resolve_device(preset_dev))
    if not ckpt.stats:
        raise UserError(f"model {model_path} carries no training statistics (needed to z-score the errors): "
                        "use a model file written by `statevad train`")
    preset = ckpt.preset
    sc = preset.score if opts.w_motion is None else dataclasses.replace(preset.score, w_motion=opts.w_motion)
    epsilon = sc.epsilon if opts.perturb else 0.0
    bf16 = sc.bf16 if opts.bf16 is None else opts.bf16
    if opts.threshold is not None:
        threshold, rule = float(opts.threshold), "given (--threshold)"
    else:
        threshold = auto_threshold(sc.w_raw, sc.w_flow, w_motion=sc.w_motion)
        terms = "|w_raw| + |w_flow|" + (" + |w_motion|" if sc.w_motion else "")
        rule = f"auto: {AUTO_Z:g} x ({terms}) training-z units"
    box_cfg, flow_cfg, box_source, detector_sha = stage_settings(preset, ckpt.work_manifest)
    box_fn, box_desc = _box_fn(box_cfg, opts.boxes or box_source, detector_sha)
    flow_est = FlowEstimator(flow_cfg)
    if sc.w_motion:
        from statevad.scoring import motion_zscore

        motion_zscore(np.zeros(0), ckpt.stats)  # a model file without motion statistics fails now, not later
    net = _net_fn(model, ckpt.stats, epsilon, sc.w_raw, sc.w_flow, sc.w_motion, bf16,
                  max(1, sc.batch_size))
    engine = StreamScorer(length=preset.cube.length, patch=preset.cube.patch, box_fn=box_fn, flow_fn=flow_est,
                          net_fn=net, motion_thr=preset.cube.motion_thr, batch_frames=opts.batch_frames)

    src = _open_source(input_spec)
    fps = opts.fps or _source_fps(src)
    total = _source_len(src)
    if opts.max_frames:
        total = min(total, opts.max_frames) if total else opts.max_frames
    sink = Outputs(out, threshold, fps, max(1, round(opts.min_gap_s * fps)),
                   max(1, round(opts.min_len_s * fps)), video=opts.video)
    end = {"reason": "end of input"}
    from tqdm import tqdm

    bar = tqdm(total=total, desc="scoring", unit="frame", disable=not opts.progress, file=sys.stderr,
               dynamic_ncols=True)
    try:
        with bar:
            _run(engine, sink, _frames(src, end), opts.max_frames, end, bar)
    except BaseException:
        sink.abort()
        _close_source(src)
        raise
    _close_source(src)
    if engine.n_received == 0:
        sink.abort()
        raise UserError(f"no frame could be read from {input_spec}: check the path, camera index or URL")
    t0 = time.perf_counter()
    summary = {
        "input": str(input_spec), "model": str(model_path), "frames scored": len(sink.scores),
        "objects scored": sink.n_objects, "fps (input)": round(fps, 3),
        "threshold": round(threshold, 4), "threshold rule": rule,
        "perturbation epsilon": epsilon, "w_raw": sc.w_raw, "w_flow": sc.w_flow, "w_motion": sc.w_motion,
        "boxes": box_desc,
        "flow": flow_cfg.method, "cube length": preset.cube.frames, "ended": end["reason"],
    }
    if engine.too_short:
        summary["note"] = f"input shorter than one cube ({preset.cube.frames} frames): nothing was scored"
    doc = sink.close(summary, opts.labels, opts.title or f"statevad score: {Path(str(input_spec)).name}",
                     opts.labels_pad)
    engine.timing["outputs"] += time.perf_counter() - t0
    wall = time.perf_counter() - wall0
    return ScoreResult(out, len(sink.scores), sink.n_objects, threshold, rule, sink.found, end["reason"],
                       dict(engine.timing), wall, doc.get("AUROC (frame, --labels)"),
                       time.process_time() - cpu0, np.asarray(sink.scores, np.float64))


def _run(engine: StreamScorer, sink: Outputs, frames: Iterator[np.ndarray], max_frames: int | None,
         end: dict[str, str], bar: Any) -> None:
    """The read -> push -> write loop. Ctrl-C or a lost input end the stream; outputs stay valid."""
    try:
        while True:
            t0 = time.perf_counter()
            if max_frames is not None and engine.n_received >= max_frames:
                end["reason"] = f"--max-frames {max_frames} reached"
                break
            try:
                frame = next(frames)
            except StopIteration:
                break
            engine.timing["decode"] += time.perf_counter() - t0
            try:
                results = engine.push(frame)
            except ValueError as exc:  # frame size changed mid-stream: cannot pair flows any more
                end["reason"] = f"input changed ({exc})"
                break
            _emit(engine, sink, results)
            bar.update(1)
    except KeyboardInterrupt:
        end["reason"] = "interrupted (Ctrl-C)"
    _emit(engine, sink, engine.finish())


def _emit(engine: StreamScorer, sink: Outputs, results: list[FrameResult]) -> None:
    t0 = time.perf_counter()
    for r in results:
        sink.add(r)
    engine.timing["outputs"] += time.perf_counter() - t0


def _close_source(src: Any) -> None:
    for name in ("close", "release"):
        fn = getattr(src, name, None)
        if callable(fn):
            fn()
            return


def format_summary(res: ScoreResult) -> str:
    """The printed summary: counts, threshold, events, speed and where the outputs are."""
    lines = [f"scored {res.n_frames} frames ({res.n_objects} objects) in {res.wall_s:.1f} s "
             f"({res.n_frames / max(res.wall_s, 1e-9):.2f} frames/s); ended: {res.end_reason}",
             f"threshold {res.threshold:.3f} ({res.threshold_rule})"]
    if res.auroc is not None:
        lines.append(f"frame AUROC against --labels: {res.auroc:.4f}")
    lines.append(f"{len(res.events)} event(s)" + (":" if res.events else ""))
    for i, e in enumerate(res.events, 1):
        lines.append(f"  {i:3d}. frames {e.start}-{e.end} ({e.start_s:.2f}-{e.end_s:.2f} s), "
                     f"peak {e.peak_score:.2f} at frame {e.peak_frame}")
    lines.append(f"outputs in {res.out}: scores.csv objects.jsonl events.json "
                 + ("annotated.mp4 " if (res.out / 'annotated.mp4').exists() else "")
                 + "score_curve.png report.html")
    return "\n".join(lines)
