"""The border study (benchmarks/ped2_border.py, docs/ANALYSIS.md 20): each group's held-out cubes come out
with mean 0 and std 1 after its own standardisation (which boxes touch the edge: test_calibration.py)."""

from __future__ import annotations

import numpy as np
from helpers import load_benchmark


def _study():
    return load_benchmark("ped2_border")


def test_each_group_is_standardised_by_its_own_held_out_cubes():
    study = _study()
    rng = np.random.default_rng(0)
    border = rng.random(500) < 0.1
    z = np.where(border, rng.normal(2.0, 3.0, 500), rng.normal(-0.1, 0.8, 500))
    before = z.copy()
    stats = study.group_stats(z, border)
    out = study.restandardise(z, border, stats)
    assert np.array_equal(z, before)  # the input is left alone
    for sel in (border, ~border):
        assert np.isclose(out[sel].mean(), 0.0) and np.isclose(out[sel].std(), 1.0)
    # a group without spread (or without cubes) is left as it is
    flat = study.group_stats(np.ones(10), np.zeros(10, bool))
    assert flat["border"] == (0.0, 1.0) and flat["interior"] == (0.0, 1.0)
