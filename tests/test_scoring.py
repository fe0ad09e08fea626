import json

import numpy as np
import pytest
import torch
from torch import nn

from statevad.config import ModelConfig, ScoreConfig, TrainConfig, with_model_size
from statevad.errors import UserError
from statevad.evaluation import load_stats_json
from statevad.model import STATE
from statevad.scoring import (
    EMPTY_FRAME_SCORE,
    frame_scores,
    fuse,
    motion_zscore,
    perturbed_errors,
    score_cubes,
    smooth,
    zscores,
)
from statevad.tensors import cube_motion, to_flow_target, to_model_input
from statevad.training import make_optimizer, train_step

T, P = 3, 32


def _cubes(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Smooth blobs whose flow is a function of brightness: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:P, 0:P] / P
    raw = np.empty((n, T, P, P, 3), np.uint8)
    flow = np.empty((n, T, P, P, 2), np.float16)
    for i in range(n):
        cx, cy, a = rng.uniform(0.3, 0.7, 3)
        for t in range(T):
            img = a * np.exp(-((xx - cx - 0.05 * t) ** 2 + (yy - cy) ** 2) / 0.02)
            raw[i, t] = (255 * np.clip(img, 0, 1))[..., None].repeat(3, -1).astype(np.uint8)
            flow[i, t] = np.stack([img * 2.0, img * -1.0], -1)
    return raw, flow


def _tiny() -> STATE:
    torch.manual_seed(0)
    return STATE(with_model_size(ModelConfig(frames=T), "tiny"))


class _ConstModel(nn.Module):
    """Outputs that do not depend on x: only the un-detached target carries a gradient to x."""

    def __init__(self, c: float) -> None:
        super().__init__()
        self.c = nn.Parameter(torch.tensor(c))

    def forward(self, x):
        b = x.shape[0]
        return self.c.expand(b, T, 3, P, P), self.c.expand(b, T, 2, P, P)


def test_input_layout():
    raw, flow = _cubes(2)
    x = to_model_input(raw, torch.device("cpu"))
    y = to_flow_target(flow, torch.device("cpu"))
    assert x.shape == (2, T, 3, P, P) and y.shape == (2, T, 2, P, P)
    assert torch.equal(x[1, 2, 0, 5, 7], torch.tensor(raw[1, 2, 5, 7, 0] / 255.0, dtype=torch.float32))
    assert y[0, 1, 1, 9, 3].item() == pytest.approx(float(flow[0, 1, 9, 3, 1]))
    with pytest.raises(UserError):
        to_model_input(raw.astype(np.float32), torch.device("cpu"))


def test_gradient_flows_through_undetached_target():
    raw, flow = _cubes(3)
    eps, c = 0.01, 0.3
    model = _ConstModel(c)
    e0, f0 = perturbed_errors(model, raw, flow, epsilon=0.0)
    e1, f1 = perturbed_errors(model, raw, flow, epsilon=eps)
    x = raw.astype(np.float64).transpose(0, 1, 4, 2, 3) / 255.0
    assert e0 == pytest.approx(((x - c) ** 2).reshape(3, -1).sum(1), rel=1e-5)
    # x' = x - eps * sign(x - c): every element moves eps towards c; |x' - c| = |d - eps| (d = |x - c| > 0)
    d = np.abs(x - c)
    expected = np.where(d > 0, (d - eps) ** 2, eps**2).reshape(3, -1).sum(1)
    assert e1 == pytest.approx(expected, rel=1e-4)
    assert f1 == pytest.approx(f0)  # flow error: target unchanged, output independent of x
    assert model.c.grad is None  # no parameter gradient accumulates


def test_perturbation_lowers_loss_of_trained_model_on_most_cubes():
    raw, flow = _cubes(16)
    model = _tiny()
    opt = make_optimizer(model, TrainConfig(lr=3e-3))
    x, y = to_model_input(raw, torch.device("cpu")), to_flow_target(flow, torch.device("cpu"))
    for _ in range(5):
        train_step(model, opt, x, y, TrainConfig())
    e_raw0, e_flow0 = perturbed_errors(model, raw, flow, epsilon=0.0)
    e_raw1, e_flow1 = perturbed_errors(model, raw, flow, epsilon=0.002)
    # per-cube loss of spec 7.1 (mean raw + mean flow squared error), before and after the step
    before = e_raw0 / (T * 3 * P * P) + e_flow0 / (T * 2 * P * P)
    after = e_raw1 / (T * 3 * P * P) + e_flow1 / (T * 2 * P * P)
    assert np.mean(after < before) >= 0.9


def test_perturbed_errors_do_not_touch_parameter_grads_and_are_batch_independent():
    raw, flow = _cubes(7)
    model = _tiny()
    model.zero_grad(set_to_none=True)
    model.train()
    cfg_all = ScoreConfig(epsilon=0.01, batch_size=7)
    cfg_small = ScoreConfig(epsilon=0.01, batch_size=3)
    a = score_cubes(model, raw, flow, cfg_all, progress=False)
    b = score_cubes(model, raw, flow, cfg_small, progress=False)
    assert all(p.grad is None for p in model.parameters())
    np.testing.assert_allclose(a[0], b[0], rtol=1e-4)
    np.testing.assert_allclose(a[1], b[1], rtol=1e-4)
    assert model.training  # scoring runs an eval-mode, BatchNorm-folded copy; the caller's model is untouched


