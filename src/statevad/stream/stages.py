"""Checkpoint-to-stage wiring for ``statevad score``: the box, flow and network callables of the engine,
built from what the model file recorded about its training cubes.
"""

from __future__ import annotations

import dataclasses
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from statevad.appearance import AppearanceModel, appearance_term
from statevad.boxes import N_CLASSES, BoxExtractor, bundled_detector, describe_boxes, load_reference_boxes
from statevad.config import BoxConfig, FlowConfig, Preset, ScoreConfig
from statevad.errors import UserError
from statevad.files import sha256_file
from statevad.model import inference_copy
from statevad.scoring import fuse, perturbed_errors
from statevad.settings import recorded_stages
from statevad.stream.engine import BoxFn, NetFn
from statevad.stream.tracking import flow_shift


def detector_file(recorded: str | None, sha256: str | None) -> Path:
    """The detector to score with: the model file the training cubes were made with, found by its content.

    The path recorded by ``statevad prepare`` (often another machine's) is tried first, then the bundled
    NanoDet. A different model is refused rather than used: its boxes would not be the kind of boxes the
    network was trained on, and nothing downstream would notice. Model files without a recorded checksum
    (older ones) keep the old rule: the recorded path if it exists, else the bundled detector.
    """
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


def box_fn(cfg: BoxConfig, spec: str | None, detector_sha256: str | None = None) -> tuple[BoxFn, str]:
    """The box callable and a description; ``spec`` may name a source or a reference .npz file."""
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
    if (spec or cfg.source).lower() != "motion":  # every other source uses the detector when there is one
        cfg = dataclasses.replace(cfg, detector_path=str(detector_file(cfg.detector_path, detector_sha256)))
    ext = BoxExtractor(cfg, spec)
    return ext, f"{ext.source} ({ext.reason})"


