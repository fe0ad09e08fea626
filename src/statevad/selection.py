"""Label-free selection of the scoring settings (issue 18): held-out normal clips against pseudo-anomalies.

A user's footage has no labels, so epsilon and the fusion weights (incl. the motion and appearance terms)
cannot be chosen on anomalies. Instead, training keeps some normal clips out (:func:`holdout_mask`), and after
training the model scores them together with *pseudo-anomalies* made from them (:func:`pseudo_anomalies`:
faster motion, jerky frame order, the appearance of one object with the motion of another, time reversed;
cf. Astrid et al., "Learning Not to Reconstruct Anomalies", BMVC 2021).

Two rules pick the fusion weights (``train.weight_rule``):

* ``tail`` (default): every term weighs ``1 / tail scale``, the mean excess of its held-out normal z-scores
  over their 95th percentile (:func:`tail_scale`). Under an exponential tail that is the term's evidence in
  nats: one unit more is a value e times rarer on normal footage, whichever term it comes from, so a
  heavy-tailed error (the flow branch's, whose normal outliers reach z 7) cannot outvote a light-tailed
  one (the speed) by its spread alone. It needs no anomaly at all; only epsilon is chosen on the
  pseudo-anomalies.
* ``grid``: the grid point of (epsilon, statistics, w_raw, w_flow, w_motion) with the best mean
  pseudo-anomaly AUROC (the first rule, kept for comparison). Its objective is biased by the kinds we
  invent: three of the four keep the speed, so it learns to drop the speed term, and a "fast" kind that the
  flow branch catches perfectly cannot teach how to share the weight on subtle anomalies
  (docs/ANALYSIS.md section 9).

Nothing here sees a test frame. Mirrored cubes are not a pseudo-anomaly: an object moving the other way is
normal in most static views (docs/ANALYSIS.md: the direction mix of Ped2's test footage differs from its
training footage, measured without labels).
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from statevad.config import WEIGHT_RULES

HOLDOUT_EVERY = 8  # every 8th clip (or, with fewer clips, the last 1/8 of each clip) is held out
EPSILON_GRID = (0.0, 0.002, 0.01)
W_BRANCH_GRID = (0.0, 0.5, 1.0, 2.0)
W_MOTION_GRID = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)
PSEUDO_KINDS = ("fast", "shuffle", "swap", "reverse")
TAIL_QUANTILE = 0.95  # the tail of a term's held-out normal z-scores starts here
MIN_TAIL = 20  # held-out cubes above the quantile needed to measure a tail; fewer: the term weighs 1
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
    appearance: np.ndarray | None = None  # z-scores of the appearance term, when the model has one


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
    w_appearance: float | None = None  # set by the tail rule when the appearance term is on
    weight_rule: str = "grid"
    tail_scales: dict[str, float | None] = field(default_factory=dict)  # the tail rule's evidence
    alternative: dict[str, Any] = field(default_factory=dict)  # the other rule's choice, for the record

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


def tail_scale(z: np.ndarray, q: float = TAIL_QUANTILE) -> float | None:
    """Mean excess of ``z`` over its ``q``-quantile (the exponential tail's scale, its maximum-likelihood
    estimate), or None when fewer than :data:`MIN_TAIL` values lie above the quantile or all are equal."""
    z = np.asarray(z, np.float64)
    u = np.quantile(z, q)
    over = z[z > u] - u
    if len(over) < MIN_TAIL or not over.mean() > 0:
        return None
    return float(over.mean())


TERMS = ("raw", "flow", "motion", "appearance")


def _terms(e: Errors, st: dict[str, float]) -> dict[str, np.ndarray]:
    z_raw, z_flow, z_motion = _z(e, st)
    out = {"raw": z_raw, "flow": z_flow, "motion": z_motion}
    if e.appearance is not None:
        out["appearance"] = np.asarray(e.appearance, np.float64)
    return out


def tail_weights(held: dict[str, np.ndarray],
                 terms: tuple[str, ...]) -> tuple[dict[str, float], dict[str, float | None]]:
    """The tail rule's weights of ``terms`` (1 / tail scale of each held-out z, rescaled to a mean of 1 so
    the automatic threshold keeps its meaning) and the scales themselves. A term whose tail cannot be
    measured (too few held-out cubes) weighs 1 before the rescaling."""
    scales = {t: tail_scale(held[t]) for t in terms}
    raw = {t: 1.0 / sc if sc else 1.0 for t, sc in scales.items()}
    mean = float(np.mean(list(raw.values())))
    weights = {t: round(v / mean, 4) for t, v in raw.items()}
    return weights, {t: (round(sc, 6) if sc else None) for t, sc in scales.items()}


def fused_terms(z: dict[str, np.ndarray], w: dict[str, float]) -> np.ndarray:
    """Sum of w[t] * z[t] over the terms ``w`` weighs (each z a per-cube array): the tail rule's fusion."""
    return sum((w[t] * z[t] for t in w), np.zeros(len(z["raw"])))


def select(held_out: dict[float, Errors], pseudo: dict[float, dict[str, Errors]],
           train_stats: dict[str, float], rule: str = "tail") -> Selection:
    """The scoring settings by ``rule`` (:data:`WEIGHT_RULES`, see the module docstring), with the other
    rule's choice recorded in ``alternative``."""
    if rule not in WEIGHT_RULES:
        raise ValueError(f"unknown weight rule {rule!r}: one of {', '.join(WEIGHT_RULES)}")
    grid = select_grid(held_out, pseudo, train_stats)
    tail = select_tail(held_out, pseudo)
    chosen, other = (tail, grid) if rule == "tail" else (grid, tail)
    keys = ("weight_rule", "epsilon", "w_raw", "w_flow", "w_motion", "w_appearance", "stats_source", "stats",
            "objective", "per_kind")
    chosen.alternative = {k: getattr(other, k) for k in keys}
    return chosen


