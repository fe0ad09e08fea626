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


MAX_FRAMES = 10_000_000  # the longest label sequence accepted when the input's length is not known
MAX_FILE_BYTES = 256 << 20  # a text / JSON label file larger than this is not a label file


class _Bad(ValueError):
    """A label file's content is not labels: the message says what is wrong, briefly."""


def load_labels(path: str | os.PathLike[str], n_frames: int | None = None) -> tuple[np.ndarray, int]:
    """Per-frame labels from a file, and the label of frames past its end (0 for intervals, else -1).

    Accepted: ``.npy`` or ``.txt``/``.csv`` with one 0/1 per frame; JSON as a list of 0/1,
    ``{"labels": [...]}``, ``{"intervals": [[first, last], ...], "n_frames": N}`` or a dataset
    ``labels.json`` with one clip (``{"<clip>": [[first, last], ...]}``); intervals are 0-based inclusive.

    ``n_frames`` (the input's frame count, when the caller knows it): per-frame labels of another length and
    intervals ending past it are refused. Without it, interval ends and lengths are bounded by
    :data:`MAX_FRAMES`. Every value must be exactly 0, 1 or -1 (a fraction, NaN, a string or null is refused).
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"--labels {p}: no such file (give per-frame 0/1 labels as .npy, .txt or .json)")
    limit = MAX_FRAMES if n_frames is None else int(n_frames)
    pad = -1
    try:
        if p.suffix == ".npy":
            arr = _from_array(np.load(p, allow_pickle=False, mmap_mode="r"), limit)
        elif p.suffix == ".json":
            arr, pad = _labels_from_json(json.loads(_read_text(p)), limit)
        else:
            arr = _from_text(_read_text(p), limit)
    except _Bad as exc:
        raise UserError(f"--labels {p}: {exc}") from None
    except RecursionError:
        raise UserError(f"--labels {p}: nested too deeply to be a label file") from None
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise UserError(f"--labels {p}: cannot read per-frame labels ({_short(exc)}); "
                        "expected 0/1 per frame or 0-based [first, last] intervals") from None
    if n_frames is not None and pad == -1 and len(arr) != n_frames:
        raise UserError(f"--labels {p}: {len(arr)} labels for an input of {n_frames} frames; "
                        "give one label per frame")
    return arr, pad


def labels_match(labels: np.ndarray, pad: int, n_frames: int) -> str | None:
    """Why ``labels`` (from :func:`load_labels`) do not fit an input of ``n_frames`` frames, or None.

    Per-frame labels must have exactly one label per frame; intervals (``pad`` 0) must not end past it."""
    if pad == -1 and len(labels) != n_frames:
        return f"{len(labels)} labels for an input of {n_frames} frames"
    if pad != -1 and len(labels) > n_frames and np.any(np.asarray(labels[n_frames:]) == 1):
        return f"an anomalous interval ends at frame {int(np.flatnonzero(labels == 1)[-1])}, past the " \
               f"input's last frame {n_frames - 1}"
    return None


def _short(exc: BaseException, n: int = 160) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= n else text[:n] + "..."


def _read_text(p: Path) -> str:
    if p.stat().st_size > MAX_FILE_BYTES:
        raise _Bad(f"{p.stat().st_size} bytes: too large for a label file")
    return p.read_text(encoding="utf-8-sig")  # a UTF-8 byte-order mark (Excel's CSV) is accepted


def _check_values(arr: np.ndarray) -> np.ndarray:
    if arr.size and not np.isin(arr, (-1, 0, 1)).all():
        bad = arr[~np.isin(arr, (-1, 0, 1))][0]
        raise _Bad(f"labels must be 0, 1 (or -1 for unknown), one per frame; found {bad}")
    return arr.astype(np.int8)


def _from_array(a: np.ndarray, limit: int) -> np.ndarray:
    if a.dtype.kind not in "biuf":
        raise _Bad(f"an array of {a.dtype}, not of 0/1 labels")
    if a.ndim > 1 and sum(d > 1 for d in a.shape) > 1:
        raise _Bad(f"an array of shape {a.shape}, not one label per frame")
    if a.size > limit:
        raise _Bad(f"{a.size} labels, more than the {limit} frames allowed")
    a = np.asarray(a).ravel()
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise _Bad("labels must be 0, 1 (or -1 for unknown), one per frame; found NaN or inf")
    return _check_values(a)


def _value(v: Any) -> int:
    """One JSON label: the integers 0, 1, -1 (1.0 is accepted as 1; 0.5, true, null and strings are not)."""
    if isinstance(v, bool) or not isinstance(v, int | float) or v not in (-1, 0, 1):
        raise _Bad(f"labels must be 0, 1 (or -1 for unknown), one per frame; found {_short(repr(v), 40)}")
    return int(v)


def _from_list(values: list[Any], limit: int) -> np.ndarray:
    if len(values) > limit:
        raise _Bad(f"{len(values)} labels, more than the {limit} frames allowed")
    return np.array([_value(v) for v in values], np.int8)


def _from_text(text: str, limit: int) -> np.ndarray:
    """``.txt``/``.csv``: labels separated by newlines, commas or blanks; every row as wide as the first."""
    out: list[int] = []
    width = None
    for row, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")] if "," in line else line.split()
        if width is None:
            width = len(fields)
        elif len(fields) != width:
            raise _Bad(f"row {row} has {len(fields)} field(s), the first row {width}")
        for f in fields:
            try:
                v = float(f)
            except ValueError:
                raise _Bad(f"row {row}: {_short(repr(f), 40)} is not a label 0/1") from None
            if v not in (-1.0, 0.0, 1.0):
                raise _Bad(f"row {row}: labels must be 0, 1 (or -1 for unknown); found {_short(f, 40)}")
            out.append(int(v))
            if len(out) > limit:
                raise _Bad(f"more labels than the {limit} frames allowed")
    return np.array(out, np.int8)


def _is_pairs(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, list) and len(x) == 2 for x in v) and bool(v)


def _intervals(data: Any, n: int | None, limit: int) -> np.ndarray:
    """0-based inclusive intervals -> labels; ends bounded by ``n`` (given) or ``limit``."""
    if not isinstance(data, list) or not all(isinstance(x, list) and len(x) == 2 for x in data):
        raise _Bad("intervals must be a list of [first, last] pairs")
    bound = n if n is not None else limit
    pairs = []
    for a, b in data:
        if any(isinstance(v, bool) or not isinstance(v, int) for v in (a, b)):
            raise _Bad(f"interval [{_short(repr(a), 30)}, {_short(repr(b), 30)}]: bounds must be integers")
        if b >= bound:
            raise _Bad(f"interval [{a}, {b}] ends past the last frame {bound - 1}")
        pairs.append((a, b))
    try:
        return intervals_to_labels(pairs, n)
    except ValueError as exc:
        raise _Bad(str(exc)) from None


def _labels_from_json(data: Any, limit: int) -> tuple[np.ndarray, int]:
    if isinstance(data, list):
        return (_intervals(data, None, limit), 0) if _is_pairs(data) else (_from_list(data, limit), -1)
    if isinstance(data, dict):
        if isinstance(data.get("labels"), list):
            return _from_list(data["labels"], limit), -1
        if "intervals" in data:
            n = data.get("n_frames")
            if n is not None and (isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= limit):
                raise _Bad(f"n_frames = {_short(repr(n), 40)}: expected an integer 0..{limit}")
            return _intervals(data["intervals"], n, limit), 0
        clips = data.get("clips", data)
        if isinstance(clips, dict) and len(clips) == 1:
            (only,) = clips.values()
            return _labels_from_json(only, limit)
        if isinstance(clips, dict):
            raise _Bad(f"labels for {len(clips)} clips; keep only the entry of this input")
    raise _Bad("unrecognised JSON label layout")
