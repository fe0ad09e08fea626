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
        raise UserError(f"{work} has no prepared {split} split: {hint} --split {split}")
    d = work / split
    arrs = {}
    try:
        for k in ARRAYS:
            arrs[k] = np.load(d / f"{k}.npy", mmap_mode="r", allow_pickle=False)
        clips = json.loads((d / "frames.json").read_text())
        labels = np.load(d / "labels.npy", allow_pickle=False) if split == "test" else None
    except (OSError, ValueError) as exc:
        raise UserError(f"{work}/{split} is incomplete ({exc}): {hint}") from None
    for k in ARRAYS:
        if list(arrs[k].shape) != entry["shapes"][k]:
            raise UserError(f"{d / (k + '.npy')} has shape {arrs[k].shape}, manifest says "
                            f"{entry['shapes'][k]}: {hint}")
    if verify:
        for k in ARRAYS:
            if sha256_file(d / f"{k}.npy") != entry["checksums"][k]:
                raise UserError(f"{d / (k + '.npy')} does not match its checksum in manifest.json: {hint}")
    return SplitData(arrs["raw"], arrs["flow"], arrs["frame"], arrs["clip"], arrs["box"], clips, labels,
                     int(entry["n_frames"]), manifest)


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
                               clip=clip, box=cat(split_data.box), clips=clips, labels=labels, n_frames=start)
