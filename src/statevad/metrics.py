"""Frame-level evaluation (spec 7.4): micro AUROC, macro AUROC, EER and per-clip AUROC.

The published protocol ranks *all test frames concatenated* (micro AUROC) with no smoothing and no per-clip
normalisation; that is the headline number. Macro AUROC (mean over clips that contain both classes) is
reported beside it because it is what several later papers quote, and it is insensitive to the score offset
between clips that micro AUROC punishes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from statevad.errors import UserError

# (name, start, stop) of each clip in global frame indices, stop exclusive.
ClipBounds = Sequence[tuple[str, int, int]]


def clip_bounds(clips: Sequence[dict[str, Any]]) -> list[tuple[str, int, int]]:
    """Clip bounds from the ``frames.json`` entries of a split (``name``, ``start``, ``n_frames``)."""
    return [(str(c["name"]), int(c["start"]), int(c["start"]) + int(c["n_frames"])) for c in clips]


def check_bounds(bounds: ClipBounds, n_frames: int) -> None:
    """Clip bounds must lie inside the score array and must not overlap, or per-clip figures mean nothing."""
    last = 0
    for name, start, stop in sorted(bounds, key=lambda b: b[1]):
        if start < last or stop < start or stop > n_frames:
            raise UserError(
                f"clip {name!r} spans frames [{start}, {stop}) which do not fit {n_frames} frames "
                "(overlapping or out of range): the clip list does not match the scores"
            )
        last = stop


def equal_error_rate(scores: np.ndarray, labels: np.ndarray) -> float:
    """EER: the ROC point where the false-positive rate equals the miss rate, linearly interpolated.

    Interpolating between the two ROC vertices that bracket FPR = FNR gives a value that does not depend on
    which of the two neighbouring thresholds one happens to pick (a plain argmin would).
    """
    fpr, tpr, _ = roc_curve(labels, scores)
    fnr = 1.0 - tpr
    diff = fnr - fpr  # decreasing from 1 (at fpr=0, tpr=0) to -1
    i = int(np.argmax(diff <= 0))
    if i == 0:
        return float(fpr[0])
    d0, d1 = diff[i - 1], diff[i]
    t = d0 / (d0 - d1) if d0 != d1 else 0.0
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))


def _two_classes(labels: np.ndarray) -> bool:
    return bool(labels.size) and 0 < int(labels.sum()) < labels.size


def frame_auroc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """AUROC of ``scores`` over the frames whose label is known (0/1; -1 is left out); None when those
    frames hold a single class and the AUROC is undefined."""
    labels = np.asarray(labels)
    known = labels >= 0
    y = labels[known].astype(np.int64)
    if not _two_classes(y):
        return None
    return float(roc_auc_score(y, np.asarray(scores, np.float64)[known]))


def evaluate(scores: np.ndarray, labels: np.ndarray | None, bounds: ClipBounds) -> dict[str, Any]:
    """Evaluate per-frame anomaly scores (higher = more anomalous) against 0/1 labels.

    Frames labelled -1 (unknown) are left out of every figure. Clips with a single class have no AUROC:
    their per-clip entry is ``None`` and they are skipped in the macro mean, as is customary.
    """
    if labels is None:
        raise UserError("the test split has no frame labels: AUROC needs ground truth (labels.npy)")
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.ndim != 1 or scores.shape != labels.shape:
        raise UserError(
            f"{scores.shape[0] if scores.ndim else 0} frame scores but {labels.size} labels: "
            "the scores and the ground truth must cover the same frames"
        )
    if not np.isfinite(scores).all():
        raise UserError("frame scores contain NaN or inf: rescore with a valid model")
    check_bounds(bounds, scores.size)
    known = labels >= 0
    y = labels[known].astype(np.int64)
    s = scores[known]
    if not _two_classes(y):
        raise UserError(
            "the labelled test frames contain only one class: AUROC is undefined; "
            "check the ground truth of the test split"
        )
    per_clip: dict[str, float | None] = {}
    for name, start, stop in bounds:
        k = known[start:stop]
        cy = labels[start:stop][k].astype(np.int64)
        per_clip[name] = float(roc_auc_score(cy, scores[start:stop][k])) if _two_classes(cy) else None
    valid = [v for v in per_clip.values() if v is not None]
    return {
        "micro_auroc": float(roc_auc_score(y, s)),
        "macro_auroc": float(np.mean(valid)) if valid else None,
        "eer": equal_error_rate(s, y),
        "per_clip_auroc": per_clip,
        "n_frames": int(scores.size),
        "n_labelled": int(y.size),
        "n_anomalous": int(y.sum()),
        "n_clips_macro": len(valid),
    }

