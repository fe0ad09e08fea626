"""A deterministic synthetic surveillance scene with exactly known anomalies.

Why: every stage needs an end-to-end input that is small, fast, licence-free and has exact frame labels, so
the fast test suite (and the demo fallback) can check that the whole chain ranks anomalies above
normal frames.

The scene imitates Ped2 in miniature: a fixed camera over a textured grey ground, textured "pedestrians"
(about 10x20 px, contrast >= 40 grey levels) walking horizontally along lanes at 1-2 px/frame in both
directions.
Test clips add anomalies, each labelled on exactly the frames where it is at least partly visible:

* ``fast``     — a pedestrian-looking object crossing at 8 px/frame;
* ``vertical`` — a pedestrian moving vertically, across the lanes;
* ``odd``      — a wide, bright chequered "cart" (36x16 px) at walking speed.

Written in the ``generic`` layout (see :mod:`statevad.datasets`): ``train/<clip>/``, ``test/<clip>/`` (PNG
frames, or lossless FFV1 ``.mkv`` files with ``video=True``) and ``labels.json`` (0-based inclusive
intervals).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from statevad.errors import UserError
from statevad.events import label_intervals

ANOMALY_KINDS = ("fast", "vertical", "odd")


@dataclass
class Mover:
    """A textured rectangle on a straight path, present during frames [t0, t1]."""

    patch: np.ndarray  # (h, w) uint8
    x0: float
    y0: float
    vx: float
    vy: float
    t0: int = 0
    t1: int = 10**9
    wrap: bool = False  # walkers re-enter on the other side, so a clip never runs out of people
    anomalous: bool = False

    def box(self, t: int, width: int) -> tuple[int, int, int, int] | None:
        if not self.t0 <= t <= self.t1:
            return None
        h, w = self.patch.shape
        x = self.x0 + self.vx * (t - self.t0)
        if self.wrap:
            x = (x + w) % (width + w) - w
        y = self.y0 + self.vy * (t - self.t0)
        x, y = int(round(x)), int(round(y))
        return x, y, x + w, y + h


def _background(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    noise = rng.normal(0.0, 1.0, size).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), 3.0)
    smooth = (smooth - smooth.mean()) / (smooth.std() + 1e-6)
    return np.clip(115 + 12 * smooth, 0, 255).astype(np.float32)


def _walker_patch(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Dark body with a lighter head band and vertical texture, clearly distinct from the ground."""
    base = rng.uniform(30, 60)
    patch = np.full((h, w), base, np.float32)
    patch[: max(3, h // 5)] = base + 140  # head: bright, so it too differs from the ground by > 40
    patch += rng.normal(0, 8, (h, w)).astype(np.float32)
    patch[:, ::3] += 20
    return np.clip(patch, 0, 255).astype(np.uint8)


def _cart_patch(w: int = 36, h: int = 16) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.where(((yy // 4) + (xx // 4)) % 2 == 0, 235, 170).astype(np.uint8)


def _walkers(rng: np.random.Generator, size: tuple[int, int], n: int) -> list[Mover]:
    height, width = size
    lanes = np.linspace(0.12 * height, 0.70 * height, 4)
    out = []
    for i in range(n):
        w, h = int(rng.integers(8, 13)), int(rng.integers(16, 25))
        direction = 1.0 if i % 2 == 0 else -1.0
        out.append(Mover(_walker_patch(rng, w, h), x0=float(rng.uniform(0, width)),
                         y0=float(lanes[i % len(lanes)] + rng.uniform(-3, 3)),
                         vx=direction * float(rng.uniform(1.0, 2.0)), vy=0.0, wrap=True))
    return out


def _anomaly(kind: str, rng: np.random.Generator, size: tuple[int, int], t0: int) -> Mover:
    height, width = size
    if kind == "fast":
        return Mover(_walker_patch(rng, 10, 20), x0=-10.0, y0=0.45 * height, vx=8.0, vy=0.0,
                     t0=t0, anomalous=True)
    if kind == "vertical":
        return Mover(_walker_patch(rng, 10, 20), x0=0.55 * width, y0=-20.0, vx=0.0, vy=3.0,
                     t0=t0, anomalous=True)
    if kind == "odd":
        return Mover(_cart_patch(), x0=-36.0, y0=0.40 * height, vx=2.0, vy=0.0, t0=t0, anomalous=True)
    raise ValueError(f"unknown anomaly kind {kind!r}; choose from {ANOMALY_KINDS}")


def _paste(canvas: np.ndarray, patch: np.ndarray, box: tuple[int, int, int, int]) -> bool:
    """Draw ``patch`` at ``box`` clipped to the canvas; True if any pixel landed inside."""
    x1, y1, x2, y2 = box
    H, W = canvas.shape
    cx1, cy1, cx2, cy2 = max(x1, 0), max(y1, 0), min(x2, W), min(y2, H)
    if cx1 >= cx2 or cy1 >= cy2:
        return False
    canvas[cy1:cy2, cx1:cx2] = patch[cy1 - y1:cy2 - y1, cx1 - x1:cx2 - x1]
    return True


def render_clip(movers: list[Mover], background: np.ndarray, n_frames: int,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Frames (n, H, W, 3) uint8 BGR and per-frame labels (1 where an anomalous mover is visible)."""
    height, width = background.shape
    frames = np.empty((n_frames, height, width, 3), np.uint8)
    labels = np.zeros(n_frames, np.uint8)
    for t in range(n_frames):
        canvas = background + rng.normal(0, 1.5, background.shape).astype(np.float32)
        for m in movers:
            box = m.box(t, width)
            if box is not None and _paste(canvas, m.patch.astype(np.float32), box) and m.anomalous:
                labels[t] = 1
        gray = np.clip(canvas, 0, 255).astype(np.uint8)
        frames[t] = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    return frames, labels


def _write_clip(folder: Path, name: str, frames: np.ndarray, video: bool) -> None:
    """PNG frames, or FFV1 in .mkv (lossless, and writable by the opencv-python wheels' bundled FFmpeg)."""
    folder.mkdir(parents=True, exist_ok=True)
    if video:
        h, w = frames.shape[1:3]
        writer = cv2.VideoWriter(str(folder / f"{name}.mkv"), cv2.VideoWriter_fourcc(*"FFV1"), 10.0, (w, h))
        if not writer.isOpened():
            raise UserError("this OpenCV build cannot write FFV1 .mkv video; use video=False (PNG frames)")
        for f in frames:
            writer.write(f)
        writer.release()
        return
    clip_dir = folder / name
    clip_dir.mkdir(parents=True, exist_ok=True)
    for t, f in enumerate(frames):
        cv2.imwrite(str(clip_dir / f"{t:04d}.png"), f)


def anomaly_schedule(n_test: int, n_frames: int) -> list[list[tuple[str, int]]]:
    """Which anomalies enter each test clip, and when: kinds cycle so that two clips already cover all three,
    and every clip keeps normal-only frames before its first anomaly."""
    out = []
    for k in range(n_test):
        if k % 2 == 0:
            out.append([(ANOMALY_KINDS[(k // 2) % 3], n_frames // 4)])
        else:
            out.append([("vertical", n_frames // 6), ("odd", n_frames // 2)])
    return out


def make_scene(out: Path, *, n_train: int = 3, n_test: int = 2, n_frames: int = 60,
               size: tuple[int, int] = (120, 160), seed: int = 0, video: bool = False) -> Path:
    """Write the scene to ``out`` (generic layout) and return ``out``.

    The scene is built in a hidden sibling folder and renamed into place, so ``out`` is either complete or
    absent (a killed run never leaves a half scene that a later run would take for a dataset).
    """
    out = Path(out)
    if n_train < 1 or n_test < 0 or n_frames < 8 or min(size) < 32:
        # Smaller scenes cannot hold an anomaly with normal frames around it (the schedule needs the room).
        raise UserError(f"synthetic scene: n_train={n_train}, n_test={n_test}, n_frames={n_frames}, "
                        f"size={size}; expected n_train >= 1, n_test >= 0, n_frames >= 8, size >= (32, 32)")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out}: already exists and is not an empty folder; remove it or choose another path")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the scene is ordinary data
    try:
        _render_scene(tmp, n_train=n_train, n_test=n_test, n_frames=n_frames, size=size, seed=seed,
                      video=video)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out


def _render_scene(out: Path, *, n_train: int, n_test: int, n_frames: int, size: tuple[int, int], seed: int,
                  video: bool) -> None:
    rng = np.random.default_rng(seed)
    background = _background(rng, size)
    schedule = anomaly_schedule(n_test, n_frames)
    for k in range(n_train):
        crng = np.random.default_rng([seed, 1, k])
        frames, _ = render_clip(_walkers(crng, size, int(crng.integers(3, 7))), background, n_frames, crng)
        _write_clip(out / "train", f"{k + 1:02d}", frames, video)
    labels: dict[str, list[list[int]]] = {}
    for k in range(n_test):
        crng = np.random.default_rng([seed, 2, k])
        movers = _walkers(crng, size, int(crng.integers(3, 7)))
        movers += [_anomaly(kind, crng, size, t0) for kind, t0 in schedule[k]]
        frames, lab = render_clip(movers, background, n_frames, crng)
        name = f"{k + 1:02d}"
        _write_clip(out / "test", name, frames, video)
        labels[name] = [list(iv) for iv in label_intervals(lab)]
    (out / "labels.json").write_text(json.dumps(labels, indent=1) + "\n")
    (out / "README.txt").write_text("Synthetic scene generated by statevad.synthetic.make_scene "
                                    f"(seed={seed}); labels.json: 0-based inclusive anomalous intervals.\n")
