"""``statevad score``: a video, frame folder or live source through boxes -> flow -> cubes -> scores.

Frames are read as they arrive and pushed through the engine (:mod:`statevad.stream.engine`); every result
goes straight to the output folder (:mod:`statevad.stream.outputs`), so memory stays bounded on an hour-long
input: only one float per frame (the frame score, for the curve) and a capped set of small JPEG thumbnails
(one per event) are kept. The stages are the ones the model was trained with (:mod:`statevad.stream.stages`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import itertools
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from statevad.calibration import (
    BORDER_MIN_PX,
    EVENT_MIN_GAP_S,
    EVENT_MIN_LEN_S,
    check_border_min_px,
    check_input,
    check_rate,
    choose_threshold,
    skip_border_boxes,
)
from statevad.checkpoint import load_checkpoint
from statevad.config import with_streaming_defaults
from statevad.errors import UserError
from statevad.events import Event
from statevad.files import remove_stale_temps
from statevad.flow import FlowEstimator
from statevad.io import LiveSource, fps_or_default, is_url, open_source, valid_fps
from statevad.labels import labels_match
from statevad.report import model_card
from statevad.scoring import motion_zscore
from statevad.settings import resolve
from statevad.stream.engine import FrameResult, InputChanged, StageError, StreamScorer
from statevad.stream.live import (
    CarryGovernor,
    LiveFrame,
    LiveReader,
    flush_idle,
    index_ranges,
    latency_summary,
)
from statevad.stream.outputs import OUTPUT_FILES, Outputs
from statevad.stream.stages import box_fn, net_fn, require_descriptions, stage_settings, stream_boxes
from statevad.tensors import resolve_device

# Objects scored per frame at most: a busy scene can give a thousand boxes a frame (each one a cube through
# the network); past this many, the boxes that move most are kept (StreamScorer's max_objects).
DEFAULT_MAX_OBJECTS = 64


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
    min_gap_s: float = EVENT_MIN_GAP_S
    min_len_s: float = EVENT_MIN_LEN_S
    fps: float | None = None  # override the source's frame rate
    progress: bool = True
    title: str | None = None
    max_objects: int | None = DEFAULT_MAX_OBJECTS  # objects scored per frame at most (None or 0: no cap)
    overwrite: bool = False  # replace an earlier run's outputs in ``out`` (else a non-empty out is refused)
    false_alarms_per_hour: float | None = None  # threshold from the model's score distribution at this rate
    border_min_px: float = BORDER_MIN_PX  # skip boxes cut by the border with a side under this (0 = off)
    allow_mismatch: bool = False  # score an input unlike the training footage anyway (warnings only)


@dataclass
class ScoreResult:
    out: Path
    n_frames: int
    n_objects: int
    threshold: float
    threshold_rule: str
    events: list[Event]
    end_reason: str
    timing: dict[str, float]
    wall_s: float
    auroc: float | None = None
    cpu_s: float = 0.0  # process CPU time (all threads): comparable across loaded and idle machines
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    exit_code: int = 0  # 130 after a SIGINT (Ctrl-C), 143 after a SIGTERM: outputs complete all the same
    n_capped: int = 0  # frames whose objects were capped to max_objects
    latency: dict[str, float | int] = field(default_factory=dict)  # arrival -> score written, seconds
    n_dropped: int = 0  # live source: frames dropped because the scorer was slower than the source
    loop_s: float = 0.0  # wall time from the first frame read to the last output written (no model loading)
    # wall time from the first frame read to the last frame's score written: loop_s without the summary
    # files (curve, report, events) written once at the end, the rate a long live stream runs at
    stream_s: float = 0.0


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
            reason = getattr(src, "end_reason", None)  # e.g. "input stalled (no frame for 30 s)"
            if reason:
                end["reason"] = str(reason)
            return
        except (OSError, RuntimeError, ValueError, UserError, cv2.error) as exc:
            end["reason"] = f"input lost ({type(exc).__name__}: {exc})"
            return
        f = np.asarray(f)
        if f.ndim == 2:
            f = np.repeat(f[:, :, None], 3, axis=2)
        yield np.ascontiguousarray(f, dtype=np.uint8)


class _Feed:
    """The frames pushed into the engine, each with its source index and arrival time (latency, drops).

    A live source (camera, stream URL) is read by a :class:`~statevad.stream.live.LiveReader`, which drops
    frames evenly when the scorer cannot keep up; a file is read frame by frame, nothing dropped.
    """

    def __init__(self, frames: Iterator[np.ndarray], reader: LiveReader | None,
                 governor: CarryGovernor | None = None, engine: StreamScorer | None = None) -> None:
        self.reader = reader
        self.governor, self.engine = governor, engine
        if reader is not None and governor is not None:
            reader.hold_stride = governor.can_relieve
        self._items: Iterator[LiveFrame] = iter(reader) if reader is not None else self._stamp(frames)
        self.meta: dict[int, tuple[int, float]] = {}  # engine index -> (source index, arrival)
        self.latencies: list[float] = []
        self._n = 0

    @staticmethod
    def _stamp(frames: Iterator[np.ndarray]) -> Iterator[LiveFrame]:
        for i, f in enumerate(frames):
            yield LiveFrame(i, time.monotonic(), f)

    def __iter__(self) -> Iterator[np.ndarray]:
        for item in self._items:
            self.meta[self._n] = (item.index, item.arrival)
            self._n += 1
            self._govern()
            yield item.frame

    def _govern(self) -> None:
        """Behind a live source: carry outputs longer before the reader may drop frames (CarryGovernor)."""
        if self.governor is not None and self.reader is not None and self.engine is not None:
            self.governor.step(self.reader, self.engine)

    def source_index(self, index: int) -> int:
        return self.meta.get(index, (index, 0.0))[0]

    def written(self, index: int) -> None:
        item = self.meta.pop(index, None)
        if item is not None:
            self.latencies.append(time.monotonic() - item[1])


def _warn(msg: str) -> None:
    print(f"statevad score: warning: {msg}", file=sys.stderr, flush=True)


def check_options(opts: ScoreOptions) -> None:
    def positive_int(value: object, flag: str, zero_ok: bool = False) -> None:
        if value is None:
            return
        low = 0 if zero_ok else 1
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise UserError(f"{flag} must be an integer >= {0 if zero_ok else 1}, got {value!r}")

    positive_int(opts.max_frames, "--max-frames")
    positive_int(opts.batch_frames, "--batch-frames")
    positive_int(opts.max_objects, "--max-objects", zero_ok=True)
    if opts.threshold is not None:
        try:
            thr = float(opts.threshold)
        except (TypeError, ValueError):
            thr = math.nan
        if not math.isfinite(thr):
            raise UserError(f"--threshold must be a finite number (a fused z-score), got {opts.threshold!r}")
    if opts.fps is not None:
        try:
            fps = float(opts.fps)
        except (TypeError, ValueError):
            fps = math.nan
        if not (math.isfinite(fps) and fps > 0):
            raise UserError(f"--fps must be a finite frame rate > 0 (frames per second), got {opts.fps!r}")
    if opts.false_alarms_per_hour is not None:
        check_rate(opts.false_alarms_per_hour)
        if opts.threshold is not None:
            raise UserError("give either --threshold or --false-alarms-per-hour, not both")
    check_border_min_px(opts.border_min_px)


def prepare_out(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty output folder unless ``overwrite``; then delete exactly this command's files.

    Temporary files left by killed runs (dead writers) are removed first: they are never outputs.
    """
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file: give a folder for the outputs")
    if not out.is_dir():
        return
    remove_stale_temps(out)
    if not any(out.iterdir()):
        return
    if not overwrite:
        raise UserError(f"--out {out} is not empty: give a new or empty folder, or add --overwrite to "
                        f"replace its {', '.join(OUTPUT_FILES)}")
    for name in OUTPUT_FILES:
        p = out / name
        if p.is_file() or p.is_symlink():
            p.unlink()