class SparseDetector:
    """A box stage that runs the detector on every ``every``-th frame only (issue 20: the detector is most of
    a frame's cost once the network is cheap). On the frames in between, the previous frame's detections are
    moved by the optical flow t-1 -> t inside each box (:func:`statevad.stream.tracking.flow_shift`, clipped
    to the frame); the motion boxes (spec 3.3) are still found on every frame, outside those detections.
    With ``describe`` it also gives each box's class description (the appearance term), from the detector
    cells of the last frame it ran on: objects move a small part of their size per frame, so a box still
    overlaps its object's cells there.

    The engine passes ``flow_prev`` and the frame ``index``; the detections are kept per index (this frame's
    and the one before), so a frame whose step failed and is pushed again gets the same boxes. The detector
    runs on frame 0, on every index divisible by ``every``, and whenever the previous frame's detections or
    the flow are missing. ``every`` 1: the wrapped extractor's boxes, exactly.
    """

    def __init__(self, ext: BoxExtractor, every: int, describe: bool = False) -> None:
        self.ext, self.every, self.describe = ext, int(every), bool(describe)
        self._app: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # index -> detections, cells
        self.n_detected = 0  # frames the detector ran on
        self.n_moved = 0  # frames whose detections were moved by the flow
        self._pool: ThreadPoolExecutor | None = None
        self._ahead: dict[int, Future[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}  # index -> detection

    def prefetch(self, frame: np.ndarray, index: int) -> None:
        """Start the detector on frame ``index`` in a worker thread when that frame is a detector frame
        (``score.detect_ahead``).

        The engine calls this as the frame arrives; the frame's boxes are asked for one frame later (they
        need the next frame), so the detector runs while the flow, the cubes and the outputs of the frames
        between are computed (onnxruntime releases the GIL). Never raises: a failed detection raises where
        its boxes are asked for, as without prefetching. The boxes are the same either way.
        """
        if index % self.every or index in self._ahead:
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="statevad-detector")
        self._ahead = {k: f for k, f in self._ahead.items() if k >= index - 1}  # bounded: not yet asked for
        self._ahead[index] = self._pool.submit(self.ext.detect, frame)

    def close(self) -> None:
        """Release the detector thread (detections still running are waited for)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._ahead = {}

    def _detect(self, frame: np.ndarray, index: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # taken out when used: a step that fails (here or later) and is retried detects again, in this
        # thread, rather than re-raising a stored failure forever
        ahead = self._ahead.pop(index, None) if index is not None else None
        return ahead.result() if ahead is not None else self.ext.detect(frame)

    def __call__(self, f_prev: np.ndarray, f_cur: np.ndarray, f_next: np.ndarray,
                 flow_prev: np.ndarray | None = None, index: int | None = None
                 ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        last = self._app.get(index - 1) if index is not None else None
        if index is None or index % self.every == 0 or last is None or flow_prev is None:
            cur = self._detect(f_cur, index)
            self.n_detected += 1
        else:
            cur = (flow_shift(last[0], flow_prev), last[1], last[2])
            self.n_moved += 1
        boxes = self.ext.with_motion(f_prev, f_cur, f_next, cur[0])
        if index is not None:
            self._app = {k: v for k, v in ((index - 1, last), (index, cur)) if v is not None}
        return (boxes, describe_boxes(boxes, cur[1], cur[2])) if self.describe else boxes


def sparse_detector(stage: BoxFn, every: int) -> BoxFn:
    """``stage`` with its detector run every ``every``-th frame (:class:`SparseDetector`); unchanged when
    ``every`` is 1 or the stage has no detector (motion boxes, reference boxes)."""
    return stream_boxes(stage, every, describe=False)


def require_descriptions(stage: Any) -> None:
    """One line when the appearance term is asked of a box stage whose boxes carry no class descriptions
    (they come with the detector's boxes only: not with motion boxes or boxes read from a file)."""
    if not (isinstance(stage, BoxExtractor) and stage.describes):
        what = f"{stage.source} boxes" if isinstance(stage, BoxExtractor) else "boxes read from a file"
        raise UserError(f"score.w_appearance is set but the boxes are {what}, which carry no class "
                        "descriptions: score with detector boxes or --set score.w_appearance=0")


def stream_boxes(stage: BoxFn, every: int, describe: bool) -> BoxFn:
    """The box stage of one stream: the detector every ``every``-th frame (:class:`SparseDetector`) when
    ``every`` > 1 and the stage has a detector, the boxes' class descriptions with them when ``describe``
    (:class:`DescribedBoxes`; a one-line error for a stage without a detector)."""
    if describe:
        require_descriptions(stage)
    if every > 1 and isinstance(stage, BoxExtractor) and stage.detector is not None:
        return SparseDetector(stage, every, describe)
    return DescribedBoxes(stage) if describe else stage


def stage_settings(preset: Preset, work_manifest: dict[str, Any] | None, where: str
                   ) -> tuple[BoxConfig, FlowConfig, str | None, str | None]:
    """Box config, flow config, box source and detector checksum the model was *trained* with.

    Scoring must build cubes the way the training cubes were built, so the options recorded by
    ``statevad prepare`` (carried in the checkpoint) win over the preset. Reference boxes exist only for
    a benchmark's own frames, so a model trained on them scores new footage with ``auto`` boxes.
    """
    recorded = recorded_stages(work_manifest, where)
    box, flow = recorded.get("box", preset.box), recorded.get("flow", preset.flow)
    opts = (work_manifest or {}).get("options") if isinstance(work_manifest, dict) else None
    source = sha = None
    if isinstance(opts, dict):
        source = opts.get("box_source")
        sha = opts.get("detector_sha256") if isinstance(opts.get("detector_sha256"), str) else None
    if source == "reference":
        source = "auto"
    return box, flow, source, sha


def _reference_boxes(path: Path) -> list[np.ndarray]:
    """User-supplied per-frame boxes; the loader refuses pickled files unless the user opted in."""
    if not path.is_file():
        raise UserError(f"--boxes {path}: no such file (give a box source name or a reference .npz)")
    return load_reference_boxes(path, None)


def net_fn(model: nn.Module, stats: dict[str, float], score: ScoreConfig, max_batch: int,
           appearance: AppearanceModel | None = None) -> NetFn:
    """The network stage: perturbed errors of a batch of cubes (``max_batch`` at a time) and their fused
    score with ``score``'s epsilon and weights, on the BatchNorm-folded copy of ``model``. With
    ``score.w_appearance`` it takes the boxes' class descriptions too (``classes=``, from
    :class:`DescribedBoxes`) and adds ``appearance``'s z-scores."""
    model = inference_copy(model)  # BatchNorm folded into the convolutions: same numbers, less work

    def errors(raw: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        parts = [perturbed_errors(model, raw[a:a + max_batch], flow[a:a + max_batch], epsilon=score.epsilon,
                                  bf16=score.bf16, flow_term=score.flow_term)
                 for a in range(0, len(raw), max_batch)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def fused(e_raw: np.ndarray, e_flow: np.ndarray, speed: np.ndarray, classes: np.ndarray | None = None
              ) -> np.ndarray:
        """The fusion alone: of a batch's fresh errors, and of an object carrying its track's errors with
        its own speed and class."""
        z_app = appearance_term(appearance, classes, score.w_appearance, "the box stage") \
            if score.w_appearance else None
        return fuse(e_raw, e_flow, stats, score.w_raw, score.w_flow, speed, score.w_motion, z_app,
                    score.w_appearance)

    # two signatures: the engine hands class descriptions only to a stage that takes ``classes``
    def net(raw: np.ndarray, flow: np.ndarray,
            speed: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        e_raw, e_flow = errors(raw, flow)
        return e_raw, e_flow, fused(e_raw, e_flow, speed)

    def net_appearance(raw: np.ndarray, flow: np.ndarray, speed: np.ndarray, classes: np.ndarray | None = None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        e_raw, e_flow = errors(raw, flow)
        return e_raw, e_flow, fused(e_raw, e_flow, speed, classes)

    if score.w_appearance:
        appearance_term(appearance, np.zeros((0, N_CLASSES), np.float32), score.w_appearance, "")  # fail now
        net_appearance.fuse = fused  # type: ignore[attr-defined]
        return net_appearance
    net.fuse = fused  # type: ignore[attr-defined]
    return net


class DescribedBoxes:
    """A box stage that also gives each box's class description (for the appearance term): wraps a
    :class:`statevad.boxes.BoxExtractor` whose detector runs (the descriptions come from the same pass)."""

    def __init__(self, extractor: BoxExtractor) -> None:
        require_descriptions(extractor)
        self.extractor = extractor

    def __call__(self, f_prev: np.ndarray, f_cur: np.ndarray, f_next: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
        return self.extractor.with_classes(f_prev, f_cur, f_next)
