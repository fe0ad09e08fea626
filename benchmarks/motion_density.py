"""Learned motion normality (issue 18 study): velocity features of object cubes + a density of normal motion.

Used by ``benchmarks/ped2_motion.py``; self-contained (numpy + scikit-learn), pure functions. Pipeline:

    X_fit = velocity_features(train_flow[fit], train_box[fit], frame_hw)        # (N, F) float32
    model = MotionDensity(kind="gmm", n_components=8, covariance="full").fit(X_fit)
    norm  = fit_normaliser(model.score(velocity_features(train_flow[heldout], ...)))
    z     = apply_normaliser(model.score(X_test), norm)                           # ~N(0,1) on normals

Feature (AI-VAD style, Reiss & Hoshen 2022): an 8-bin histogram of flow orientation, each bin holding
the mean flow magnitude of the pixels in that orientation, optionally per frame then averaged, optionally
with magnitudes in object heights per frame (flow / box height) and the coarse box position/size appended.
Orientation bins: angle = atan2(v, u) with u right, v down (image coordinates), bin k covers
[-pi + k*pi/4, -pi + (k+1)*pi/4); so bin 0 ~ moving left, 2 ~ up, 4 ~ right, 6 ~ down.
"""

from __future__ import annotations

from typing import Any

import numpy as np

N_BINS = 8


