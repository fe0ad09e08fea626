"""Label-free selection of the scoring settings (issue 18): held-out normal clips against pseudo-anomalies.

A user's footage has no labels, so epsilon and the fusion weights (incl. the motion term) cannot be chosen on
anomalies. Instead, training keeps some normal clips out (:func:`holdout_mask`), and after training the model
scores them together with *pseudo-anomalies* made from them (:func:`pseudo_anomalies`: faster motion, jerky
frame order, the appearance of one object with the motion of another, time reversed; cf. Astrid et al.,
"Learning Not to Reconstruct Anomalies", BMVC 2021). :func:`select` picks, on a small fixed grid, the
settings whose fused score separates the two best (mean AUROC over the pseudo-anomaly kinds) and the z-score
statistics to use: the training cubes' (spec 6.4) or the held-out normal cubes' (errors the model never fit).
Nothing here sees a test frame. Mirrored cubes are not a pseudo-anomaly: an object moving the other way is
normal in most static views (docs/ANALYSIS.md: the direction mix of Ped2's test footage differs from its
training footage, measured without labels).
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

HOLDOUT_EVERY = 8  # every 8th clip (or, with fewer clips, the last 1/8 of each clip) is held out
EPSILON_GRID = (0.0, 0.002, 0.01)
W_BRANCH_GRID = (0.0, 0.5, 1.0, 2.0)
W_MOTION_GRID = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)
PSEUDO_KINDS = ("fast", "shuffle", "swap", "reverse")
MAX_HELD_OUT = 2000  # held-out normal cubes scored (a seeded subsample)
MAX_PSEUDO = 500  # held-out cubes each pseudo-anomaly kind is made from


def holdout_mask(clip: np.ndarray, frame: np.ndarray, every: int = HOLDOUT_EVERY) -> np.ndarray:
    """Cubes kept out of training for the selection: the clips with index % every == every - 1 when there
    are at least ``every`` clips, else the last 1/every of each clip's frames (one long video is enough)."""
    clip = np.asarray(clip)
    frame = np.asarray(frame)
    ids = np.unique(clip)
    if len(ids) >= every:
        rank = np.searchsorted(ids, clip)
        return rank % every == every - 1
    mask = np.zeros(len(clip), bool)
    for c in ids:
        sel = clip == c
        lo, hi = frame[sel].min(), frame[sel].max()
        mask |= sel & (frame > hi - (hi - lo + 1) / every)
    return mask


def pseudo_anomalies(raw: np.ndarray, flow: np.ndarray, seed: int,
                     kinds: tuple[str, ...] = PSEUDO_KINDS) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Pseudo-anomalies from normal cubes raw (N, T, P, P, 3) uint8 and flow (N, T, P, P, 2), one per kind;
    each breaks one regularity of normal motion or of the pairing of appearance and motion."""
    rng = np.random.default_rng([seed, 0xA70])
    n, t = raw.shape[:2]
    makers = {
        # twice the speed: the motion of skipping every other frame, appearance unchanged
        "fast": lambda: (raw.copy(), (flow.astype(np.float32) * 2).astype(flow.dtype)),
        # frames in a random order: jerky, non-physical motion
        "shuffle": lambda: _take_frames(raw, flow, np.stack([rng.permutation(t) for _ in range(n)])),
        # the appearance of one object with the motion of another
        "swap": lambda: (raw.copy(), flow[rng.permutation(n)].copy()),
        # time reversed: each frame's motion backwards
        "reverse": lambda: (raw[:, ::-1].copy(), (-flow[:, ::-1].astype(np.float32)).astype(flow.dtype)),
        # mirrored view (reported by the benchmark, not an anomaly: see the module docstring)
        "mirror": lambda: _mirror(raw, flow),
    }
    unknown = [k for k in kinds if k not in makers]
    if unknown:
        raise ValueError(f"unknown pseudo-anomaly kinds {unknown}")
    return {k: makers[k]() for k in kinds}


def _take_frames(raw: np.ndarray, flow: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows = np.arange(len(raw))[:, None]
    return raw[rows, order], flow[rows, order]


def _mirror(raw: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f = flow[:, :, :, ::-1].astype(np.float32)  # (N, T, P, P[x reversed], 2)
    f[..., 0] *= -1
    return raw[:, :, :, ::-1].copy(), f.astype(flow.dtype)


def auroc(neg: np.ndarray, pos: np.ndarray) -> float:
    """Probability that a pseudo-anomaly scores above a normal cube (ties count half)."""
    from sklearn.metrics import roc_auc_score

    neg, pos = np.asarray(neg, np.float64), np.asarray(pos, np.float64)
    return float(roc_auc_score(np.r_[np.zeros(len(neg)), np.ones(len(pos))], np.r_[neg, pos]))


@dataclass
class Errors:
    """Per-cube errors of one set of cubes at one epsilon, and the cubes' speed (pixels per frame)."""

    raw: np.ndarray
    flow: np.ndarray
    speed: np.ndarray


@dataclass
class Selection:
    """The chosen settings and the evidence for them (stored in the model file)."""

    epsilon: float
    w_raw: float
    w_flow: float
    w_motion: float
    stats_source: str  # "train" (spec 6.4) or "held_out"
    stats: dict[str, float]  # the z-score statistics scoring uses
    objective: float  # mean pseudo-anomaly AUROC of the chosen settings
    per_kind: dict[str, float]
    state_only: dict[str, Any] = field(default_factory=dict)  # the best with w_motion = 0, for the record
    n_held_out: int = 0
    n_pseudo: int = 0
    rule: str = "max mean pseudo-anomaly AUROC over " + ", ".join(PSEUDO_KINDS)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def held_out_stats(errors: Errors) -> dict[str, float]:
    """z-score statistics (population std) of held-out normal cubes, in the keys of the training stats."""
    return {"raw_mean": float(errors.raw.mean()), "raw_std": float(errors.raw.std()),
            "flow_mean": float(errors.flow.mean()), "flow_std": float(errors.flow.std()),
            "motion_mean": float(errors.speed.mean()), "motion_std": float(errors.speed.std())}


