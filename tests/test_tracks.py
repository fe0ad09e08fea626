"""score.track_frames: each object's score as the causal mean along its IoU track, the same offline
(``statevad test``, the calibration) and in a stream."""

from __future__ import annotations

import numpy as np
import pytest

from statevad import stream
from statevad.config import ScoreConfig, get_preset
from statevad.errors import UserError
from statevad.settings import resolve
from statevad.tracks import TrackMeans, causal_track_mean, clip_track_ids, split_track_mean


def test_track_ids_follow_boxes_and_an_empty_frame_ends_every_track() -> None:
    # two objects walking right 2 px a frame; frame 3 has no object; frame 4 starts new tracks
    frame = np.array([0, 0, 1, 1, 2, 2, 4, 4])
    x = np.array([0, 40, 2, 42, 4, 44, 8, 48], np.float32)
    box = np.stack([x, np.zeros(8), x + 10, np.full(8, 10)], axis=1)
    ids = clip_track_ids(frame, box)
    assert ids[0::2].tolist()[:3] == [ids[0]] * 3 and ids[1::2].tolist()[:3] == [ids[1]] * 3
    assert ids[0] != ids[1]
    assert len({ids[6], ids[7]} & {ids[0], ids[1]}) == 0  # after the empty frame: new tracks


def test_causal_track_mean_is_a_trailing_window_per_track() -> None:
    score = np.array([1.0, 10.0, 2.0, 20.0, 3.0, 30.0])
    frame = np.array([0, 0, 1, 1, 2, 2])
    ids = np.array([0, 1, 0, 1, 0, 1])
    out = causal_track_mean(score, frame, ids, 2)
    np.testing.assert_allclose(out, [1.0, 10.0, 1.5, 15.0, 2.5, 25.0])
    np.testing.assert_allclose(causal_track_mean(score, frame, ids, 1), score)  # 1 (and 0): off


def test_streaming_means_equal_the_offline_ones_and_peek_changes_nothing() -> None:
    rng = np.random.default_rng(0)
    frame = np.repeat(np.arange(30), 3)
    ids = np.tile([0, 1, 2], 30) + 3 * (frame >= 15)  # the tracks end at frame 15, new ones start
    score = rng.normal(size=len(frame))
    means = TrackMeans(5)
    got = np.empty_like(score)
    for t in range(30):
        sel = frame == t
        first = means.peek(ids[sel], score[sel])
        np.testing.assert_allclose(means.peek(ids[sel], score[sel]), first)  # peek twice: the same
        got[sel] = first
        means.commit(ids[sel], score[sel])
    np.testing.assert_allclose(got, causal_track_mean(score, frame, ids, 5))


def _flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.broadcast_to(np.array([2.0, 0.0], np.float32), (*a.shape[:2], 2)).copy()


