"""Per-frame label files for ``statevad score --labels``: parsing every accepted layout, fitting to the input.

Accepted: ``.npy`` or ``.txt``/``.csv`` with one 0/1 per frame; JSON as a list of 0/1, ``{"labels": [...]}``,
``{"intervals": [[first, last], ...], "n_frames": N}`` or a dataset ``labels.json`` with one clip
(``{"<clip>": [[first, last], ...]}``); intervals are 0-based inclusive. Labels are ``int8``: 1 anomalous,
0 normal, -1 unknown.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from statevad.errors import UserError
from statevad.events import intervals_to_labels


def fit_labels(labels: np.ndarray | None, n: int, pad: int = -1) -> np.ndarray | None:
    """Labels cut or padded (with ``pad``; -1 = unknown) to the n scored frames."""
    if labels is None:
        return None
    lab = np.full(n, pad, np.int8)
    m = min(n, len(labels))
    lab[:m] = np.asarray(labels[:m], np.int8)
    return lab


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


def _is_pairs(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, list) and len(x) == 2 for x in v) and bool(v)


def _labels_from_json(data: Any) -> tuple[np.ndarray, int]:
    if isinstance(data, list):
        return (intervals_to_labels(data, None), 0) if _is_pairs(data) else (np.asarray(data), -1)
    if isinstance(data, dict):
        if isinstance(data.get("labels"), list):
            return np.asarray(data["labels"]), -1
        if "intervals" in data:
            n = int(data["n_frames"]) if "n_frames" in data else None
            return intervals_to_labels(data["intervals"], n), 0
        clips = data.get("clips", data)
        if isinstance(clips, dict) and len(clips) == 1:
            (only,) = clips.values()
            return _labels_from_json(only)
        if isinstance(clips, dict):
            raise ValueError(f"labels for {len(clips)} clips; keep only the entry of this input")
    raise ValueError("unrecognised JSON label layout")