def _z(e: Errors, st: dict[str, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    def one(v: np.ndarray, key: str) -> np.ndarray:
        std = st[f"{key}_std"]
        return (v - st[f"{key}_mean"]) / std if std > 0 else np.zeros_like(v)

    return one(e.raw, "raw"), one(e.flow, "flow"), one(e.speed, "motion")


def select(held_out: dict[float, Errors], pseudo: dict[float, dict[str, Errors]],
           train_stats: dict[str, float]) -> Selection:
    """The grid point (epsilon, statistics, w_raw, w_flow, w_motion) with the best mean pseudo-anomaly AUROC.

    ``held_out[eps]`` / ``pseudo[eps][kind]``: errors at each epsilon of the grid. Ties go to the earlier grid
    point (smaller epsilon, training statistics, smaller weights): the simpler setting. Weights are only
    relative, so a grid point and its multiples score the same; the first is kept.
    """
    best: tuple[float, tuple[Any, ...], dict[str, float]] | None = None
    best_state: tuple[float, tuple[Any, ...], dict[str, float]] | None = None
    for eps in sorted(held_out):
        held = held_out_stats(held_out[eps])
        for source in ("train", "held_out"):
            st = dict(train_stats) if source == "train" else dict(held)
            if source == "train":  # the training stats may predate the motion term: take it from held-out
                for k in ("motion_mean", "motion_std"):
                    st.setdefault(k, held[k])
            hz = _z(held_out[eps], st)
            pz = {k: _z(v, st) for k, v in pseudo[eps].items()}
            for w in itertools.product(W_BRANCH_GRID, W_BRANCH_GRID, W_MOTION_GRID):
                if not any(w):
                    continue
                neg = w[0] * hz[0] + w[1] * hz[1] + w[2] * hz[2]
                per_kind = {k: auroc(neg, w[0] * a + w[1] * b + w[2] * c) for k, (a, b, c) in pz.items()}
                score = float(np.mean(list(per_kind.values())))
                key = (eps, source, *w, st)
                if best is None or score > best[0]:
                    best = (score, key, per_kind)
                if w[2] == 0 and (best_state is None or score > best_state[0]):
                    best_state = (score, key, per_kind)
    if best is None or best_state is None:
        raise ValueError("nothing to select from: empty grid")
    score, (eps, source, wr, wf, wm, st), per_kind = best
    s_score, s_key, s_kind = best_state
    return Selection(
        epsilon=float(eps), w_raw=wr, w_flow=wf, w_motion=wm, stats_source=source,
        stats={k: float(v) for k, v in st.items() if isinstance(v, (int, float))}, objective=score,
        per_kind=per_kind,
        state_only={"epsilon": float(s_key[0]), "stats_source": s_key[1], "w_raw": s_key[2],
                    "w_flow": s_key[3], "objective": s_score, "per_kind": s_kind},
        n_held_out=int(len(next(iter(held_out.values())).raw)),
        n_pseudo=int(sum(len(v.raw) for v in next(iter(pseudo.values())).values())))


def run_selection(model: Any, raw: np.ndarray, flow: np.ndarray, held_idx: np.ndarray,
                  train_stats: dict[str, float], *, seed: int, batch_size: int = 256, bf16: bool = False,
                  progress: bool = True) -> Selection:
    """Score a seeded subsample of the held-out cubes ``held_idx`` and pseudo-anomalies made from them at
    every epsilon of the grid, then :func:`select`. ``raw``/``flow`` may be memory maps."""
    from tqdm import tqdm

    from statevad.config import ScoreConfig
    from statevad.scoring import score_cubes
    from statevad.tensors import cube_motion

    rng = np.random.default_rng([seed, 0x5E1])
    held_idx = np.asarray(held_idx, np.int64)
    hold = np.sort(rng.choice(held_idx, size=min(MAX_HELD_OUT, len(held_idx)), replace=False))
    base = np.sort(rng.choice(held_idx, size=min(MAX_PSEUDO, len(held_idx)), replace=False))
    sets = {"held_out": (raw[hold], flow[hold]), **pseudo_anomalies(raw[base], flow[base], seed)}
    speed = {name: cube_motion(f) for name, (_r, f) in sets.items()}
    held: dict[float, Errors] = {}
    pseudo: dict[float, dict[str, Errors]] = {}
    bar = tqdm(total=len(EPSILON_GRID) * sum(len(r) for r, _f in sets.values()), unit="cube",
               desc="selecting scoring settings", disable=not progress, dynamic_ncols=True)
    with bar:
        for eps in EPSILON_GRID:
            cfg = ScoreConfig(epsilon=eps, batch_size=batch_size, bf16=bf16)
            out = {}
            for name, (r, f) in sets.items():
                e_raw, e_flow = score_cubes(model, r, f, cfg, progress=False)
                out[name] = Errors(e_raw, e_flow, speed[name])
                bar.update(len(r))
            held[eps] = out.pop("held_out")
            pseudo[eps] = out
    return select(held, pseudo, train_stats)