class _Signals:
    """SIGINT/SIGTERM during a run: the first one stops reading (the frames already read are finished and
    every output written); the second stops at once (outputs for the frames already scored). Signals that
    arrive while one frame's results are being written wait until that frame is complete (``guard``)."""

    def __init__(self) -> None:
        self.first: int | None = None  # the signal that asked to stop
        self.hard = False
        self._guarded = 0
        self._pending = False
        self.done = False  # reading and scoring are over: a signal no longer interrupts the writing
        self._old: dict[int, Any] = {}

    def install(self) -> bool:
        if threading.current_thread() is not threading.main_thread():
            return False  # signal handlers exist only in the main thread: KeyboardInterrupt as before
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return True

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.first is None:
            self.first = signum
            return
        self.hard = True
        if self.done:
            return
        if self._guarded:
            self._pending = True
        else:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        self._guarded += 1
        try:
            yield
        finally:
            self._guarded -= 1
            if not self._guarded and self._pending:
                self._pending = False
                raise KeyboardInterrupt

    @property
    def exit_code(self) -> int:
        return 0 if self.first is None else 128 + int(self.first)

    @property
    def name(self) -> str:
        return "Ctrl-C" if self.first == signal.SIGINT else "SIGTERM"


def _disk_error(exc: OSError, out: Path) -> UserError:
    what = "the disk is full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else (exc.strerror or str(exc))
    where = exc.filename or out
    return UserError(f"cannot write the outputs in {out} ({what}: {where}); nothing was published: free some "
                     "space or give another --out")