def _boxes(p: np.ndarray, c: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Two objects moving 2 px right per frame (the frame index is in pixel 0); none on frame 6."""
    t = int(c[0, 0, 0])
    if t == 6:
        return np.zeros((0, 4), np.float32)
    return np.array([[2 * t, 4, 2 * t + 10, 20], [2 * t + 30, 4, 2 * t + 40, 20]], np.float32)


def _net(raw: np.ndarray, flow: np.ndarray, speed: np.ndarray):
    s = raw.reshape(len(raw), -1).astype(np.float64).mean(1)
    return s, s, s / 10.0


@pytest.mark.parametrize("overlap", [False, True])
@pytest.mark.parametrize("score_every", [1, 3])
def test_stream_track_mean_equals_split_track_mean(overlap: bool, score_every: int) -> None:
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 255, (32, 96, 3), dtype=np.uint8) for _ in range(16)]
    for t, f in enumerate(frames):
        f[0, 0, 0] = t
    eng = stream.StreamScorer(length=1, patch=8, box_fn=_boxes, flow_fn=_flow, net_fn=_net, batch_frames=3,
                              overlap=overlap, score_every=score_every, fuse_fn=lambda a, b, s: a / 10.0,
                              track_frames=4)
    out = [r for f in frames for r in eng.push(f)] + eng.finish()
    assert [r.index for r in out] == list(range(16))
    own = np.concatenate([r.cube_scores for r in out if len(r.scores)])
    frame = np.concatenate([np.full(len(r.scores), r.index) for r in out])
    box = np.concatenate([r.boxes for r in out])
    want = split_track_mean(own, np.zeros(len(own), np.int64), frame, box, 4)
    np.testing.assert_allclose(np.concatenate([r.scores for r in out]), want)
    assert not np.allclose(want, own)  # the mean did something
    for r in out:
        assert r.score == (r.scores.max() if len(r.scores) else r.score)


def test_track_frames_off_leaves_the_scores_and_the_presets_say_which() -> None:
    eng = stream.StreamScorer(length=1, patch=8, box_fn=_boxes, flow_fn=_flow, net_fn=_net, batch_frames=2)
    frames = [np.full((32, 96, 3), t, np.uint8) for t in range(8)]
    out = [r for f in frames for r in eng.push(f)] + eng.finish()
    assert all(r.cube_scores is None for r in out)
    assert ScoreConfig().track_frames == 0  # the published max over a frame's own cube scores
    # ped2: 10 frames (its known 10 frames/s); generic: 1 s at the footage's own rate; published presets: off
    assert get_preset("ped2").score.track_window(30.0) == 10
    assert get_preset("generic").score.track_window(10.0) == 10
    assert get_preset("generic").score.track_window(30.0) == 30
    assert get_preset("avenue").score.track_window(25.0) == 0
    assert get_preset("shanghaitech").score.track_window(25.0) == 0
    with pytest.raises(UserError, match="track_frames"):
        resolve(get_preset("ped2"), "score", sets=["score.track_frames=-1"])
    for bad in ("-1", "nan", "1e9"):
        with pytest.raises(UserError, match="track_seconds"):
            resolve(get_preset("generic"), "score", sets=[f"score.track_seconds={bad}"])


def test_the_window_given_last_wins_so_track_frames_0_is_off_on_every_preset() -> None:
    generic = get_preset("generic")
    assert resolve(generic, "score", sets=["score.track_frames=0"]).score.track_window(30.0) == 0
    assert resolve(generic, "score", sets=["score.track_frames=5"]).score.track_window(30.0) == 5
    both = ["score.track_frames=5", "score.track_seconds=2"]
    assert resolve(generic, "score", sets=both).score.track_window(30.0) == 60
    assert resolve(generic, "score", sets=both[::-1]).score.track_window(30.0) == 5
    assert ScoreConfig(track_seconds=0.01).track_window(10.0) == 1  # at least one frame: the object's own


def test_split_track_mean_takes_a_window_per_clip() -> None:
    rng = np.random.default_rng(0)
    frame = np.tile(np.repeat(np.arange(6), 2), 2)
    clip = np.repeat([0, 1], 12)
    x = np.tile(np.array([0.0, 50.0] * 6) + np.repeat(np.arange(6), 2), 2).astype(np.float32)
    box = np.stack([x, np.zeros(24), x + 10, np.full(24, 10)], axis=1)
    score = rng.normal(size=24)
    both = split_track_mean(score, clip, frame, box, [3, 5])
    a = split_track_mean(score, clip, frame, box, 3)
    b = split_track_mean(score, clip, frame, box, 5)
    assert np.allclose(both[:12], a[:12]) and np.allclose(both[12:], b[12:])
    assert not np.allclose(a[12:], b[12:])  # the windows differ where it matters
    assert np.array_equal(split_track_mean(score, clip, frame, box, [1, 0]), score)


def test_score_records_the_track_mean_in_events_json(synthetic_video_root, tmp_path) -> None:
    import json

    from helpers import score_synthetic, tiny_model

    model = tiny_model(tmp_path / "m.pt")  # the generic preset: 1 s along the track
    flags = ("--max-frames", "12", "--no-perturb")
    doc = score_synthetic(synthetic_video_root, model, tmp_path / "a", *flags)
    assert doc["object score: mean over its track's last frames"] == 10  # the video's 10 frames/s
    doc = score_synthetic(synthetic_video_root, model, tmp_path / "c", *flags, "--fps", "20")
    assert doc["object score: mean over its track's last frames"] == 20
    rows = [json.loads(x) for x in (tmp_path / "a" / "objects.jsonl").read_text().splitlines()]
    assert rows and all("score_cube" in r for r in rows)
    doc = score_synthetic(synthetic_video_root, model, tmp_path / "b", *flags,
                          "--set", "score.track_frames=0")
    assert "object score: mean over its track's last frames" not in doc


def test_stream_forgets_the_means_of_ended_tracks() -> None:
    """Memory stays bounded on a long stream: the engine drops a track's window with its other state."""
    def jumping(p: np.ndarray, c: np.ndarray, n: np.ndarray) -> np.ndarray:
        t = int(c[0, 0, 0])
        x = 10 * ((t // 5) % 6)  # every 5th frame both objects jump: their tracks end, new ones start
        return np.array([[x, 4, x + 8, 20], [x + 40, 4, x + 48, 20]], np.float32)

    eng = stream.StreamScorer(length=1, patch=8, box_fn=jumping, flow_fn=_flow, net_fn=_net, batch_frames=3,
                              track_frames=4)
    frames = [np.full((32, 96, 3), t % 256, np.uint8) for t in range(120)]
    out = [r for f in frames for r in eng.push(f)] + eng.finish()
    assert len(out) == 120
    assert eng._tracker is not None and eng._tracker._next >= 40  # 48 tracks made
    assert len(eng._means._win) <= 12  # only the recent ones kept
