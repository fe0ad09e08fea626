"""The streaming engine: push frames one by one, get each frame's object scores as soon as they are final.

Frame t's boxes need t+1 (the hard-border triple of spec 3), its flow is t -> t+1 (spec 2), and its cube
needs the frames and flows of its elastic window (spec 4.1), so frame t is scored once frame t+l+1 has
arrived (``l`` = cube half-length). At the start of the stream the window is shifted right exactly as spec
4.1 shifts it at a clip start; when the stream ends the last l+1 frames are flushed with windows shifted
left, so a finished stream gives the same cubes as ``statevad prepare`` on the same footage. A ring buffer
holds only the frames and flows still needed (about 2l+2 plus one network batch), so memory stays bounded on
an hour-long input.

The engine knows nothing about files or models: it takes three callables (boxes, flow, network), which makes
its window logic testable against :func:`statevad.cubes.clip_cubes` and lets the speed benchmark time each
stage.

Two speed-ups (issue 20), both independent of how the network's outputs are fused into a score:

* ``overlap=True`` runs the network of one batch in a worker thread while the caller decodes, boxes, flows
  and cubes the next frames (torch, onnxruntime and OpenCV release the GIL in their kernels); at most one
  batch is in flight, so memory and latency stay bounded. Results are the same numbers in the same order.
  With ``detect_ahead`` a box stage with ``prefetch`` (the detector every k-th frame) also starts each
  detector frame's detection in its own thread as the frame arrives, one frame before its boxes are needed.
* ``score_every=k`` follows objects from frame to frame (:class:`statevad.tracks.IouTracker`) and
  sends an object's cube through the network only when its track was last scored k or more frames ago (or
  is new); in between, the object carries its track's last network errors (``FrameResult.carried``), fused
  with its own speed and class description when the network stage gives its fusion (``fuse_fn``).
  k = 1 scores every cube, exactly as before.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

import numpy as np

from statevad.config import CubeConfig
from statevad.cubes import elastic_window, flow_cubes, window_crops
from statevad.scoring import EMPTY_FRAME_SCORE
from statevad.tensors import cube_motion
from statevad.tracks import IouTracker, TrackMeans

# (prev, cur, next) -> (n, 4), or -> ((n, 4) boxes, (n, C) class descriptions) for the appearance term; a box
# callable that also takes ``flow_prev=`` (the flow prev -> cur, None at the first frame) and/or ``index=``
# (the frame's index in the stream) gets them from the engine (the detector-every-k-th-frame stage,
# stream.stages.SparseDetector, moves boxes with the flow).
BoxFn = Callable[..., np.ndarray | tuple[np.ndarray, np.ndarray]]
FlowFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
# (raw (N,T,P,P,3) uint8, flow (N,T,P,P,2) float16, speed (N,) float64[, classes=(N, C) float32 when the box
# stage gives them]) -> (e_raw, e_flow, fused) each (N,)
NetFn = Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray]]
# (e_raw (N,), e_flow (N,), speed (N,)[, classes=(N, C)]) -> fused (N,): the network stage's fusion alone, so
# an object carrying its track's network errors (score_every > 1) gets the fused score of *this* frame's
# speed and appearance (stream.stages.net_fn gives it as ``net.fuse``)
FuseFn = Callable[..., np.ndarray]

STAGES = ("decode", "boxes", "flow", "cubes", "network", "outputs")


class InputChanged(ValueError):
    """The frame size changed mid-stream: flows cannot pair frames of two sizes, so the stream ends here."""


class StageError(ValueError):
    """A stage returned something unusable (non-finite or malformed boxes, a flow of the wrong shape)."""


@dataclass
class FrameResult:
    """Everything known about one scored frame; ``frame`` is the ring-buffer image (do not keep it)."""

    index: int
    frame: np.ndarray
    boxes: np.ndarray  # (n, 4) float32, the scored objects
    e_raw: np.ndarray  # (n,) SSE
    e_flow: np.ndarray  # (n,) SSE
    scores: np.ndarray  # (n,) fused z-score (with track_frames > 1: its causal mean along the object's track)
    n_dropped: int = 0  # boxes dropped by the motion filter (spec 4.4)
    speed: np.ndarray | None = None  # (n,) mean flow speed of each object's cube, pixels per frame
    carried: np.ndarray | None = None  # (n,) bool: network errors carried from the track's last scored frame
    cube_scores: np.ndarray | None = None  # (n,) with track_frames > 1: each object's own fused score

    @property
    def score(self) -> float:
        """Frame score: max over objects, ``EMPTY_FRAME_SCORE`` when there is none (spec 7.3)."""
        return float(self.scores.max()) if len(self.scores) else EMPTY_FRAME_SCORE


@dataclass
class _Pending:
    t: int
    boxes: np.ndarray
    raw: np.ndarray
    flow: np.ndarray
    n_dropped: int
    ids: np.ndarray | None = None  # (n,) track ids (score_every > 1)
    due: np.ndarray | None = None  # (n,) bool: through the network now (else carried); None: all
    classes: np.ndarray | None = None  # (n, C) class descriptions of the boxes, when the box stage gives them


@dataclass
class _Flight:
    """A batch whose network pass runs in the worker thread."""

    batch: list[_Pending]
    speed: np.ndarray  # (n,) every cube's
    due: np.ndarray  # (n,) bool: the cubes sent through the network
    future: Future[tuple[np.ndarray, np.ndarray, np.ndarray]]
    classes: np.ndarray | None = None  # (n, C) every cube's box class description, when the stage gives them


def accepts(fn: Callable[..., object], name: str) -> bool:
    """Whether a box callable takes the keyword ``name`` (``flow_prev``, ``index``)."""
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def accepts_flow(fn: Callable[..., object]) -> bool:
    """Whether a box callable takes the ``flow_prev`` keyword."""
    return accepts(fn, "flow_prev")


class StreamScorer:
    """Push frames one by one; get :class:`FrameResult` objects, in frame order, as they become final.

    ``length`` is the cube half-length l (cubes have 2l+1 frames). ``batch_frames`` frames' cubes go
    through the network together (fewer, larger forward/backward passes are much faster on CPU). Stage
    times (seconds) accumulate in :attr:`timing`.

    ``max_objects`` caps the objects of one frame (None: no cap): a busy scene can give a thousand boxes a
    frame, each a cube through the network. The boxes that carry the most motion (sum of the flow speed
    inside the box, then the area, then the box order: deterministic) are kept, in their original order;
    :attr:`n_capped` counts the frames where the cap bit.

    ``overlap`` and ``score_every``: see the module docstring. With ``overlap`` the network time in
    :attr:`timing` is the time the caller waited for the worker (what overlapping did not hide);
    :attr:`network_busy` is the worker's own time.

    Exception safety: a stage that raises (or a ``KeyboardInterrupt`` landing inside one) leaves the engine
    as it was before the call: state is updated only after every stage of a step succeeded, and a batch
    leaves the queue only once the network has scored it, so :meth:`finish` (or another :meth:`push` of the
    same frame) still works and no frame is ever lost.
    """

    def __init__(self, *, length: int, patch: int, box_fn: BoxFn, flow_fn: FlowFn, net_fn: NetFn,
                 motion_thr: float = 0.0, batch_frames: int = 4, max_objects: int | None = None,
                 overlap: bool = False, score_every: int = 1, track_iou: float = 0.3,
                 fuse_fn: FuseFn | None = None, detect_ahead: bool = False, track_frames: int = 1) -> None:
        if length < 0 or patch < 1 or batch_frames < 1 or score_every < 1 or track_frames < 0:
            raise ValueError("length >= 0, patch >= 1, batch_frames >= 1, score_every >= 1 and "
                             "track_frames >= 0 are required")
        if max_objects is not None and max_objects < 1:
            raise ValueError("max_objects >= 1 (or None) is required")
        self.max_objects = max_objects
        self.n_capped = 0  # frames whose boxes were capped to max_objects
        self.length, self.patch, self.motion_thr = length, patch, motion_thr
        self._cube_cfg = CubeConfig(length=length, patch=patch, motion_thr=motion_thr)
        self.size = 2 * length + 1
        self.box_fn, self.flow_fn, self.net_fn, self.fuse_fn = box_fn, flow_fn, net_fn, fuse_fn
        self.batch_frames = batch_frames
        self.timing: dict[str, float] = {s: 0.0 for s in STAGES}
        self.n_cubes = 0
        self.too_short = False
        self._frames: dict[int, np.ndarray] = {}
        self._flows: dict[int, np.ndarray] = {}
        self._boxes: dict[int, np.ndarray] = {}
        self._classes: dict[int, np.ndarray | None] = {}  # each frame's boxes' class descriptions, if given
        self._n = 0  # frames received
        self._next = 0  # next target frame to cube
        self._batch: list[_Pending] = []
        self._shape: tuple[int, ...] | None = None
        self._ready: list[FrameResult] = []  # final results a failed call could not hand over yet
        self._finished = False
        self._last_done = False  # finish(): the last frame's flow and boxes are known
        self._box_flow = accepts(box_fn, "flow_prev")
        self._box_index = accepts(box_fn, "index")
        self._net_classes = accepts(net_fn, "classes")
        self.score_every = score_every
        self._track_iou = track_iou
        self._tracker = IouTracker(track_iou) if score_every > 1 or track_frames > 1 else None
        # track_frames > 1: each object's score is the causal mean of its track's last track_frames fused
        # scores (statevad.tracks.TrackMeans; replaced whole when a batch is assembled: exception safety)
        self._means = TrackMeans(track_frames) if track_frames > 1 else None
        self._scheduled: dict[int, int] = {}  # track id -> last target frame sent through the network
        self._track_out: dict[int, tuple[float, float, float]] = {}  # track id -> its last network outputs
        self.n_carried = 0  # objects whose outputs were carried instead of scored
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="statevad-net") if overlap else None
        # ``detect_ahead``: a box stage with ``prefetch(frame, index)`` (stream.stages.SparseDetector) starts
        # its detector as a frame arrives, in its own thread (the frame's boxes are asked for one frame later)
        self._prefetch: Callable[[np.ndarray, int], None] | None = (
            getattr(box_fn, "prefetch", None) if detect_ahead else None)
        self._flight: _Flight | None = None
        self.network_busy = 0.0
        self.idle_wait_s = 0.0  # flush(idle): time waiting for the pass in flight with nothing else to do

    @property
    def n_received(self) -> int:
        return self._n

    def set_score_every(self, k: int) -> None:
        """Change ``score_every`` mid-stream (a live source that falls behind carries outputs longer, see
        :class:`statevad.stream.live.CarryGovernor`). Tracks start here when there were none (k was 1): every
        object is new, so due, and the next cubes of each are scored as the new k says."""
        if k < 1:
            raise ValueError("score_every >= 1 is required")
        if k > 1 and self._tracker is None:
            self._tracker = IouTracker(self._track_iou)
        self.score_every = int(k)

    @property
    def buffered(self) -> int:
        """Frames held in the ring buffer (bounded: about 2l+2 + batch_frames)."""
        return len(self._frames)

    def push(self, frame: np.ndarray) -> list[FrameResult]:
        """Add the next frame; return the frames whose scores became final."""
        if self._finished:
            raise RuntimeError("push after finish")
        if self._shape is not None and frame.shape != self._shape:
            raise InputChanged(f"frame {self._n} has shape {frame.shape}, the stream started with "
                               f"{self._shape}")
        k = self._n
        if self._prefetch is not None:  # the detector of frame k starts now, its boxes are asked for at k+1
            self._prefetch(frame, k)
        if k >= 1:  # computed before anything changes: a failing stage leaves the engine untouched
            flow, boxes, classes = self._flow_and_boxes(k - 1, nxt=k, nxt_frame=frame)
            self._flows[k - 1], self._boxes[k - 1], self._classes[k - 1] = flow, boxes, classes
        self._shape = frame.shape
        self._frames[k] = frame
        self._n += 1
        return self._drain()

    def _drain(self) -> list[FrameResult]:
        """Cube every target frame whose window is complete; score full batches; evict."""
        out: list[FrameResult] = []
        known = self._n - 1  # frames 0..known-1 have their flow and boxes
        try:
            if self._flight is not None and self._flight.future.done():
                self._land()
            while known >= self.size and self._next + self.length <= known - 1:
                self._cube(self._next, max(self._next - self.length, 0))
                if len(self._batch) >= self.batch_frames:
                    out.extend(self._run_batch())
        except BaseException:
            if out:  # results already final must not be lost: keep them for the next call
                self._ready.extend(out)
            raise
        self._evict()
        ready, self._ready = self._ready, []
        return ready + out

    def finish(self) -> list[FrameResult]:
        """End of stream: last frame's flow/boxes with replicated borders, flush the last frames."""
        if self._finished:
            return []
        n = self._n
        if n == 0:
            self._finished = True
            return []
        if not self._last_done:
            flow, boxes, classes = self._flow_and_boxes(n - 1, nxt=n - 1)
            self._flows[n - 1], self._boxes[n - 1], self._classes[n - 1] = flow, boxes, classes
            self._last_done = True
        if n >= self.size:
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
        self._land()
        res = self._run_batch(wait=True)  # a failure here keeps the batch: finish() can be retried
        out, self._ready = self._ready + res, []
        self._finished = True
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._close_boxes()
        self._frames.clear()
        self._flows.clear()
        self._boxes.clear()
        self._classes.clear()
        return out

    def flush(self, idle: Callable[[], bool] | None = None, poll_s: float = 0.005) -> list[FrameResult]:
        """Score the cubes queued so far now, without waiting for a full batch (a live source with nothing
        else to do: lower latency); with ``overlap`` the pass starts in the worker and lands later.

        With ``idle`` (a live source's "no frame waiting"), the batch in flight is also waited for while
        ``idle()`` holds, and landed the moment it is done, then what was queued behind it: a frame's score
        is written as soon as its network pass ends instead of when the next frame arrives (a frame interval
        later). The wait ends as soon as a frame is waiting, so the overlap with the next frame is kept.
        """
        if self._finished:
            return []
        out: list[FrameResult] = []
        while True:
            if self._flight is not None and self._flight.future.done():
                self._land()
            res = self._run_batch() if self._batch and self._flight is None else []
            out, self._ready = out + self._ready + res, []
            if idle is None or self._flight is None or not idle():
                return out
            t0 = time.perf_counter()
            wait([self._flight.future], timeout=poll_s)
            self.idle_wait_s += time.perf_counter() - t0

    def take_ready(self) -> list[FrameResult]:
        """The results already final that a call which raised could not hand over (a batch landed from the
        worker just before the next network step was interrupted): a caller stopping at once writes them
        too, so no scored frame is lost."""
        out, self._ready = self._ready, []
        return out

    def close(self) -> None:
        """Release the worker thread (``finish`` does too); results still in flight are discarded."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._close_boxes()

    def _close_boxes(self) -> None:
        close = getattr(self.box_fn, "close", None)
        if self._prefetch is not None and callable(close):
            close()

    # -- internals ------------------------------------------------------------------------------
    def _flow_and_boxes(self, t: int, nxt: int, nxt_frame: np.ndarray | None = None
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Flow t -> nxt (the last frame reuses t-1 -> t), boxes of t from (t-1, t, nxt) and their class
        descriptions (None when the box stage gives none); pure."""
        f_cur = self._frames[t]
        f_nxt = self._frames[nxt] if nxt_frame is None else nxt_frame
        t0 = time.perf_counter()
        if nxt == t and t >= 1:
            flow = self._flows[t - 1]
        else:
            flow = np.asarray(self.flow_fn(f_cur, f_nxt), np.float32)
            if flow.shape != (*f_cur.shape[:2], 2):
                raise StageError(f"frame {t}: the flow stage returned shape {flow.shape}, expected "
                                 f"{(*f_cur.shape[:2], 2)}")
        t1 = time.perf_counter()
        prev = self._frames[max(t - 1, 0)]
        extra: dict[str, object] = {"flow_prev": self._flows.get(t - 1)} if self._box_flow else {}
        if self._box_index:
            extra["index"] = t
        got = self.box_fn(prev, f_cur, f_nxt, **extra)
        classes = None
        if isinstance(got, tuple):
            got, classes = got
        raw = np.asarray(got, np.float32)
        if raw.size % 4:
            raise StageError(f"frame {t}: the box source returned an array of shape {raw.shape}, "
                             "expected (n, 4)")
        boxes = raw.reshape(-1, 4)
        if not np.isfinite(boxes).all():
            raise StageError(f"frame {t}: the box source returned non-finite coordinates (NaN or inf)")
        if classes is not None:
            classes = np.asarray(classes, np.float32)
            if classes.ndim != 2 or len(classes) != len(boxes) or not np.isfinite(classes).all():
                raise StageError(f"frame {t}: the box source returned {len(boxes)} boxes but class "
                                 f"descriptions of shape {classes.shape} (or non-finite ones)")
        keep = self._cap(boxes, flow)
        if keep is not None:
            boxes = boxes[keep]
            classes = None if classes is None else classes[keep]
        t2 = time.perf_counter()
        self.timing["flow"] += t1 - t0
        self.timing["boxes"] += t2 - t1
        return flow, boxes, classes

    def _cap(self, boxes: np.ndarray, flow: np.ndarray) -> np.ndarray | None:
        """The indices of at most ``max_objects`` boxes (most motion, then largest, then first), in their
        original order; None: all of them."""
        if self.max_objects is None or len(boxes) <= self.max_objects:
            return None
        h, w = flow.shape[:2]
        speed = np.hypot(flow[..., 0].astype(np.float64), flow[..., 1].astype(np.float64))
        integral = np.zeros((h + 1, w + 1), np.float64)
        integral[1:, 1:] = speed.cumsum(0).cumsum(1)
        x1 = np.clip(np.floor(boxes[:, 0]), 0, w).astype(np.int64)
        y1 = np.clip(np.floor(boxes[:, 1]), 0, h).astype(np.int64)
        x2 = np.clip(np.ceil(boxes[:, 2]), 0, w).astype(np.int64)
        y2 = np.clip(np.ceil(boxes[:, 3]), 0, h).astype(np.int64)
        x2, y2 = np.maximum(x2, x1), np.maximum(y2, y1)
        motion = integral[y2, x2] - integral[y1, x2] - integral[y2, x1] + integral[y1, x1]
        area = (boxes[:, 2] - boxes[:, 0]).astype(np.float64) * (boxes[:, 3] - boxes[:, 1])
        order = np.lexsort((np.arange(len(boxes)), -area, -np.round(motion, 6)))
        self.n_capped += 1
        return np.sort(order[: self.max_objects])

    def _cube(self, t: int, start: int) -> None:
        t0 = time.perf_counter()
        if self._last_queued() >= t:  # queued by a call that was interrupted right after
            self._next = t + 1
            self._boxes.pop(t, None)
            self._classes.pop(t, None)
            return
        boxes, classes = self._boxes[t], self._classes.get(t)
        ids = due = None
        if len(boxes):
            win = range(start, start + self.size)
            flow, keep = flow_cubes([self._flows[i] for i in win], boxes, self._cube_cfg)
            kept = boxes[keep]
            if self._tracker is not None:  # computed first, committed with the item: a retry sees the same
                ids = self._tracker.peek(kept)
                due = np.array([t - self._scheduled.get(i, -self.score_every) >= self.score_every
                                for i in ids.tolist()], bool)
            # raw cubes only of the objects the network will see: a carried object needs its flow (its
            # speed) but not its pixels (zeros stand in, never read)
            frames = [self._frames[i] for i in win]
            if due is None or due.all():
                raw = window_crops(frames, kept, self.patch)
            else:
                raw = np.zeros((len(kept), self.size, self.patch, self.patch, 3), np.uint8)
                raw[due] = window_crops(frames, kept[due], self.patch)
            item = _Pending(t, kept, raw, flow, int((~keep).sum()),
                            classes=None if classes is None else classes[keep])
        else:
            item = _Pending(t, boxes, _no_raw(self.size, self.patch), _no_flow(self.size, self.patch), 0,
                            classes=classes)
            if self._tracker is not None:
                ids, due = self._tracker.peek(boxes), np.zeros(0, bool)
        item.ids, item.due = ids, due
        self._batch.append(item)
        if self._tracker is not None and ids is not None and due is not None:
            self._tracker.commit(item.boxes, ids)
            for i in ids[due].tolist():
                self._scheduled[i] = t
        del self._boxes[t]
        self._classes.pop(t, None)
        self._next = t + 1
        self.timing["cubes"] += time.perf_counter() - t0

    def _last_queued(self) -> int:
        if self._batch:
            return self._batch[-1].t
        if self._flight is not None and self._flight.batch:
            return self._flight.batch[-1].t
        return -1

    def _run_batch(self, wait: bool = False) -> list[FrameResult]:
        """Score the queued batch: now, or (``overlap``) in the worker, after landing the batch before it."""
        self._land()  # at most one batch in flight: memory and latency stay bounded
        batch = self._batch
        if not batch:
            return []
        flow = np.concatenate([p.flow for p in batch])
        speed = cube_motion(flow) if len(flow) else np.zeros(0, np.float64)  # reported, and the motion term's
        due = np.concatenate([p.due if p.due is not None else np.ones(len(p.raw), bool) for p in batch])
        raw = np.concatenate([p.raw for p in batch])
        classes = self._batch_classes(batch)
        net_in = (raw, flow, speed, classes) if due.all() else (
            raw[due], flow[due], speed[due], None if classes is None else classes[due])
        t0 = time.perf_counter()
        if self._pool is None or wait:
            res = self._net(*net_in)
            self.timing["network"] += time.perf_counter() - t0
            out = self._assemble(batch, speed, due, res, classes)
            self._batch = []  # only now: a network step that raised keeps its batch for the next call
            return out
        self._flight = _Flight(batch, speed, due, self._pool.submit(self._timed_net, *net_in), classes)
        self._batch = []
        return []

    def _batch_classes(self, batch: list[_Pending]) -> np.ndarray | None:
        """The batch's class descriptions when the network stage takes them (every frame then has them)."""
        if not self._net_classes:
            return None
        parts = [p.classes for p in batch if len(p.raw)]
        if any(c is None for c in parts):
            raise StageError("the network stage scores appearance, but the box stage gave no class "
                             "descriptions")
        return np.concatenate(parts) if parts else None

    def _net(self, raw: np.ndarray, flow: np.ndarray, speed: np.ndarray, classes: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not len(raw):
            z = np.zeros(0, np.float64)
            return z, z, z
        extra = {"classes": classes} if self._net_classes else {}
        out = self.net_fn(raw, flow, speed, **extra)
        e_raw, e_flow, fused = (np.asarray(a, np.float64) for a in out)
        if not (len(e_raw) == len(e_flow) == len(fused) == len(raw)):
            raise StageError(f"the network stage returned {len(fused)} scores for {len(raw)} cubes")
        return e_raw, e_flow, fused

    def _timed_net(self, raw: np.ndarray, flow: np.ndarray, speed: np.ndarray,
                   classes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        t0 = time.perf_counter()
        try:
            return self._net(raw, flow, speed, classes)
        finally:
            self.network_busy += time.perf_counter() - t0

    def _land(self) -> None:
        """Wait for the batch in flight, its results to :attr:`_ready`; a failed pass puts its batch back
        in front of the queue (scored again by the next call: nothing is lost)."""
        fl = self._flight
        if fl is None:
            return
        t0 = time.perf_counter()
        try:
            res = fl.future.result()
        except BaseException as exc:
            if not isinstance(exc, KeyboardInterrupt):  # a Ctrl-C while waiting: the pass is still good
                self._flight = None
                self._batch = fl.batch + self._batch
            raise
        finally:
            self.timing["network"] += time.perf_counter() - t0
        self._ready.extend(self._assemble(fl.batch, fl.speed, fl.due, res, fl.classes))
        self._flight = None

    def _assemble(self, batch: list[_Pending], speed: np.ndarray, due: np.ndarray,
                  res: tuple[np.ndarray, np.ndarray, np.ndarray], classes: np.ndarray | None = None
                  ) -> list[FrameResult]:
        """Per-frame results from the network outputs of the due cubes and the tracks' carried ones; with
        ``fuse_fn`` a carried object's fused score is re-made from its track's errors and its own speed (and
        class description), so the speed and appearance terms follow the object frame by frame."""
        full = [np.zeros(len(due), np.float64) for _ in range(3)]
        for f, r in zip(full, res, strict=True):
            f[due] = r
        track_out = dict(self._track_out)  # committed only when every frame is assembled
        out, a = [], 0
        for p in batch:
            b = a + len(p.raw)
            e_raw, e_flow, fused = (f[a:b] for f in full)
            carried = None
            if p.ids is not None and p.due is not None:
                carried = ~p.due
                for j, tid in enumerate(p.ids.tolist()):
                    if p.due[j]:
                        track_out[tid] = (e_raw[j], e_flow[j], fused[j])
                    else:
                        e_raw[j], e_flow[j], fused[j] = track_out[tid]
            out.append(FrameResult(p.t, self._frames[p.t], p.boxes, e_raw, e_flow, fused, p.n_dropped,
                                   speed[a:b], carried))
            a = b
        if self.fuse_fn is not None and not due.all():  # in place: the results' arrays are views of `full`
            c = ~due
            extra = {"classes": classes[c]} if classes is not None else {}
            fused_c = np.asarray(self.fuse_fn(full[0][c], full[1][c], speed[c], **extra), np.float64)
            if fused_c.shape != (int(c.sum()),):
                raise StageError(f"the fusion stage returned {fused_c.shape} scores for {int(c.sum())} cubes")
            full[2][c] = fused_c
        if self._means is not None:  # every object's fused score is final: average it along its track
            means = self._means.copy()
            for r, p in zip(out, batch, strict=True):
                if p.ids is None or not len(r.scores):
                    continue
                own = r.scores.copy()
                r.scores = means.peek(p.ids, own)
                r.cube_scores = own
                means.commit(p.ids, own)
            self._means = means
        self._track_out = track_out
        self.n_cubes += int(due.sum())
        self.n_carried += int((~due).sum())
        return out

    def _evict(self) -> None:
        """Drop frames/flows no future window, box triple or pending result can need."""
        keep_from = min(self._next - self.length, self._n - max(self.size, 3))
        if self._flight is not None and self._flight.batch:
            keep_from = min(keep_from, self._flight.batch[0].t)
        if self._batch:
            keep_from = min(keep_from, self._batch[0].t)
        if self._tracker is not None:  # forget tracks that ended long ago (bounded memory on long inputs)
            horizon = self._next - self.score_every - 2 * self.batch_frames - 8  # past every pending frame
            old = [k for k, t in self._scheduled.items() if t < horizon]
            for k in old:
                del self._scheduled[k]
                self._track_out.pop(k, None)
            if self._means is not None:
                self._means.forget(old)
        for store in (self._frames, self._flows):
            for i in [i for i in store if i < keep_from]:
                del store[i]


def _no_raw(t: int, p: int) -> np.ndarray:
    return np.zeros((0, t, p, p, 3), np.uint8)


def _no_flow(t: int, p: int) -> np.ndarray:
    return np.zeros((0, t, p, p, 2), np.float16)