@dataclass
class Scorer:
    """A model file made ready to score with some :class:`ScoreOptions`: the stages (boxes with the border
    rule, flow, network), the threshold and the event rule of ``statevad score``, built once (the network
    and the detector are the slow parts). ``statevad serve`` builds its cameras with :func:`build_scorer`
    too, so the events it stores for a file are the ones this command finds, by construction.
    """

    model_path: str
    opts: ScoreOptions
    ckpt: Any  # statevad.checkpoint.Checkpoint
    preset: Any  # statevad.config.Preset (the model's, with the settings file, --set and the flags)
    threshold: float
    threshold_rule: str
    notes: list[str]  # warnings about the threshold (a score distribution made with other settings)
    box_desc: str
    flow_cfg: Any
    box_cfg: Any
    box_spec: str | None
    detector_sha: str | None
    flow: FlowEstimator
    net: Any
    _boxes: Any = None  # the box stage built with the scorer (a reference-box stage counts frames)

    @property
    def max_objects(self) -> int | None:
        return self.opts.max_objects or None

    def boxes(self) -> Any:
        """The box stage of a new stream, with the border rule (objects cut by the frame border)."""
        stage, self._boxes = self._boxes, None
        if stage is None:
            stage, _ = box_stage(self.box_cfg, self.box_spec, self.detector_sha, self.preset.score)
        if not self.box_desc.startswith("reference boxes"):
            self._boxes = stage  # detector and motion stages hold no per-stream state: built once
        # (a reference-box stage counts frames from the stream's start: each stream gets a new one; the
        # detector-every-k-th-frame wrapper keeps the last detections: a new one per stream, same detector)
        sc = self.preset.score
        stage = stream_boxes(stage, sc.detect_every, describe=bool(sc.w_appearance))
        return skip_border_boxes(stage, float(self.opts.border_min_px))

    def engine(self, fps: float) -> StreamScorer:
        """A fresh streaming engine (one per stream: flows never pair frames of two streams) for footage at
        ``fps`` frames/s (the track mean's window may be a duration, ``score.track_seconds``)."""
        sc, cube = self.preset.score, self.preset.cube
        return StreamScorer(length=cube.length, patch=cube.patch, box_fn=self.boxes(), flow_fn=self.flow,
                            net_fn=self.net, motion_thr=cube.motion_thr, batch_frames=self.opts.batch_frames,
                            max_objects=self.max_objects, overlap=sc.overlap, score_every=sc.score_every,
                            fuse_fn=getattr(self.net, "fuse", None), detect_ahead=sc.detect_ahead,
                            track_frames=sc.track_window(fps))

    def governor(self) -> CarryGovernor:
        """For a live stream: raises ``score_every`` up to ``score.max_score_every`` (0 = the cube's length)
        while the scorer falls behind, before the reader may drop frames."""
        sc = self.preset.score
        ceiling = sc.max_score_every or self.preset.cube.frames
        return CarryGovernor(sc.score_every, max(sc.score_every, ceiling))

    def event_rule(self, fps: float) -> tuple[int, int]:
        """(min_gap, min_len) in frames at ``fps``: :class:`statevad.events.EventTracker`'s rules."""
        return max(1, round(self.opts.min_gap_s * fps)), max(1, round(self.opts.min_len_s * fps))

    def check_input(self, first: np.ndarray, fps: float, spec: str, fps_known: bool = True) -> list[str]:
        """Warnings for a stream unlike the training footage, or a UserError where its scores would be
        meaningless (see :func:`statevad.calibration.check_input`; ``allow_mismatch`` relaxes it)."""
        return check_input(self.ckpt.card, first, fps, spec, allow=self.opts.allow_mismatch,
                           fps_known=fps_known)