# ----------------------------------------------------------------------------------------------- features
def orientation_stats(flow_cubes: Any, chunk: int = 512) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flow cubes (N, T, P, P, 2) (float16/32, memory map OK) -> per-frame orientation statistics.

    Returns S (N, T, 8) sum of |flow| of the pixels in each orientation bin, C (N, T, 8) their count,
    M (N, T, 2) mean flow vector. Everything else is derived from these (cheap to cache).
    """
    n, t, p1, p2, c = flow_cubes.shape
    if c != 2:
        raise ValueError(f"flow cubes must be (N, T, P, P, 2), got {flow_cubes.shape}")
    S = np.empty((n, t, N_BINS), np.float32)
    C = np.empty((n, t, N_BINS), np.float32)
    M = np.empty((n, t, 2), np.float32)
    for a in range(0, n, chunk):
        f = np.asarray(flow_cubes[a:a + chunk], np.float32).reshape(-1, t, p1 * p2, 2)
        mag = np.hypot(f[..., 0], f[..., 1])
        b = np.floor((np.arctan2(f[..., 1], f[..., 0]) + np.pi) / (2 * np.pi / N_BINS)).astype(np.int64)
        b %= N_BINS
        for k in range(N_BINS):
            m = b == k
            S[a:a + chunk, :, k] = np.where(m, mag, 0.0).sum(-1)
            C[a:a + chunk, :, k] = m.sum(-1)
        M[a:a + chunk] = f.mean(2)
    return S, C, M


def features_from_stats(S: np.ndarray, C: np.ndarray, M: np.ndarray, boxes: np.ndarray,
                        frame_hw: tuple[int, int], *, hist: str = "mean", agg: str = "frame",
                        norm: str = "px", pos: bool = True,
                        log_eps: float | None = None) -> np.ndarray:
    """Velocity features from ``orientation_stats`` output.

    hist: "mean"     bin = mean |flow| of the pixels in that orientation (AI-VAD), 0 for an empty bin
          "weighted" bin = sum of |flow| in that orientation / all pixels (magnitude-weighted histogram;
                     the bins sum to the cube's mean speed)
          "speed"    the cube's mean speed only (1 column; the box-flow baseline's quantity)
          "vec"      the cube's mean flow vector (mean u, mean v) (2 columns)
          "vecspeed" mean u, mean v, mean speed (3 columns)
    agg:  "cube"  histogram over all T*P*P pixels; "frame" per-frame histogram, averaged over T
    norm: "px"    magnitudes in pixels/frame of the original frame; "height" divided by the box height
                  (object heights per frame)
    pos:  append (cx / W, cy / H, h / H) of the box (x1, y1, x2, y2 in frame pixels)
    log_eps: if set, histogram bins become log(bin + log_eps) (same unit as the bins)
    """
    S = np.asarray(S, np.float64)
    C = np.asarray(C, np.float64)
    npix = C.sum(-1, keepdims=True)  # P*P per frame
    if agg == "cube":
        S, C, npix = S.sum(1), C.sum(1), npix.sum(1)
    elif agg != "frame":
        raise ValueError(f"agg must be 'cube' or 'frame', got {agg!r}")
    if hist in ("vec", "speed", "vecspeed"):
        Mv = np.asarray(M, np.float64).mean(1)                       # mean (u, v) over the cube
        sp = S.sum((-1,) if agg == "cube" else (-1, -2)) / npix.sum(-1 if agg == "cube" else (-1, -2))
        sp = sp.reshape(-1, 1)
        H = {"vec": Mv, "speed": sp, "vecspeed": np.concatenate([Mv, sp], 1)}[hist]
    elif hist == "mean":
        H = np.divide(S, C, out=np.zeros_like(S), where=C > 0)
    elif hist == "weighted":
        H = S / npix
    else:
        raise ValueError(f"hist must be 'mean' or 'weighted', got {hist!r}")
    if agg == "frame" and hist in ("mean", "weighted"):
        H = H.mean(1)
    boxes = np.asarray(boxes, np.float64)
    h = np.maximum(boxes[:, 3] - boxes[:, 1], 1.0)
    if norm == "height":
        H = H / h[:, None]
    elif norm != "px":
        raise ValueError(f"norm must be 'px' or 'height', got {norm!r}")
    if log_eps is not None:
        H = np.log(H + log_eps)
    cols = [H]
    if pos:
        fh, fw = frame_hw
        cols.append(np.stack([(boxes[:, 0] + boxes[:, 2]) / (2 * fw), (boxes[:, 1] + boxes[:, 3]) / (2 * fh),
                              h / fh], 1))
    return np.concatenate(cols, 1).astype(np.float32)


def velocity_features(flow_cubes: Any, boxes: np.ndarray, frame_hw: tuple[int, int],
                      **options: Any) -> np.ndarray:
    """(N, T, P, P, 2) flow cubes + (N, 4) boxes -> (N, F) float32 features (see features_from_stats)."""
    return features_from_stats(*orientation_stats(flow_cubes), boxes, frame_hw, **options)


# ------------------------------------------------------------------------------------------------ density
SPEEDUP_GRID = tuple(float(a) for a in np.geomspace(1.0, 8.0, 13))  # 1, 1.19, 1.41, ..., 8


class MotionDensity:
    """Density of normal motion features; ``score`` is higher for more anomalous cubes.

    Columns: the first ``F - n_context`` are motion magnitudes (histogram bins, raw units, >= 0), the last
    ``n_context`` are context (box position/size) which is conditioned on, never scored for rarity itself.

    kind="gmm": GaussianMixture on standardised features, score = -log p(x)  (conditional=True:
                -log p(motion | context) = joint NLL - NLL of the mixture's exact context marginal).
    kind="knn": mean Euclidean distance to the k nearest training cubes (standardised features); with
                conditional=True the neighbours are searched among the ``k_context`` training cubes
                nearest in context, on the motion columns only.
    log_eps:    motion columns become log(x + log_eps) before standardising.
    one_sided:  "slower than normal is not abnormal": score(x) = min over a >= 1 in SPEEDUP_GRID of the
                score of x with its motion columns multiplied by a. Exactly non-decreasing when the whole
                motion is sped up (score(b x) >= score(x) for b >= 1, on the grid).
    """

    def __init__(self, kind: str = "gmm", n_components: int = 8, covariance: str = "full", k: int = 5,
                 n_context: int = 0, conditional: bool = False, one_sided: bool = False,
                 log_eps: float | None = None, k_context: int = 200, reg_covar: float = 1e-3,
                 seed: int = 0):
        self.kind, self.n_components, self.covariance, self.k = kind, n_components, covariance, k
        self.n_context, self.conditional = n_context, conditional
        self.one_sided, self.log_eps = one_sided, log_eps
        self.k_context, self.reg_covar, self.seed = k_context, reg_covar, seed

    def _transform(self, X: np.ndarray) -> np.ndarray:
        X = np.array(X, np.float64)
        if self.log_eps is not None:
            nm = X.shape[1] - self.n_context
            X[:, :nm] = np.log(np.maximum(X[:, :nm], 0.0) + self.log_eps)
        return X

    def fit(self, X: np.ndarray) -> MotionDensity:
        Z = self._transform(X)
        self.mean_ = Z.mean(0)
        self.std_ = Z.std(0)
        self.std_[self.std_ <= 0] = 1.0
        Z = (Z - self.mean_) / self.std_
        nm = Z.shape[1] - self.n_context
        if self.kind == "gmm":
            from sklearn.mixture import GaussianMixture
            self.model_ = GaussianMixture(self.n_components, covariance_type=self.covariance,
                                          reg_covar=self.reg_covar, n_init=1, max_iter=300,
                                          random_state=self.seed).fit(Z)
            if self.conditional and self.n_context:
                self.marginal_ = _gmm_marginal(self.model_, np.arange(nm, Z.shape[1]))
        elif self.kind == "knn":
            from sklearn.neighbors import NearestNeighbors
            if self.conditional and self.n_context:
                self.ctx_nn_ = NearestNeighbors(n_neighbors=self.k_context).fit(Z[:, nm:])
                self.motion_ = Z[:, :nm].copy()
            else:
                self.model_ = NearestNeighbors(n_neighbors=self.k).fit(Z)
        else:
            raise ValueError(f"kind must be 'gmm' or 'knn', got {self.kind!r}")
        return self

    def _score_z(self, Z: np.ndarray, ctx_idx: np.ndarray | None = None) -> np.ndarray:
        nm = Z.shape[1] - self.n_context
        if self.kind == "gmm":
            s = -self.model_.score_samples(Z)
            if self.conditional and self.n_context:
                s += self.marginal_.score_samples(Z[:, nm:])
            return s
        if self.conditional and self.n_context:
            nb = self.motion_[ctx_idx]                                   # (n, k_context, nm)
            d = np.sqrt(((nb - Z[:, None, :nm]) ** 2).sum(-1))
            return np.sort(d, 1)[:, :self.k].mean(1)
        d, _ = self.model_.kneighbors(Z, n_neighbors=self.k)
        return d.mean(1)

    def score(self, X: np.ndarray, chunk: int = 4096) -> np.ndarray:
        X = np.asarray(X, np.float64)
        nm = X.shape[1] - self.n_context
        out = np.empty(len(X), np.float64)
        grid = SPEEDUP_GRID if self.one_sided else (1.0,)
        for a in range(0, len(X), chunk):
            x = X[a:a + chunk]
            ctx_idx = None
            if self.kind == "knn" and self.conditional and self.n_context:
                zc = (self._transform(x)[:, nm:] - self.mean_[nm:]) / self.std_[nm:]
                ctx_idx = self.ctx_nn_.kneighbors(zc, return_distance=False)
            best = np.full(len(x), np.inf)
            for g in grid:
                xs = x.copy()
                xs[:, :nm] *= g
                z = (self._transform(xs) - self.mean_) / self.std_
                best = np.minimum(best, self._score_z(z, ctx_idx))
            out[a:a + chunk] = best
        return out


def _gmm_marginal(g: Any, dims: np.ndarray) -> Any:
    """Exact marginal of a fitted sklearn GaussianMixture over the columns ``dims``."""
    from sklearn.mixture import GaussianMixture
    m = GaussianMixture(g.n_components, covariance_type="full")
    m.weights_ = g.weights_.copy()
    m.means_ = g.means_[:, dims].copy()
    if g.covariance_type == "full":
        cov = g.covariances_[:, dims][:, :, dims]
    elif g.covariance_type == "diag":
        cov = np.stack([np.diag(c[dims]) for c in g.covariances_])
    else:
        raise ValueError("marginal needs full or diag covariances")
    m.covariances_ = cov
    m.precisions_cholesky_ = np.stack([np.linalg.cholesky(np.linalg.inv(c)) for c in cov])
    m.precisions_ = np.stack([np.linalg.inv(c) for c in cov])
    return m


# ----------------------------------------------------------------------------------------- normalisation
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


def fit_normaliser(heldout_scores: np.ndarray) -> dict[str, Any]:
    """Statistics of the density score on held-out normal cubes (never used for fitting the density)."""
    s = np.asarray(heldout_scores, np.float64)
    return {"mean": float(s.mean()), "std": float(s.std()), "median": float(np.median(s)),
            "mad": float(np.median(np.abs(s - np.median(s))) * 1.4826),
            "quantiles": dict(zip(map(str, QUANTILES), np.quantile(s, QUANTILES).tolist(), strict=True)),
            "log_mean": float(np.log(np.maximum(s, 1e-12)).mean()) if (s > 0).all() else None,
            "log_std": float(np.log(np.maximum(s, 1e-12)).std()) if (s > 0).all() else None,
            "sorted": np.sort(s)}


def apply_normaliser(scores: np.ndarray, norm: dict[str, Any], how: str = "z") -> np.ndarray:
    """z: (s - mean)/std on held-out normals; robust: (s - median)/MAD; rank: held-out CDF mapped to a
    normal quantile (Gaussianised, clipped at the held-out range +-1 cube, unbounded beyond via z)."""
    s = np.asarray(scores, np.float64)
    if how == "z":
        return (s - norm["mean"]) / norm["std"]
    if how == "logz":  # for positive, right-skewed scores (kNN distances): z-score of log(score)
        return (np.log(np.maximum(s, 1e-12)) - norm["log_mean"]) / norm["log_std"]
    if how == "robust":
        return (s - norm["median"]) / norm["mad"]
    if how == "rank":
        from scipy.stats import norm as N
        ref = norm["sorted"]
        p = (np.searchsorted(ref, s, side="right") + 0.5) / (len(ref) + 1.0)
        return N.ppf(p)
    raise ValueError(how)
