"""Learned appearance normality (issue 18; our addition, not in STATE): what the detector sees in each box.

The reconstruction error of a 32x32 crop does not see *what* an object is: on Ped2 the network rebuilds a
cyclist as well as a walker (docs/ANALYSIS.md, sections 5-6). The COCO detector does: each box carries the
80 class scores of the detector cells over it (:func:`statevad.boxes.describe_boxes`, from the detection
pass the boxes come from anyway). Training footage holds what is normal in the view; a box whose class
description is far from every training box's is unusual *in appearance*, whatever its speed.

Density: the mean Euclidean distance to the k nearest class descriptions in a bank of normal training
cubes (cf. Doshi & Yilmaz 2020, kNN over YOLO class probabilities; memory banks in general), z-scored with
the distances of normal cubes the bank does not hold (other clips, :func:`statevad.selection.holdout_mask`),
so it adds to STATE's z-scored errors on the same scale. Nothing here sees a test frame. Everything is
stored in the model file as one float16 tensor and four numbers (no pickle).

    fitted = fit_appearance(classes, clip, frame, seed=0)        # AppearanceModel or None
    z = fitted.zscore(query_classes)                             # (n,) ~ mean 0, std 1 on normal cubes
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from statevad.errors import UserError

K = 5  # neighbours (fixed before any run; k = 1 / 5 / 20 gave 0.883 / 0.894 / 0.899 alone on Ped2)
MAX_BANK = 8192  # normal class descriptions kept (a seeded subsample: neighbouring frames repeat)
MAX_REFERENCE = 4096  # held-out cubes whose distances give the z-score statistics
MIN_REFERENCE = 16  # fewer held-out cubes than this: no appearance model (statistics meaningless)
STAT_KEYS = ("appearance_mean", "appearance_std")  # in the model's statistics, beside raw/flow/motion


def bank_index(bank: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The bank as float32 rows and their squared norms: what :func:`knn_distance` needs of it (a scorer
    computes it once per model, not once per batch)."""
    b = torch.as_tensor(np.asarray(bank, np.float32))
    return b, (b * b).sum(1)


def knn_distance(bank: np.ndarray | torch.Tensor | tuple[torch.Tensor, torch.Tensor], query: np.ndarray,
                 k: int = K, chunk: int = 4096) -> np.ndarray:
    """Mean Euclidean distance of each query row (n, d) to its ``k`` nearest rows of ``bank`` (m, d);
    ``bank`` may be given as its :func:`bank_index`."""
    b, b_sq = bank if isinstance(bank, tuple) else bank_index(bank)
    q_all = np.asarray(query, np.float32).reshape(-1, b.shape[1])
    k = min(k, len(b))
    out = []
    for a in range(0, len(q_all), chunk):
        q = torch.from_numpy(q_all[a:a + chunk])
        d2 = (q * q).sum(1, keepdim=True) + b_sq[None] - 2 * q @ b.T  # (query, bank)
        out.append(d2.clamp_min(0).topk(k, dim=1, largest=False).values.sqrt().mean(1).numpy())
    return np.concatenate(out).astype(np.float64) if out else np.zeros(0, np.float64)


@dataclass
class AppearanceModel:
    """A bank of normal class descriptions and the z-score statistics of the distances to it."""

    bank: np.ndarray  # (m, 80) float16
    k: int
    mean: float  # of the held-out normal cubes' distances
    std: float
    n_reference: int  # held-out cubes behind mean/std

    @functools.cached_property
    def _index(self) -> tuple[torch.Tensor, torch.Tensor]:
        return bank_index(self.bank)

    def distance(self, classes: np.ndarray) -> np.ndarray:
        return knn_distance(self._index, classes, self.k)

    def zscore(self, classes: np.ndarray) -> np.ndarray:
        return (self.distance(classes) - self.mean) / self.std

    def stats(self) -> dict[str, float]:
        return {"appearance_mean": float(self.mean), "appearance_std": float(self.std)}

    def to_payload(self) -> dict[str, Any]:
        """The model file's ``appearance`` field: one tensor and plain numbers (loads with weights_only)."""
        return {"bank": torch.from_numpy(np.ascontiguousarray(self.bank, np.float16)), "k": int(self.k),
                "mean": float(self.mean), "std": float(self.std), "n_reference": int(self.n_reference)}