def box_stage(box_cfg: Any, spec: str | None, detector_sha: str | None, sc: Any) -> tuple[Any, str]:
    """The box stage (:func:`statevad.stream.stages.box_fn`); a one-line error now when the score has an
    appearance term and these boxes cannot carry class descriptions (each stream wraps the stage with
    :func:`statevad.stream.stages.stream_boxes`)."""
    stage, desc = box_fn(box_cfg, spec, detector_sha)
    if sc.w_appearance:
        require_descriptions(stage)
    return stage, desc


def build_scorer(model_path: str | os.PathLike[str], opts: ScoreOptions | None = None, *,
                 config: str | os.PathLike[str] | None = None, sets: list[str] | None = None) -> Scorer:
    """Load the model file and build what scoring with ``opts`` needs (see :class:`Scorer`).

    The scoring settings are the model's preset ← ``config`` ← ``sets`` ← the settings in ``opts``.
    """
    opts = opts or ScoreOptions()
    check_options(opts)
    model, ckpt = load_checkpoint(model_path, "cpu")
    if not ckpt.stats:
        raise UserError(f"model {model_path} carries no training statistics (needed to z-score the errors): "
                        "use a model file written by `statevad train`")
    base = dataclasses.replace(ckpt.preset, score=with_streaming_defaults(ckpt.preset.score))
    preset = resolve(base, "score", config=config, sets=sets, flags={"score": {
        "device": opts.device, "bf16": opts.bf16, "w_motion": opts.w_motion,
        "epsilon": None if opts.perturb else 0.0}})
    sc = preset.score
    model.to(resolve_device(sc.device))
    threshold, rule, notes = choose_threshold(ckpt, sc, float(opts.border_min_px), opts.threshold,
                                              opts.false_alarms_per_hour)
    box_cfg, flow_cfg, box_source, detector_sha = stage_settings(preset, ckpt.work_manifest,
                                                                 f"model file {model_path}")
    spec = opts.boxes or box_source
    boxes, box_desc = box_stage(box_cfg, spec, detector_sha, sc)
    if sc.w_motion:
        motion_zscore(np.zeros(0), ckpt.stats)  # a model file without motion statistics fails now, not later
    net = net_fn(model, ckpt.stats, sc, max(1, sc.batch_size), ckpt.appearance)
    return Scorer(str(model_path), opts, ckpt, preset, threshold, rule, notes, box_desc, flow_cfg, box_cfg,
                  spec, detector_sha, FlowEstimator(flow_cfg, sc.flow_max_side), net, boxes)