def test_fuse_and_zscores():
    stats = {"raw_mean": 10.0, "raw_std": 2.0, "flow_mean": 1.0, "flow_std": 0.5}
    e_raw, e_flow = np.array([10.0, 14.0]), np.array([2.0, 0.5])
    z_raw, z_flow = zscores(e_raw, e_flow, stats)
    assert z_raw.tolist() == [0.0, 2.0] and z_flow.tolist() == [2.0, -1.0]
    assert fuse(e_raw, e_flow, stats, 1.0, 1.0).tolist() == [2.0, 1.0]
    assert fuse(e_raw, e_flow, stats, 0.3, 1.0) == pytest.approx([2.0, -0.4])
    assert fuse(e_raw, e_flow, stats, 1.0, 0.0).tolist() == [0.0, 2.0]
    with pytest.raises(UserError, match="raw_std"):
        fuse(e_raw, e_flow, {**stats, "raw_std": 0.0})
    with pytest.raises(UserError, match="lack"):
        fuse(e_raw, e_flow, {"raw_mean": 0.0})


def test_motion_term():
    flow = np.zeros((3, 2, 4, 4, 2), np.float16)
    flow[1, ..., 0] = 3.0
    flow[1, ..., 1] = 4.0  # speed 5 everywhere
    flow[2, 0, :2, :, 1] = -2.0  # speed 2 on a quarter of the cube
    assert cube_motion(flow).tolist() == [0.0, 5.0, 0.5]
    assert cube_motion(flow, chunk=1).tolist() == cube_motion(flow).tolist()  # memory-map chunks
    with pytest.raises(UserError, match="flow cubes"):
        cube_motion(np.zeros((3, 2, 4, 4, 3), np.float16))
    stats = {"raw_mean": 10.0, "raw_std": 2.0, "flow_mean": 1.0, "flow_std": 0.5,
             "motion_mean": 1.0, "motion_std": 2.0}
    e_raw, e_flow, motion = np.array([10.0, 14.0]), np.array([2.0, 0.5]), np.array([5.0, 1.0])
    assert motion_zscore(motion, stats).tolist() == [2.0, 0.0]
    assert fuse(e_raw, e_flow, stats).tolist() == [2.0, 1.0]  # off unless asked for: STATE as published
    assert fuse(e_raw, e_flow, stats, 1.0, 1.0, motion, 0.0).tolist() == [2.0, 1.0]
    assert fuse(e_raw, e_flow, stats, 1.0, 1.0, motion, 1.0).tolist() == [4.0, 1.0]
    assert fuse(e_raw, e_flow, stats, 0.0, 0.0, motion, 0.5).tolist() == [1.0, 0.0]
    old = {k: v for k, v in stats.items() if not k.startswith("motion")}  # a model file from before the term
    assert fuse(e_raw, e_flow, old).tolist() == [2.0, 1.0]
    with pytest.raises(UserError, match="--w-motion 0"):
        fuse(e_raw, e_flow, old, 1.0, 1.0, motion, 1.0)
    with pytest.raises(UserError, match="motion_std"):
        motion_zscore(motion, {**stats, "motion_std": 0.0})


def test_stats_json_keeps_optional_motion_keys(tmp_path):
    base = {"raw_mean": 1, "raw_std": 2, "flow_mean": 3, "flow_std": 4}
    (tmp_path / "a.json").write_text(json.dumps(base))
    (tmp_path / "b.json").write_text(json.dumps({**base, "motion_mean": 5, "motion_std": 6, "other": 7}))
    assert load_stats_json(tmp_path / "a.json") == {k: float(v) for k, v in base.items()}
    assert load_stats_json(tmp_path / "b.json") == {**{k: float(v) for k, v in base.items()},
                                                    "motion_mean": 5.0, "motion_std": 6.0}


def test_frame_scores_max_and_empty_frames():
    s = frame_scores(np.array([0, 0, 2, 2, 2]), np.array([1.0, 3.0, -2.0, -1.0, -5.0]), 4)
    assert s.tolist() == [3.0, EMPTY_FRAME_SCORE, -1.0, EMPTY_FRAME_SCORE]
    assert EMPTY_FRAME_SCORE == -1e5
    # like the original -1e5-initialised score map, a cube below -1e5 cannot pull its frame lower
    assert frame_scores(np.array([0]), np.array([-2e5]), 1).tolist() == [-1e5]
    with pytest.raises(UserError, match="outside"):
        frame_scores(np.array([4]), np.array([1.0]), 4)
    with pytest.raises(UserError, match="NaN"):
        frame_scores(np.array([0]), np.array([np.nan]), 1)


def test_smooth_stays_within_clips():
    s = np.array([0, 0, 10, 0, 0, 0, 0, 0.0])
    bounds = [("a", 0, 4), ("b", 4, 8)]
    assert np.array_equal(smooth(s, 0.0, bounds), s)
    out = smooth(s, 1.0, bounds)
    assert out[2] < 10 and out[1] > 0 and out[3] > 0
    assert np.all(out[4:] == 0)  # the spike in clip a does not leak into clip b
    empty = np.array([1.0, EMPTY_FRAME_SCORE, 3.0])
    assert smooth(empty, 1.0, [("a", 0, 3)]).min() > 0  # empty frames take the lowest real score first