def from_payload(data: Any, path: Any) -> AppearanceModel | None:
    """The model file's ``appearance`` field checked (None when absent); a malformed one is one line."""
    if data is None:
        return None
    fix = "the file was modified or written by another program: retrain it"
    if not isinstance(data, dict):
        raise UserError(f"model file {path}: field 'appearance' is a {type(data).__name__}, expected dict; "
                        f"{fix}")
    bank, k, mean, std = data.get("bank"), data.get("k"), data.get("mean"), data.get("std")
    if (not isinstance(bank, torch.Tensor) or bank.ndim != 2 or len(bank) < 1 or bank.dtype != torch.float16
            or not bool(torch.isfinite(bank).all())):
        raise UserError(f"model file {path}: appearance.bank is not a finite float16 (m, d) tensor; {fix}")
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= len(bank):
        raise UserError(f"model file {path}: appearance.k = {k!r}, expected 1..{len(bank)}; {fix}")
    for name, v in (("mean", mean), ("std", std)):
        if not isinstance(v, int | float) or isinstance(v, bool) or not np.isfinite(v):
            raise UserError(f"model file {path}: appearance.{name} = {v!r} is not a number; {fix}")
    if not std > 0:
        raise UserError(f"model file {path}: appearance.std = {std!r} must be > 0; {fix}")
    return AppearanceModel(bank.numpy(), int(k), float(mean), float(std), int(data.get("n_reference", 0)))


def fit_appearance(classes: np.ndarray, clip: np.ndarray, frame: np.ndarray, *, seed: int,
                   k: int = K) -> tuple[AppearanceModel | None, str]:
    """The appearance model of normal training cubes (class descriptions (N, 80), their clip and frame),
    or None and why not. The bank is drawn from the cubes outside :func:`holdout_mask`, the statistics from
    the held-out ones: distances of cubes the bank holds would be near zero (neighbouring frames repeat)."""
    from statevad.selection import holdout_mask

    held = holdout_mask(clip, frame)
    fit_idx, ref_idx = np.flatnonzero(~held), np.flatnonzero(held)
    if len(ref_idx) < MIN_REFERENCE or len(fit_idx) < k:
        return None, (f"only {len(ref_idx)} held-out and {len(fit_idx)} other training cube(s): too few for "
                      "the appearance term (train on more footage)")
    rng = np.random.default_rng([seed, 0xA99])
    bank_idx = np.sort(rng.choice(fit_idx, size=min(MAX_BANK, len(fit_idx)), replace=False))
    ref_idx = np.sort(rng.choice(ref_idx, size=min(MAX_REFERENCE, len(ref_idx)), replace=False))
    bank = np.asarray(classes[bank_idx], np.float16)
    d = knn_distance(bank, np.asarray(classes[ref_idx], np.float32), k)
    if not d.std() > 0:
        return None, "every held-out cube has the same class description: the appearance term is undefined"
    return AppearanceModel(bank, k, float(d.mean()), float(d.std()), len(ref_idx)), (
        f"bank of {len(bank_idx)} training cubes, statistics of {len(ref_idx)} held-out ones")


def appearance_term(fitted: AppearanceModel | None, classes: np.ndarray | None, weight: float,
                    where: str) -> np.ndarray | None:
    """The z-scores the fusion adds with ``weight`` (None when the weight is 0); one clear line when the
    model has no appearance model or ``where`` (the cubes' source) has no class descriptions."""
    if not weight:
        return None
    if fitted is None:
        raise UserError("score.w_appearance is set but the model has no appearance model (it was trained "
                        "without the detector's class descriptions): score with --set score.w_appearance=0, "
                        "or retrain on a work directory prepared with detector boxes")
    if classes is None:
        raise UserError(f"score.w_appearance is set but {where} has no class descriptions of its boxes (they "
                        "come with detector boxes): prepare it with detector boxes (`statevad prepare "
                        "--boxes detector+motion`), or score with --set score.w_appearance=0")
    return fitted.zscore(np.asarray(classes, np.float32))