def score(input_spec: str, model_path: str | os.PathLike[str], out: str | os.PathLike[str],
          opts: ScoreOptions | None = None, *, config: str | os.PathLike[str] | None = None,
          sets: list[str] | None = None) -> ScoreResult:
    """Score ``input_spec`` with the model file; write every output into ``out``; return a summary.

    The scoring settings are the model's preset ← ``config`` (a TOML file) ← ``sets``
    (``score.FIELD=VALUE``) ← the settings in ``opts`` (see :mod:`statevad.settings`).
    """
    opts = opts or ScoreOptions()
    check_options(opts)
    out = Path(out)
    prepare_out(out, opts.overwrite)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    scorer = build_scorer(model_path, opts, config=config, sets=sets)
    for note in scorer.notes:
        _warn(note)
    ckpt, preset, sc, threshold = scorer.ckpt, scorer.preset, scorer.preset.score, scorer.threshold
    cap = scorer.max_objects

    src = open_source(input_spec, strict=False)
    if opts.fps:
        fps = float(opts.fps)
    else:
        fps = fps_or_default(getattr(src, "fps", None))
        if valid_fps(getattr(src, "fps", None)) is None:
            _warn(f"{input_spec} carries no frame rate: times and events assume {fps:g} frames/s; give --fps "
                  "to set the real one")
    try:
        engine = scorer.engine(fps)
    except BaseException:
        _close_source(src)
        raise
    total = _source_len(src)
    if opts.labels is not None and total:  # a file's length is known before scoring: check the labels now
        why = labels_match(np.asarray(opts.labels), opts.labels_pad, total)
        if why:
            _close_source(src)
            raise UserError(f"--labels do not belong to {input_spec}: {why}; give the labels of this input")
    if opts.max_frames:
        total = min(total, opts.max_frames) if total else opts.max_frames
    end = {"reason": "end of input"}
    fps_known = bool(opts.fps) or valid_fps(getattr(src, "fps", None)) is not None
    frames, mismatch = _checked_frames(src, end, scorer, fps, str(input_spec), fps_known)
    sink = Outputs(out, threshold, fps, *scorer.event_rule(fps), video=opts.video,
                   model_card=model_card(ckpt))
    # a live source is read in its own thread and thinned evenly when scoring falls behind; a file never
    reader = LiveReader(frames, fps=valid_fps(getattr(src, "fps", None))) \
        if isinstance(src, LiveSource) else None
    # behind a live source, objects are first scored less often (outputs carried longer), frames dropped last
    governor = scorer.governor() if reader is not None else None
    feed = _Feed(frames if reader is None else iter(()), reader, governor, engine)
    sig = _Signals()
    # The bar counts frames *scored* (written to the outputs), not read: the rate and ETA are the real ones;
    # the frames read ahead show as "read N". A live source has no total (no ETA).
    bar = tqdm(total=total, desc="scoring", unit="frame", disable=not opts.progress, file=sys.stderr,
               dynamic_ncols=True, smoothing=0.1)
    installed = sig.install()
    failure: UserError | None = None
    loop0 = time.perf_counter()
    try:
        with bar:
            try:
                _run(engine, sink, feed, opts.max_frames, end, bar, sig, cap)
            except (StageError, UserError) as exc:  # a stage refused its input (a NaN box, boxes run out)
                failure = UserError(f"{input_spec}: scoring stopped at frame {engine.n_received}: {exc}")
                end["reason"] = f"error ({exc})"
        stream_s = time.perf_counter() - loop0
        sig.done = True  # from here on a signal no longer interrupts: every output gets written
        if engine.n_received == 0:
            raise UserError(_nothing_read(input_spec))
        t0 = time.perf_counter()
        summary = {
            "input": str(input_spec), "model": str(model_path), "frames scored": len(sink.scores),
            "objects scored": sink.n_objects, "fps (input)": round(fps, 3),
            "threshold": round(threshold, 4), "threshold rule": scorer.threshold_rule,
            "border rule": (f"boxes touching the frame border with a side under {opts.border_min_px:g} px "
                            "are not scored" if opts.border_min_px else "off"),
            "perturbation epsilon": sc.epsilon, "w_raw": sc.w_raw, "w_flow": sc.w_flow,
            "w_motion": sc.w_motion, "boxes": scorer.box_desc,
            "flow": scorer.flow_cfg.method, "cube length": preset.cube.frames, "ended": end["reason"],
        }
        if mismatch:
            summary["input vs training footage"] = mismatch
        summary["latency (frame arrival -> score written)"] = latency_summary(feed.latencies)
        if sc.detect_every > 1:
            summary["detector every k-th frame (boxes moved by the flow in between)"] = sc.detect_every
        if sc.track_window(fps) > 1:
            summary["object score: mean over its track's last frames"] = sc.track_window(fps)
        if sc.flow_max_side:
            summary["flow computed on frames shrunk to at most (px, larger side)"] = sc.flow_max_side
        if sc.score_every > 1 or engine.n_carried:
            summary["objects scored every k-th frame"] = sc.score_every
            summary["objects carried (network errors from the track's last scored frame)"] = engine.n_carried
        if governor is not None and set(governor.frames_at) != {sc.score_every}:
            summary["live source behind: frames pushed at each k (objects scored every k-th frame)"] = {
                str(k): n for k, n in sorted(governor.frames_at.items())}
        if reader is not None:
            summary["frames read from the live source"] = reader.n_read
            summary["frames dropped (live source faster than scoring)"] = reader.n_dropped
            summary["dropped frames (source indices, first-last)"] = index_ranges(reader.dropped)
        if engine.n_capped:
            summary["max objects per frame"] = cap
            summary["frames with objects capped"] = engine.n_capped
        if engine.too_short:
            summary["note"] = f"input shorter than one cube ({preset.cube.frames} frames): nothing was scored"
        keep_video = not (sig.hard or failure is not None)
        if sink.video and not keep_video:
            summary["annotated video"] = "not written (the run was stopped before its end)"
        title = opts.title or f"statevad score: {Path(str(input_spec)).name}"
        doc = sink.close(summary, opts.labels, title, opts.labels_pad, video=keep_video)
    except OSError as exc:
        sink.abort()
        raise _disk_error(exc, out) from None
    except BaseException:
        sink.abort()
        raise
    finally:
        if installed:
            sig.restore()
        engine.close()
        if reader is None or reader.close():  # a reader still inside a read keeps the source it reads
            _close_source(src)
    if failure is not None:
        raise UserError(f"{failure}; the outputs in {out} hold the {len(sink.scores)} frames scored "
                        "before it")
    # written once, at the end: not a per-frame stage (its own entry, outside "outputs")
    engine.timing["summary files"] = time.perf_counter() - t0
    wall = time.perf_counter() - wall0
    return ScoreResult(out, len(sink.scores), sink.n_objects, threshold, scorer.threshold_rule, sink.found,
                       end["reason"],
                       dict(engine.timing), wall, doc.get("AUROC (frame, --labels)"),
                       time.process_time() - cpu0, np.asarray(sink.scores, np.float64), sig.exit_code,
                       engine.n_capped, latency_summary(feed.latencies),
                       reader.n_dropped if reader is not None else 0, time.perf_counter() - loop0, stream_s)


