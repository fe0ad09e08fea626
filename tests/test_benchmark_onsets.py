"""The onset study's split of the lost frame pairs (benchmarks/ped2_onsets.py, docs/ANALYSIS.md 19) adds up to
1 - AUROC and finds the normal frames next to each annotated interval, clip by clip."""

from __future__ import annotations

import numpy as np
from helpers import load_benchmark
from sklearn.metrics import roc_auc_score


def _study():
    return load_benchmark("ped2_onsets")


def test_lost_pairs_sum_to_one_minus_auroc_with_ties():
    study = _study()
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    frames = np.round(rng.normal(labels * 0.8, 1.0), 1)  # rounded: ties between the two sides
    lost = study.lost_pairs(frames, labels)
    assert lost.shape == ((labels == 0).sum(),)
    assert np.isclose(lost.sum(), 1 - roc_auc_score(labels, frames))


def test_near_boundaries_marks_the_normal_frames_before_onsets_and_after_offsets_within_each_clip():
    study = _study()
    # clip A: normal 0-5, anomalous 6-8, normal 9-11; clip B: anomalous 0-2 (starts anomalous), normal 3-5
    labels = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0] + [1, 1, 1, 0, 0, 0])
    kind = study.near_boundaries(labels, [0, 12], [12, 6], window=2)
    assert kind[:12].tolist() == [0, 0, 0, 0, 1, 1, 0, 0, 0, 2, 2, 0]
    assert kind[12:].tolist() == [0, 0, 0, 2, 2, 0]  # no onset at a clip's first frame; nothing crosses clips
    split = study.split_losses(np.arange(18, dtype=float), labels, kind, np.repeat(["A", "B"], [12, 6]))
    parts = ("lost, normal frames before an onset", "lost, normal frames after an offset",
             "lost, other normal frames")
    assert split["lost"] > 0
    assert np.isclose(sum(split[p] for p in parts), split["lost"], atol=2e-4)  # each rounded to 4 digits
    by_clip = split["lost, near frames by clip"]
    assert set(by_clip) == {"A", "B"}
    assert np.isclose(sum(by_clip.values()), split["lost"] - split["lost, other normal frames"], atol=2e-4)
    other_side = split["lost, other normal frames, by the anomalous frame's clip"]
    assert np.isclose(sum(other_side.values()), split["lost, other normal frames"], atol=2e-4)
