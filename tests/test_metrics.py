import numpy as np
import pytest

from statevad.errors import UserError
from statevad.metrics import clip_bounds, equal_error_rate, evaluate


def test_micro_auroc_and_eer_hand_computed():
    # Pairs (pos, neg): (0.35>0.1) (0.35<0.4) (0.8>0.1) (0.8>0.4) -> 3/4. ROC crosses FPR=FNR at 0.5.
    res = evaluate(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1], np.int8), [("a", 0, 4)])
    assert res["micro_auroc"] == pytest.approx(0.75)
    assert res["eer"] == pytest.approx(0.5)
    assert res["per_clip_auroc"] == {"a": pytest.approx(0.75)}


def test_eer_perfect_and_interpolated():
    assert equal_error_rate(np.array([0, 1, 2, 3.0]), np.array([0, 0, 1, 1])) == pytest.approx(0.0)
    # negatives 1, 2, 4; positive 3: the ROC jumps from (1/3, 0) to (1/3, 1), crossing FPR = FNR at 1/3.
    assert equal_error_rate(np.array([1, 2, 4, 3.0]), np.array([0, 0, 0, 1])) == pytest.approx(1 / 3)


def test_macro_skips_single_class_clips_and_unknown_frames():
    scores = np.array([0.0, 1.0, 2.0, 3.0, 5.0, 4.0, 9.0, 9.0, 9.0])
    labels = np.array([0, 1, 0, 1, 0, 1, 0, 0, -1], np.int8)
    bounds = [("c1", 0, 4), ("c2", 4, 6), ("c3", 6, 9)]
    res = evaluate(scores, labels, bounds)
    # c1: pos {1, 3} vs neg {0, 2}: 3 of 4 pairs -> 0.75; c2: pos 4 < neg 5 -> 0; c3: one class -> None
    assert res["per_clip_auroc"] == {"c1": pytest.approx(0.75), "c2": pytest.approx(0.0), "c3": None}
    assert res["macro_auroc"] == pytest.approx(0.375)
    assert res["n_clips_macro"] == 2
    assert res["n_labelled"] == 8 and res["n_anomalous"] == 3
    # micro over the 8 labelled frames: positives {1, 3, 4}, negatives {0, 2, 5, 9, 9}
    pos, neg = [1, 3, 4], [0, 2, 5, 9, 9]
    expected = np.mean([[float(p > n) + 0.5 * float(p == n) for n in neg] for p in pos])
    assert res["micro_auroc"] == pytest.approx(expected)


def test_bad_inputs_raise_user_error():
    with pytest.raises(UserError, match="labels"):
        evaluate(np.zeros(3), None, [("a", 0, 3)])
    with pytest.raises(UserError, match="3 frame scores but 4 labels"):
        evaluate(np.zeros(3), np.array([0, 1, 0, 1]), [("a", 0, 3)])
    with pytest.raises(UserError, match="one class"):
        evaluate(np.arange(3.0), np.zeros(3, np.int8), [("a", 0, 3)])
    with pytest.raises(UserError, match="NaN"):
        evaluate(np.array([0.0, np.nan]), np.array([0, 1]), [("a", 0, 2)])
    with pytest.raises(UserError, match="clip 'b'"):
        evaluate(np.arange(4.0), np.array([0, 1, 0, 1]), [("a", 0, 3), ("b", 2, 5)])


def test_clip_bounds_from_frames_json():
    clips = [{"name": "01", "n_frames": 5, "start": 0}, {"name": "02", "n_frames": 3, "start": 5}]
    assert clip_bounds(clips) == [("01", 0, 5), ("02", 5, 8)]
