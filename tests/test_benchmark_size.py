"""The size-aware raw term of benchmarks/ped2_size.py (docs/ANALYSIS.md 21): the slope of a power law is
recovered, and the quotient it makes no longer grows with the box height."""

from __future__ import annotations

import numpy as np
from helpers import load_benchmark


def test_the_power_law_is_recovered_and_divided_out():
    study = load_benchmark("ped2_size")
    rng = np.random.default_rng(0)
    box = np.zeros((400, 4))
    box[:, 3] = rng.uniform(15, 60, 400)  # heights 15..60 px, y1 = 0
    height = study.box_height(box)
    e_raw = 0.01 * height ** 2.0 * rng.lognormal(0.0, 0.1, 400)
    slope = study.size_slope(e_raw, height)
    assert abs(slope - 2.0) < 0.05
    q = e_raw / height ** slope
    z = study.size_aware(e_raw, height, slope, float(q.mean()), float(q.std()))
    assert np.isclose(z.mean(), 0.0) and np.isclose(z.std(), 1.0)
    assert abs(np.corrcoef(np.log(height), z)[0, 1]) < 0.15  # the raw error grew with h^2; z does not
    # a degenerate box counts as 1 px tall, never 0 (no division by zero)
    assert study.box_height(np.array([[0.0, 5.0, 3.0, 5.0]]))[0] == 1.0


def test_the_raw_error_comes_back_from_its_z_score():
    study = load_benchmark("ped2_size")
    stats = {"raw_mean": 15.0, "raw_std": 9.5}
    e = np.array([3.0, 15.0, 40.0])
    assert np.allclose(study.raw_error((e - 15.0) / 9.5, stats), e)
