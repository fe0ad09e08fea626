"""The synthetic scene: deterministic, generic layout, exact labels, visible to frame differencing."""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from statevad.datasets import load_dataset
from statevad.errors import UserError
from statevad.synthetic import (
    ANOMALY_KINDS,
    Mover,
    _anomaly,
    _background,
    _walkers,
    anomaly_schedule,
    make_scene,
    render_clip,
)


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(f.relative_to(root)): f.read_bytes() for f in sorted(root.rglob("*")) if f.is_file()}


def test_fixture_scene_layout_and_labels(synthetic_root: Path) -> None:
    ds = load_dataset(synthetic_root)
    assert (ds.layout, ds.name) == ("generic", "generic")
    assert [c.name for c in ds.train] == ["01", "02", "03"]
    assert [c.name for c in ds.test] == ["01", "02"]
    assert all(c.n_frames == 60 and c.size == (120, 160) for c in ds.train + ds.test)
    labels = ds.labels("test")
    assert labels is not None and labels.dtype == np.int8 and len(labels) == 120
    for c in ds.test:  # every test clip has anomalous and normal-only frames
        assert c.labels is not None and 0 < c.labels.sum() < c.n_frames
    stored = json.loads((synthetic_root / "labels.json").read_text())
    assert set(stored) == {"01", "02"}
    kinds = {k for clip in anomaly_schedule(2, 60) for k, _ in clip}
    assert kinds == set(ANOMALY_KINDS)  # the default two clips hold all three anomaly kinds


def test_video_scene_matches_png_scene(synthetic_root: Path, synthetic_video_root: Path) -> None:
    """FFV1 is lossless: the video variant decodes to exactly the PNG frames, clip by clip."""
    png_ds, vid_ds = load_dataset(synthetic_root), load_dataset(synthetic_video_root)
    for png, vid in zip(png_ds.train + png_ds.test, vid_ds.train + vid_ds.test, strict=True):
        assert vid.source.suffix == ".mkv" and (vid.name, vid.start, vid.n_frames) == (png.name, png.start,
                                                                                       png.n_frames)
        np.testing.assert_array_equal(vid.read(), png.read())
    np.testing.assert_array_equal(vid_ds.labels(), png_ds.labels())


def test_labels_are_the_frames_where_an_anomaly_is_drawn(synthetic_root: Path) -> None:
    """Render each default test clip with and without its anomalous movers (same noise): the label must be 1
    exactly on the frames that differ, and match what the scene on disk says."""
    size, n, seed = (120, 160), 60, 0
    background = _background(np.random.default_rng(seed), size)
    stored = load_dataset(synthetic_root).test
    for k, plan in enumerate(anomaly_schedule(2, n)):
        crng = np.random.default_rng([seed, 2, k])
        walkers = _walkers(crng, size, int(crng.integers(3, 7)))
        anomalies = [_anomaly(kind, crng, size, t0) for kind, t0 in plan]
        with_anomalies, labels = render_clip(walkers + anomalies, background, n, np.random.default_rng(7))
        normal_only, none = render_clip(walkers, background, n, np.random.default_rng(7))
        drawn = (with_anomalies != normal_only).any(axis=(1, 2, 3))
        assert none.sum() == 0
        np.testing.assert_array_equal(labels.astype(bool), drawn)
        np.testing.assert_array_equal(stored[k].labels, labels)


@pytest.mark.parametrize(("n_test", "n_frames"), [(5, 8), (4, 24)])
def test_every_test_clip_has_normal_and_anomalous_frames(tmp_path: Path, n_test: int, n_frames: int) -> None:
    ds = load_dataset(make_scene(tmp_path / "s", n_train=1, n_test=n_test, n_frames=n_frames, size=(40, 56)))
    for c in ds.test:
        assert c.labels is not None and c.labels[0] == 0 and 0 < c.labels.sum() < c.n_frames, c.name


@pytest.mark.parametrize("kwargs", [{"n_frames": 3}, {"n_train": 0}, {"size": (16, 160)}])
def test_bad_scene_parameters(tmp_path: Path, kwargs: dict[str, object]) -> None:
    with pytest.raises(UserError, match="synthetic scene"):
        make_scene(tmp_path / "s", **kwargs)
    assert not (tmp_path / "s").exists()


def test_deterministic_fast_and_seeded(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    a = make_scene(tmp_path / "a", n_train=1, n_test=1, n_frames=20, size=(60, 80))
    elapsed = time.perf_counter() - t0
    b = make_scene(tmp_path / "b", n_train=1, n_test=1, n_frames=20, size=(60, 80))
    c = make_scene(tmp_path / "c", n_train=1, n_test=1, n_frames=20, size=(60, 80), seed=1)
    fa, fb, fc = (load_dataset(r).test[0].read() for r in (a, b, c))
    np.testing.assert_array_equal(fa, fb)
    assert not np.array_equal(fa, fc)
    assert _tree_bytes(a) == _tree_bytes(b)  # same seed: the same files, byte for byte
    assert elapsed < 5.0  # well under a second when the machine is idle (generous: shared CPUs)
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary build folder is gone


def test_existing_output_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("user data")
    with pytest.raises(UserError, match="already exists"):
        make_scene(tmp_path / "x")


def test_label_is_one_exactly_where_the_anomaly_is_visible() -> None:
    """Render one anomalous mover over a flat ground: label == 'some pixel differs from the ground'."""
    bg = np.full((40, 50), 100.0, np.float32)
    patch = np.full((8, 6), 200, np.uint8)
    mover = Mover(patch, x0=-10.0, y0=10.0, vx=7.0, vy=0.0, t0=2, anomalous=True)
    frames, labels = render_clip([mover], bg, 14, np.random.default_rng(0))
    visible = (np.abs(frames[..., 0].astype(int) - 100) > 20).any(axis=(1, 2))
    np.testing.assert_array_equal(labels.astype(bool), visible)
    assert labels[:3].sum() == 0 and labels[3] == 1 and labels[-1] == 0  # enters at t=3, leaves before t=13


def test_objects_are_visible_to_frame_differencing(synthetic_root: Path) -> None:
    """Spec 3.3 motion boxes: |blur(t) - blur(t-1)| > 18 must fire on every frame (walkers never stop)."""
    frames = load_dataset(synthetic_root).test[0].read()
    gray = np.stack([cv2.GaussianBlur(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY), (3, 3), 0) for f in frames])
    moving = (np.abs(np.diff(gray.astype(np.int16), axis=0)) > 18).sum(axis=(1, 2))
    assert (moving > 20).all()
    # sensor noise alone never crosses the threshold: the ground is static
    assert np.median(np.abs(np.diff(gray.astype(np.int16), axis=0))) <= 2


def test_anomalies_meet_the_brief() -> None:
    rng = np.random.default_rng(0)
    walkers = _walkers(rng, (120, 160), 5)
    assert all(1.0 <= abs(w.vx) <= 2.0 and w.vy == 0 for w in walkers)
    assert all(8 <= w.patch.shape[1] <= 12 and 16 <= w.patch.shape[0] <= 24 for w in walkers)
    fast, vertical, odd = (_anomaly(k, rng, (120, 160), 0) for k in ANOMALY_KINDS)
    assert abs(fast.vx) >= 6
    assert vertical.vx == 0 and vertical.vy != 0
    assert odd.patch.shape[1] >= 2 * odd.patch.shape[0]  # a wide cart, not a pedestrian