def select_tail(held_out: dict[float, Errors], pseudo: dict[float, dict[str, Errors]]) -> Selection:
    """The tail rule: weights from the held-out normal z-scores' tails (held-out statistics), epsilon with
    the best mean pseudo-anomaly AUROC at those weights (ties: the smaller epsilon)."""
    best: tuple[float, float, dict[str, float], dict[str, Any], dict[str, float]] | None = None
    for eps in sorted(held_out):
        st = held_out_stats(held_out[eps])
        hz = _terms(held_out[eps], st)
        terms = tuple(t for t in TERMS if t in hz)
        w, scales = tail_weights(hz, terms)
        neg = fused_terms(hz, w)
        per_kind = {k: auroc(neg, fused_terms(_terms(v, st), w)) for k, v in pseudo[eps].items()}
        score = float(np.mean(list(per_kind.values())))
        if best is None or score > best[0]:
            best = (score, eps, w, {"per_kind": per_kind, "scales": scales, "z": hz}, st)
    if best is None:
        raise ValueError("nothing to select from: no epsilon")
    score, eps, w, rec, st = best
    hz = rec["z"]
    w_state, _ = tail_weights(hz, ("raw", "flow"))
    neg = fused_terms(hz, w_state)
    s_kind = {k: auroc(neg, fused_terms(_terms(v, st), w_state)) for k, v in pseudo[eps].items()}
    return Selection(
        epsilon=float(eps), w_raw=w["raw"], w_flow=w["flow"], w_motion=w["motion"], stats_source="held_out",
        stats={k: float(v) for k, v in st.items()}, objective=score, per_kind=rec["per_kind"],
        state_only={"epsilon": float(eps), "stats_source": "held_out", "w_raw": w_state["raw"],
                    "w_flow": w_state["flow"], "objective": float(np.mean(list(s_kind.values()))),
                    "per_kind": s_kind},
        n_held_out=int(len(held_out[eps].raw)),
        n_pseudo=int(sum(len(v.raw) for v in pseudo[eps].values())),
        rule=(f"weights 1 / tail scale of each term's held-out z (mean excess over the {TAIL_QUANTILE:g} "
              "quantile, rescaled to mean 1); epsilon by the mean pseudo-anomaly AUROC over "
              + ", ".join(pseudo[eps])),
        w_appearance=w.get("appearance"), weight_rule="tail", tail_scales=rec["scales"])


def select_grid(held_out: dict[float, Errors], pseudo: dict[float, dict[str, Errors]],
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


def draw_cubes(held_idx: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The seeded subsamples of the held-out cubes ``held_idx`` that the selection scores: ``hold`` (normal
    cubes, up to :data:`MAX_HELD_OUT`) and ``base`` (the cubes pseudo-anomalies are made from, up to
    :data:`MAX_PSEUDO`), both sorted (memory-map friendly)."""
    rng = np.random.default_rng([seed, 0x5E1])
    held_idx = np.asarray(held_idx, np.int64)
    hold = np.sort(rng.choice(held_idx, size=min(MAX_HELD_OUT, len(held_idx)), replace=False))
    base = np.sort(rng.choice(held_idx, size=min(MAX_PSEUDO, len(held_idx)), replace=False))
    return hold, base


def run_selection(model: Any, raw: np.ndarray, flow: np.ndarray, held_idx: np.ndarray,
                  train_stats: dict[str, float], *, seed: int, batch_size: int = 256, bf16: bool = False,
                  progress: bool = True, rule: str = "tail", classes: np.ndarray | None = None,
                  appearance: Any = None, flow_term: str = "sse") -> Selection:
    """Score a seeded subsample of the held-out cubes ``held_idx`` and pseudo-anomalies made from them at
    every epsilon of the grid, then :func:`select` by ``rule``. ``raw``/``flow``/``classes`` may be memory
    maps. With an ``appearance`` model (statevad.appearance) and the cubes' ``classes``, the tail rule weighs
    the appearance term too (a pseudo-anomaly keeps its cube's description: each changes motion only)."""
    from tqdm import tqdm

    from statevad.config import ScoreConfig
    from statevad.scoring import score_cubes
    from statevad.tensors import cube_motion

    hold, base = draw_cubes(held_idx, seed)
    sets = {"held_out": (raw[hold], flow[hold]), **pseudo_anomalies(raw[base], flow[base], seed)}
    speed = {name: cube_motion(f) for name, (_r, f) in sets.items()}
    app: dict[str, np.ndarray | None] = dict.fromkeys(sets)
    if appearance is not None and classes is not None:
        z_hold = appearance.zscore(np.asarray(classes[hold], np.float32))
        z_base = appearance.zscore(np.asarray(classes[base], np.float32))
        app = {name: z_hold if name == "held_out" else z_base for name in sets}
    held: dict[float, Errors] = {}
    pseudo: dict[float, dict[str, Errors]] = {}
    bar = tqdm(total=len(EPSILON_GRID) * sum(len(r) for r, _f in sets.values()), unit="cube",
               desc="selecting scoring settings", disable=not progress, dynamic_ncols=True)
    with bar:
        for eps in EPSILON_GRID:
            cfg = ScoreConfig(epsilon=eps, batch_size=batch_size, bf16=bf16, flow_term=flow_term)
            out = {}
            for name, (r, f) in sets.items():
                e_raw, e_flow = score_cubes(model, r, f, cfg, progress=False)
                out[name] = Errors(e_raw, e_flow, speed[name], app[name])
                bar.update(len(r))
            held[eps] = out.pop("held_out")
            pseudo[eps] = out
    return select(held, pseudo, train_stats, rule)
