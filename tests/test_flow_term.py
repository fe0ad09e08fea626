"""The flow branch's score (train.flow_term / score.flow_term): the published SSE, or the excess of the
observed over the predicted mean flow speed (docs/ANALYSIS.md section 11, docs/DEVIATIONS.md)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from statevad.errors import UserError


def _flow_pair(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    target = torch.randn(3, 5, 2, 4, 4, generator=g)  # (cube, T, 2, P, P)
    output = 0.5 * torch.randn(3, 5, 2, 4, 4, generator=g)
    return target, output


def test_excess_is_observed_minus_predicted_mean_speed():
    from statevad.tensors import flow_error, per_cube_sse

    target, output = _flow_pair()
    want = np.array([np.hypot(t[:, 0], t[:, 1]).mean() - np.hypot(o[:, 0], o[:, 1]).mean()
                     for t, o in zip(target.numpy(), output.numpy(), strict=True)])
    np.testing.assert_allclose(flow_error(target, output, "excess").numpy(), want, rtol=1e-5)
    np.testing.assert_allclose(flow_error(target, output, "EXCESS").numpy(), want, rtol=1e-5)
    torch.testing.assert_close(flow_error(target, output), per_cube_sse(target, output))  # default: published


def test_excess_is_one_sided_sse_is_not():
    """A cube moving slower than predicted gets a low excess but the same SSE as one moving faster: only
    'more motion than expected' counts as anomalous."""
    from statevad.tensors import flow_error

    predicted = torch.ones(2, 3, 2, 4, 4)
    observed = torch.stack([2 * predicted[0], 0 * predicted[1]])  # one twice as fast, one standing still
    sse = flow_error(observed, predicted, "sse")
    excess = flow_error(observed, predicted, "excess")
    assert sse[0] == pytest.approx(sse[1].item())
    assert excess[0] > 0 > excess[1]


def test_perturbed_errors_score_the_flow_term_asked_for():
    from helpers import tiny_preset

    from statevad.model import STATE
    from statevad.scoring import perturbed_errors

    torch.manual_seed(0)
    cfg = tiny_preset().model
    model = STATE(cfg).eval()
    frames = cfg.frames
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 255, (4, frames, 32, 32, 3), dtype=np.uint8)
    flow = rng.normal(size=(4, frames, 32, 32, 2)).astype(np.float16)
    for eps in (0.0, 0.01):
        e_raw_s, e_flow_s = perturbed_errors(model, raw, flow, epsilon=eps)
        e_raw_x, e_flow_x = perturbed_errors(model, raw, flow, epsilon=eps, flow_term="excess")
        np.testing.assert_allclose(e_raw_x, e_raw_s, rtol=1e-6)  # the step and the raw branch are unchanged
        assert (e_flow_s > 0).all() and not np.allclose(e_flow_x, e_flow_s)
        speed = np.linalg.norm(flow.astype(np.float32), axis=-1).reshape(4, -1).mean(1)
        assert (e_flow_x <= speed + 1e-4).all()  # observed minus a non-negative predicted speed


def test_flow_term_values_are_checked():
    from statevad.config import ScoreConfig, TrainConfig

    with pytest.raises(UserError, match="train.flow_term"):
        TrainConfig(flow_term="mse").validate()
    with pytest.raises(UserError, match="score.flow_term"):
        ScoreConfig(flow_term="").validate()


@pytest.mark.usefixtures("one_thread")
def test_training_records_the_flow_term_and_scoring_cannot_change_it(tmp_path):
    """The statistics are computed for the term the model was trained with; test and score refuse another."""
    from helpers import make_work, tiny_preset

    from statevad.checkpoint import load_checkpoint
    from statevad.settings import resolve
    from statevad.training import train

    work = make_work(tmp_path / "work")
    p = tiny_preset(epochs=1, flow_term="excess", select=False)
    out = train(work, p, out=tmp_path / "model.pt", progress=False)
    _, ckpt = load_checkpoint(out)
    assert ckpt.preset.train.flow_term == "excess" and ckpt.preset.score.flow_term == "excess"
    # an excess speed is a difference of speeds (small, signed); an SSE over a cube is large and positive
    assert abs(ckpt.stats["flow_mean"]) < 10
    assert resolve(ckpt.preset, "test").score.flow_term == "excess"
    with pytest.raises(UserError, match="trained with 'excess'"):
        resolve(ckpt.preset, "test", sets=["score.flow_term=sse"])
    with pytest.raises(UserError, match="retrain with --set train.flow_term=sse"):
        resolve(ckpt.preset, "score", sets=["score.flow_term=sse"])


def test_old_model_files_score_with_the_published_term(tmp_path):
    """A model file written before the field existed has no flow_term: it scores with the SSE, as trained."""
    from helpers import tiny_model

    from statevad.checkpoint import load_checkpoint
    from statevad.config import Preset

    _, ckpt = load_checkpoint(tiny_model(tmp_path / "m.pt"))
    assert ckpt.preset.score.flow_term == "sse"
    data = ckpt.preset.to_dict()
    del data["score"]["flow_term"], data["train"]["flow_term"]
    assert Preset.from_dict(data).score.flow_term == "sse"


def test_label_free_presets_default_to_the_excess_speed_dataset_presets_keep_the_published_sse():
    from statevad.config import get_preset

    terms = {name: get_preset(name).train.flow_term for name in ("ped2", "generic", "avenue", "shanghaitech")}
    assert terms == {"ped2": "excess", "generic": "excess", "avenue": "sse", "shanghaitech": "sse"}
