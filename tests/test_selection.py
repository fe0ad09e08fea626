"""Label-free selection of the scoring settings (statevad.selection, issue 18)."""

from __future__ import annotations

import numpy as np
import pytest

from statevad.selection import (
    PSEUDO_KINDS,
    Errors,
    held_out_stats,
    holdout_mask,
    pseudo_anomalies,
    select,
    tail_scale,
    tail_weights,
)


def test_holdout_every_eighth_clip_when_there_are_enough_clips():
    clip = np.repeat(np.arange(16), 3)
    frame = np.arange(len(clip))
    mask = holdout_mask(clip, frame)
    assert sorted(set(clip[mask])) == [7, 15]  # Ped2's training clips 08 and 16


def test_holdout_tail_of_each_clip_when_there_are_few_clips():
    clip = np.repeat([0, 1], 80)
    frame = np.arange(160)
    mask = holdout_mask(clip, frame)
    assert mask[:80].sum() == 10 and mask[80:].sum() == 10  # the last 1/8 of each clip
    assert mask[70:80].all() and not mask[:70].any()


def test_pseudo_anomalies_break_one_regularity_each():
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 255, (6, 5, 4, 4, 3), dtype=np.uint8)
    flow = rng.normal(size=(6, 5, 4, 4, 2)).astype(np.float16)
    out = pseudo_anomalies(raw, flow, seed=1, kinds=PSEUDO_KINDS + ("mirror",))
    for r, f in out.values():
        assert r.shape == raw.shape and r.dtype == raw.dtype
        assert f.shape == flow.shape and f.dtype == flow.dtype
    np.testing.assert_array_equal(out["fast"][0], raw)
    np.testing.assert_allclose(out["fast"][1].astype(np.float32), 2 * flow.astype(np.float32), rtol=1e-3)
    np.testing.assert_array_equal(out["reverse"][0], raw[:, ::-1])
    np.testing.assert_array_equal(out["reverse"][1], -flow[:, ::-1])
    np.testing.assert_array_equal(out["swap"][0], raw)  # appearance kept, motion from other cubes
    assert sorted(map(bytes, out["swap"][1])) == sorted(map(bytes, flow))
    shuffled_r, shuffled_f = out["shuffle"]
    for i in range(len(raw)):  # each cube's own frames, in another order, raw and flow alike
        order = [next(t for t in range(5) if (raw[i, t] == shuffled_r[i, s]).all()) for s in range(5)]
        assert sorted(order) == list(range(5))
        np.testing.assert_array_equal(shuffled_f[i], flow[i, order])
    np.testing.assert_array_equal(out["mirror"][1][..., 0], -flow[:, :, :, ::-1, 0])


# the training statistics the synthetic errors of _errors are drawn around
TRAIN_STATS = {"raw_mean": 10.0, "raw_std": 1.0, "flow_mean": 100.0, "flow_std": 10.0, "motion_mean": 1.0,
               "motion_std": 0.1, "n_cubes": 100}


def _errors(n: int, rng, raw=10.0, flow=100.0, speed=1.0) -> Errors:
    return Errors(rng.normal(raw, 1.0, n), rng.normal(flow, 10.0, n), np.abs(rng.normal(speed, 0.1, n)))


def test_select_finds_the_term_that_separates_the_pseudo_anomalies():
    rng = np.random.default_rng(0)
    train = dict(TRAIN_STATS)
    held, pseudo = {}, {}
    for eps in (0.0, 0.01):
        held[eps] = _errors(300, rng)
        # only the motion separates at eps 0; at eps 0.01 the raw error separates even better
        pseudo[eps] = {k: _errors(200, rng, speed=1.3, raw=10.0 + 3.0 * (eps > 0)) for k in PSEUDO_KINDS}
    chosen = select(held, pseudo, train, rule="grid")
    assert chosen.weight_rule == "grid" and chosen.alternative["weight_rule"] == "tail"
    assert chosen.epsilon == 0.01 and chosen.w_raw > 0
    assert chosen.objective > 0.95 and set(chosen.per_kind) == set(PSEUDO_KINDS)
    assert chosen.state_only["epsilon"] == 0.01 and chosen.state_only["w_raw"] > 0
    motion_only = select({0.0: held[0.0]}, {0.0: pseudo[0.0]}, train, rule="grid")
    assert motion_only.w_motion > 0 and motion_only.w_raw == motion_only.w_flow == 0


def test_tail_scale_is_the_exponential_tails_scale():
    rng = np.random.default_rng(0)
    assert tail_scale(rng.exponential(2.0, 20000)) == pytest.approx(2.0, rel=0.05)  # memoryless
    assert tail_scale(rng.normal(size=100)) is None  # 5 values above the 95th percentile: not measurable
    assert tail_scale(np.ones(1000)) is None


