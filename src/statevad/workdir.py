"""The work-directory format (docs/ARCHITECTURE.md) and read-only access to it.

``statevad prepare`` (:mod:`statevad.preparation`) writes a work directory; training, evaluation and the
benchmarks read it through :func:`read_manifest` and :func:`open_split` only, so the layout is defined in
one place. The cube arrays are memory-mapped read-only: a split of any size opens instantly.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from statevad.errors import UserError
from statevad.files import sha256_file

FORMAT = "statevad-work/1"
SPLITS = ("train", "test")
ARRAYS = ("raw", "flow", "frame", "clip", "box")
# Written when the boxes came from the detector: each cube's class description (N, 80) float16
# (statevad.boxes.describe_boxes), what the appearance term of the score reads. Work directories
# without it stay valid; they only cannot give that term.
OPTIONAL_ARRAYS = ("classes",)


def _hint(work: Path) -> str:
    return f"run `statevad prepare --root DATASET --work {work}`"


def read_manifest(work: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The work manifest, or None when absent, foreign or unsafe.

    Nothing read from the manifest becomes a path except the split names, and those must be one of
    ``SPLITS``: a crafted manifest cannot point the reader outside the work directory.
    """
    try:
        m = json.loads((Path(work) / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        return None
    splits = m.get("splits")
    if not isinstance(splits, dict) or not set(splits) <= set(SPLITS):
        return None
    if not all(isinstance(e, dict) for e in splits.values()):
        return None
    if any(m.get(k) is not None and not isinstance(m[k], dict)
           for k in ("options", "dataset", "versions", "dropped_splits")):
        return None
    return m


def require_manifest(work: str | os.PathLike[str]) -> dict[str, Any]:
    """:func:`read_manifest`, where a missing or invalid manifest is a :class:`UserError` naming the fix."""
    work = Path(work)
    manifest = read_manifest(work)
    if manifest is None:
        raise UserError(f"{work} is not a prepared work directory (no valid manifest.json): {_hint(work)}")
    return manifest


@dataclass
class SplitData:
    """A prepared split, arrays memory-mapped read-only (training/scoring index them lazily)."""

    raw: np.ndarray  # (N, T, P, P, 3) uint8
    flow: np.ndarray  # (N, T, P, P, 2) float16
    frame: np.ndarray  # (N,) int64, global frame index in the split
    clip: np.ndarray  # (N,) int32
    box: np.ndarray  # (N, 4) float32
    clips: list[dict[str, Any]]
    labels: np.ndarray | None  # (n_frames,) int8, test only
    n_frames: int
    manifest: dict[str, Any]
    classes: np.ndarray | None = None  # (N, 80) float16 class descriptions, when prepared with a detector

    def __len__(self) -> int:
        return len(self.frame)


def open_split(work: str | os.PathLike[str], split: str, *, verify: bool = False) -> SplitData:
    """Memory-map a prepared split; ``verify=True`` also checks the sha256 of every array."""
    work = Path(work)
    hint = _hint(work)
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}: choose train or test")
    manifest = require_manifest(work)
    entry = manifest.get("splits", {}).get(split)
    if entry is None:
        dropped = (manifest.get("dropped_splits") or {}).get(split)
        why = f" (it was dropped: {dropped})" if isinstance(dropped, str) else ""
        raise UserError(f"{work} has no prepared {split} split{why}: {hint} --split {split}")
    shapes, n_frames, checksums = _entry_fields(entry, work, split)
    d = work / split
    arrs = {}
    names = ARRAYS + tuple(k for k in OPTIONAL_ARRAYS if k in shapes)
    try:
        for k in names:
            arrs[k] = np.load(d / f"{k}.npy", mmap_mode="r", allow_pickle=False)
        clips = json.loads((d / "frames.json").read_text())
        labels = np.load(d / "labels.npy", allow_pickle=False) if split == "test" else None
    except (OSError, ValueError, RecursionError) as exc:
        raise UserError(f"{work}/{split} is incomplete ({_short(exc)}): {hint}") from None
    for k in names:
        if list(arrs[k].shape) != shapes[k]:
            raise UserError(f"{d / (k + '.npy')} has shape {arrs[k].shape}, manifest says "
                            f"{shapes[k]}: {hint}")
    _check_clips(clips, n_frames, d / "frames.json", hint)
    if labels is not None and (labels.shape != (n_frames,) or labels.dtype.kind not in "iub"):
        raise UserError(f"{d / 'labels.npy'} holds {labels.dtype} {labels.shape}, expected ({n_frames},) "
                        f"labels: {hint}")
    if verify:
        verify_arrays(d, checksums, hint)
    classes = arrs.get("classes")
    if classes is not None and (classes.shape[0] != arrs["frame"].shape[0] or classes.dtype != np.float16):
        raise UserError(f"{d / 'classes.npy'} holds {classes.dtype} {classes.shape}, expected "
                        f"({arrs['frame'].shape[0]}, 80) float16: {hint}")
    return SplitData(arrs["raw"], arrs["flow"], arrs["frame"], arrs["clip"], arrs["box"], clips, labels,
                     n_frames, manifest, classes)


def _short(exc: BaseException, n: int = 200) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:n]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _entry_fields(entry: dict[str, Any], work: Path,
                  split: str) -> tuple[dict[str, list[int]], int, dict[str, str]]:
    """The shapes, frame count and array checksums of a manifest's split entry, type-checked: a hand-edited
    or foreign manifest is one clear line, not a traceback."""
    where = f"{work}/manifest.json: splits.{split}"
    fix = _hint(work)
    shapes = entry.get("shapes")
    if (not isinstance(shapes, dict) or set(ARRAYS) - set(shapes)
            or not all(isinstance(shapes[k], list) and all(_is_int(v) and v >= 0 for v in shapes[k])
                       for k in ARRAYS + OPTIONAL_ARRAYS if k in shapes)):
        raise UserError(f"{where}.shapes is missing or not a list of sizes per array: {fix}")
    n_frames = entry.get("n_frames")
    if not _is_int(n_frames) or n_frames < 0:
        raise UserError(f"{where}.n_frames = {n_frames!r}: expected a frame count: {fix}")
    checksums = entry.get("checksums", {})  # absent: a hand-built or older work directory
    if not isinstance(checksums, dict) or not all(isinstance(v, str) for v in checksums.values()):
        raise UserError(f"{where}.checksums is not a table of sha256 strings: {fix}")
    return shapes, n_frames, checksums