def _checked_frames(src: Any, end: dict[str, str], scorer: Scorer, fps: float, spec: str,
                    fps_known: bool = True) -> tuple[Iterator[np.ndarray], list[str]]:
    """The source's frames, the first one compared with the model card first (warnings, or a refusal
    before any output exists); see :meth:`Scorer.check_input`."""
    frames = _frames(src, end)
    first = next(frames, None)
    if first is None:
        return iter(()), []
    try:
        notes = scorer.check_input(first, fps, spec, fps_known=fps_known)
    except UserError:
        _close_source(src)
        raise
    for note in notes:
        _warn(note)
    return itertools.chain([first], frames), notes


def _nothing_read(spec: str) -> str:
    if is_url(str(spec)):
        return (f"stream {spec} opened but no frame could be decoded from it (for an MP4 file over HTTP the "
                "index must come first: remux it with `ffmpeg -i in.mp4 -c copy -movflags +faststart "
                "out.mp4`, or download it and score the file)")
    return f"no frame could be read from {spec}: check the path, camera index or URL"


def _run(engine: StreamScorer, sink: Outputs, feed: _Feed, max_frames: int | None,
         end: dict[str, str], bar: Any, sig: _Signals, cap: int | None) -> None:
    """The read -> push -> write loop. A signal, a lost input or a changed input size end the stream with
    every frame read scored; a second signal stops at once with the frames scored so far."""
    warned_cap = False
    frames = iter(feed)
    try:
        while True:
            if sig.first is not None:
                left = engine.n_received - len(sink.scores)
                end["reason"] = f"interrupted ({sig.name}): finished the frames already read"
                print(f"\nstatevad score: finishing {left} frames already read… Ctrl-C again to stop now",
                      file=sys.stderr, flush=True)
                break
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
            except InputChanged as exc:  # frame size changed mid-stream: cannot pair flows any more
                end["reason"] = f"input changed ({exc})"
                break
            _emit(engine, sink, results, bar, sig, feed)
            # nothing waiting from a live source: score what is queued, land the pass in flight (latency)
            _emit(engine, sink, flush_idle(engine, feed.reader), bar, sig, feed)
            if engine.n_capped and not warned_cap:
                warned_cap = True
                _warn(f"more than {cap} objects in frame {engine.n_received - 2}: scoring the {cap} that "
                      "move most (--max-objects; the frames where this happened are counted in events.json)")
        _emit(engine, sink, engine.finish(), bar, sig, feed)
    except KeyboardInterrupt:  # the second signal (or Ctrl-C without handlers): keep the frames scored
        sig.hard = True
        if sig.first is None:
            sig.first = signal.SIGINT
        end["reason"] = f"stopped at once ({sig.name} twice): the frames already scored are written"
        with contextlib.suppress(KeyboardInterrupt):  # a batch landed from the worker is scored: write it
            _emit(engine, sink, engine.take_ready(), bar, sig, feed)


def _emit(engine: StreamScorer, sink: Outputs, results: list[FrameResult], bar: Any, sig: _Signals,
          feed: _Feed) -> None:
    t0 = time.perf_counter()
    for r in results:
        with sig.guard():  # one frame's rows are written whole
            sink.add(r, feed.source_index(r.index))
        feed.written(r.index)
        bar.update(1)
    if results:
        bar.set_postfix_str(f"read {engine.n_received}", refresh=False)
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
    if res.latency.get("frames"):
        lines.append(f"latency (frame arrival -> score written): p50 {res.latency['p50_s']:.2f} s, "
                     f"p95 {res.latency['p95_s']:.2f} s"
                     + (f"; {res.n_dropped} frames dropped (live source faster than scoring, listed in "
                        "events.json)" if res.n_dropped else ""))
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