def test_tail_weights_give_a_heavy_tailed_term_less_weight():
    rng = np.random.default_rng(1)
    held = {"raw": rng.normal(size=4000), "flow": rng.standard_t(2, 4000) / np.sqrt(2),
            "motion": rng.normal(size=4000)}
    w, scales = tail_weights(held, ("raw", "flow", "motion"))
    assert np.mean(list(w.values())) == pytest.approx(1.0, abs=1e-3)
    assert w["flow"] < 0.6 * w["raw"] and w["raw"] == pytest.approx(w["motion"], rel=0.15)
    assert scales["flow"] > scales["raw"]
    few = {k: v[:100] for k, v in held.items()}  # too few cubes for any tail: every term weighs the same
    assert set(tail_weights(few, ("raw", "flow"))[0].values()) == {1.0}


def test_tail_rule_weighs_every_term_and_picks_epsilon_on_the_pseudo_anomalies():
    rng = np.random.default_rng(2)
    train = dict(TRAIN_STATS)
    held, pseudo = {}, {}
    for eps in (0.0, 0.01):
        e = _errors(2000, rng)
        e.flow = 100.0 + 10.0 * rng.standard_t(2, 2000)  # the flow error's normal tail is heavy
        e.appearance = rng.normal(size=2000)
        held[eps] = e
        pseudo[eps] = {}
        for k in PSEUDO_KINDS:  # the raw error separates only at eps 0.01
            p = _errors(300, rng, speed=1.2, raw=10.0 + 2.0 * (eps > 0))
            p.appearance = rng.normal(size=300)
            pseudo[eps][k] = p
    chosen = select(held, pseudo, train)
    assert chosen.weight_rule == "tail" and chosen.stats_source == "held_out"
    assert chosen.epsilon == 0.01
    assert chosen.w_flow < chosen.w_raw and chosen.w_appearance is not None and chosen.w_appearance > 0
    assert set(chosen.tail_scales) == {"raw", "flow", "motion", "appearance"}
    assert chosen.state_only["w_raw"] > chosen.state_only["w_flow"] > 0
    assert chosen.alternative["weight_rule"] == "grid"  # the other rule's choice is kept for the record
    with pytest.raises(ValueError, match="unknown weight rule"):
        select(held, pseudo, train, rule="best")


def test_held_out_stats_keys_match_the_training_stats():
    rng = np.random.default_rng(1)
    st = held_out_stats(_errors(50, rng))
    assert set(st) == {"raw_mean", "raw_std", "flow_mean", "flow_std", "motion_mean", "motion_std"}
    assert all(np.isfinite(v) for v in st.values())


@pytest.mark.usefixtures("one_thread")
def test_training_stores_the_selection_and_scores_with_it(tmp_path):
    """A work dir long enough to hold frames out: the model file carries the selection, its preset's scoring
    settings are the selected ones, and nothing needed a label."""
    from helpers import split_arrays

    from statevad.checkpoint import load_checkpoint
    from statevad.config import get_preset, override, with_model_size
    from statevad.files import atomic_save_npy, atomic_write_json
    from statevad.training import train
    from statevad.workdir import FORMAT

    work = tmp_path / "work"
    data = split_arrays(2, 40, seed=3, anomalous=False)
    for k, v in data["arrays"].items():
        atomic_save_npy(work / "train" / f"{k}.npy", v)
    atomic_write_json(work / "train" / "frames.json", data["clips"])
    atomic_write_json(work / "manifest.json", {
        "format": FORMAT, "dataset": {"root": "/nowhere", "layout": "fake", "name": "x"},
        "options": {"preset": "generic", "box": {}, "flow": {}, "cube": {"length": 1, "patch": 32,
                                                                        "motion_thr": 0.0}},
        "versions": {}, "splits": {"train": {
            "n_frames": 80, "n_cubes": 160,
            "shapes": {k: list(v.shape) for k, v in data["arrays"].items()}}}})
    p = get_preset("generic")
    p.model = with_model_size(p.model, "tiny")
    p.train = override(p.train, epochs=1, batch_size=16, device="cpu")
    assert p.train.select
    out = train(work, p, out=tmp_path / "model.pt", progress=False)
    _, ckpt = load_checkpoint(out)
    sel = ckpt.selection
    assert sel is not None and sel["n_held_out"] == 20  # frames 35..39 of both clips, two cubes each
    sc = ckpt.preset.score
    assert (sc.epsilon, sc.w_raw, sc.w_flow, sc.w_motion) == (sel["epsilon"], sel["w_raw"], sel["w_flow"],
                                                              sel["w_motion"])
    assert sel["stats_source"] in ("train", "held_out")
    for k in ("raw_mean", "raw_std", "flow_mean", "flow_std"):
        assert ckpt.stats[k] == pytest.approx(sel["stats"][k])
    assert sel["train_stats"]["n_cubes"] == 140  # the held-out cubes were not trained on