def _check_clips(clips: Any, n_frames: int, path: Path, hint: str) -> None:
    """frames.json: one {"name", "n_frames", "start", ...} per clip, clips back to back, n_frames in all."""
    if not isinstance(clips, list):
        raise UserError(f"{path} is not a list of clips: {hint}")
    pos = 0
    for i, c in enumerate(clips):
        if (not isinstance(c, dict) or not isinstance(c.get("name"), str) or not _is_int(c.get("n_frames"))
                or not _is_int(c.get("start")) or c["n_frames"] < 0):
            raise UserError(f"{path}: entry {i} is not a clip {{\"name\": str, \"n_frames\": int, \"start\": "
                            f"int}}: {hint}")
        if c["start"] != pos:
            raise UserError(f"{path}: clip {c['name']} starts at frame {c['start']}, expected {pos}: {hint}")
        pos += c["n_frames"]
    if pos != n_frames:
        raise UserError(f"{path}: the clips hold {pos} frames, manifest.json says {n_frames}: {hint}")


def verify_arrays(folder: Path, checksums: dict[str, str], hint: str) -> None:
    """The sha256 of every merged array that has one in the manifest (all of them for a work directory that
    ``statevad prepare`` wrote). Costs one read of each file: about 0.5 s per 600 MB here, less than
    opening a video."""
    for k in ARRAYS + OPTIONAL_ARRAYS:
        if k in checksums and sha256_file(folder / f"{k}.npy") != checksums[k]:
            raise UserError(f"{folder / (k + '.npy')} does not match its checksum in manifest.json (the file "
                            f"was modified or is corrupted): {hint}")


def select_clips(split_data: SplitData, names: list[str] | None) -> SplitData:
    """A view of a split restricted to the named clips, frames re-indexed from 0 (quick partial checks).

    Cubes are stored clip by clip, so each clip's cubes are one contiguous slice of the memory map.
    """
    if not names:
        return split_data
    by_name = {str(c["name"]): i for i, c in enumerate(split_data.clips)}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise UserError(f"--clips: no test clip named {', '.join(unknown)}; available: "
                        f"{', '.join(list(by_name)[:10])}{' ...' if len(by_name) > 10 else ''}")
    clip_ids = sorted({by_name[n] for n in names})
    cube_clip = np.asarray(split_data.clip)
    parts, clips, frame_maps = [], [], []
    start = 0
    for new_id, cid in enumerate(clip_ids):
        c = dict(split_data.clips[cid])
        lo, hi = np.searchsorted(cube_clip, cid, "left"), np.searchsorted(cube_clip, cid, "right")
        parts.append((lo, hi, new_id, int(c["start"]) - start))
        frame_maps.append(np.arange(int(c["start"]), int(c["start"]) + int(c["n_frames"])))
        c["start"] = start
        clips.append(c)
        start += int(c["n_frames"])

    def cat(arr: np.ndarray) -> np.ndarray:
        return np.concatenate([np.asarray(arr[lo:hi]) for lo, hi, _, _ in parts])

    frame = np.concatenate([np.asarray(split_data.frame[lo:hi]) - shift for lo, hi, _, shift in parts])
    clip = np.concatenate([np.full(hi - lo, new_id, np.int32) for lo, hi, new_id, _ in parts])
    labels = None if split_data.labels is None else np.asarray(split_data.labels)[np.concatenate(frame_maps)]
    return dataclasses.replace(split_data, raw=cat(split_data.raw), flow=cat(split_data.flow), frame=frame,
                               clip=clip, box=cat(split_data.box), clips=clips, labels=labels, n_frames=start,
                               classes=None if split_data.classes is None else cat(split_data.classes))
