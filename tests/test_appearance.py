"""The appearance term (statevad.appearance): class descriptions of boxes, the kNN bank, its z-scores, the
model file field, and the term through prepare, train, test and the streaming engine."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from statevad.appearance import (
    MIN_REFERENCE,
    AppearanceModel,
    appearance_term,
    fit_appearance,
    from_payload,
    knn_distance,
)
from statevad.boxes import N_CLASSES, describe_boxes
from statevad.errors import UserError
from statevad.files import atomic_save_npy, atomic_write_json

PERSON, BICYCLE = 0, 1


def _person(rng: np.random.Generator, n: int) -> np.ndarray:
    """Class descriptions of walkers: a high person score, a little noise elsewhere."""
    c = rng.uniform(0.0, 0.05, (n, N_CLASSES)).astype(np.float32)
    c[:, PERSON] = rng.uniform(0.5, 0.8, n)
    return c


def _bicycle(rng: np.random.Generator, n: int) -> np.ndarray:
    c = _person(rng, n)
    c[:, BICYCLE] = rng.uniform(0.4, 0.6, n)
    return c


def test_describe_boxes_takes_the_best_overlapping_cells() -> None:
    cells = np.array([[0, 0, 10, 20], [1, 0, 11, 20], [50, 50, 60, 70]], np.float32)
    scores = np.zeros((3, N_CLASSES), np.float32)
    scores[0, PERSON], scores[1, PERSON], scores[1, BICYCLE], scores[2, 5] = 0.3, 0.6, 0.2, 0.9
    boxes = np.array([[0, 0, 10, 20], [100, 100, 110, 120]], np.float32)
    out = describe_boxes(boxes, cells, scores)
    assert out.shape == (2, N_CLASSES) and out.dtype == np.float32
    assert out[0, PERSON] == pytest.approx(0.6) and out[0, BICYCLE] == pytest.approx(0.2)
    assert out[0, 5] == 0  # the far cell does not describe the box
    assert not out[1].any()  # no cell over it: zeros
    assert describe_boxes(np.zeros((0, 4)), cells, scores).shape == (0, N_CLASSES)
    assert not describe_boxes(boxes, np.zeros((0, 4)), np.zeros((0, N_CLASSES))).any()


def test_knn_distance_is_the_mean_of_the_k_nearest() -> None:
    rng = np.random.default_rng(0)
    bank, query = rng.normal(size=(50, 6)), rng.normal(size=(7, 6))
    d = np.sqrt(((query[:, None] - bank[None]) ** 2).sum(-1))
    want = np.sort(d, axis=1)[:, :5].mean(1)
    assert np.allclose(knn_distance(bank, query, 5, chunk=3), want, atol=1e-4)
    assert knn_distance(bank, np.zeros((0, 6)), 5).shape == (0,)
    assert np.allclose(knn_distance(bank[:2], query, 5), np.sort(d[:, :2], axis=1).mean(1), atol=1e-4)


def test_fitted_model_scores_normal_near_zero_and_a_new_class_high() -> None:
    rng = np.random.default_rng(1)
    n_clips, per_clip = 8, 60
    classes = _person(rng, n_clips * per_clip)
    clip = np.repeat(np.arange(n_clips), per_clip)
    frame = np.tile(np.arange(per_clip), n_clips) + clip * per_clip
    fitted, why = fit_appearance(classes, clip, frame, seed=0)
    assert fitted is not None, why
    assert fitted.bank.dtype == np.float16 and fitted.std > 0
    assert fitted.n_reference == per_clip  # clip 7 is held out
    z_normal = fitted.zscore(_person(rng, 400))
    z_bike = fitted.zscore(_bicycle(rng, 400))
    assert abs(z_normal.mean()) < 0.5 and z_bike.min() > 3 * max(1.0, z_normal.std())
    # too little footage to hold any out: no model, and the reason says so
    m = MIN_REFERENCE
    none, why = fit_appearance(classes[:m], clip[:m] * 0, frame[:m], seed=0)
    assert none is None and "too few" in why


def test_payload_round_trip_and_malformed_fields_refused(tmp_path: Path) -> None:
    m = AppearanceModel(np.eye(4, N_CLASSES, dtype=np.float16), 2, 0.5, 0.25, 99)
    back = from_payload(m.to_payload(), tmp_path / "m.pt")
    assert back is not None and back.k == 2 and back.mean == 0.5 and back.std == 0.25
    assert np.array_equal(back.bank, m.bank)
    assert from_payload(None, "m.pt") is None
    good = m.to_payload()
    for bad in ({**good, "bank": good["bank"].float()}, {**good, "k": 9}, {**good, "k": True},
                {**good, "std": 0.0}, {**good, "mean": float("nan")}, {**good, "bank": [1, 2]}, [1]):
        with pytest.raises(UserError, match="appearance"):
            from_payload(bad, "m.pt")


def test_appearance_term_off_or_one_clear_line() -> None:
    m = AppearanceModel(np.eye(4, N_CLASSES, dtype=np.float16), 2, 0.5, 0.25, 99)
    assert appearance_term(None, None, 0.0, "x") is None  # weight 0: nothing needed
    with pytest.raises(UserError, match="no appearance model"):
        appearance_term(None, np.zeros((1, N_CLASSES)), 1.0, "x")
    with pytest.raises(UserError, match="work dir has no class descriptions"):
        appearance_term(m, None, 1.0, "work dir")
    assert appearance_term(m, np.zeros((3, N_CLASSES)), 1.0, "x").shape == (3,)


# ------------------------------------------------------------------------------------ through the package
def _work_with_classes(work: Path, *, classes: bool = True) -> Path:
    """A work directory (helpers.split_arrays: blobs; in the test split's second half one blob per frame is
    fast and bright) whose boxes carry class descriptions: people, and the anomalous blob a bicycle."""
    from helpers import split_arrays

    from statevad.workdir import FORMAT

    rng = np.random.default_rng(3)
    manifest = {"format": FORMAT, "dataset": {"root": "/nowhere", "layout": "fake", "name": "fake"},
                "options": {"preset": "generic", "box": {}, "flow": {},
                            "cube": {"length": 1, "patch": 32, "motion_thr": 0.0}},
                "versions": {}, "splits": {}}
    for split, n_clips, anomalous in (("train", 2, False), ("test", 2, True)):
        data = split_arrays(n_clips, 40, seed=len(split), anomalous=anomalous)
        arrs = data["arrays"]
        if classes:
            c = _person(rng, len(arrs["frame"]))
            odd = np.zeros(len(c), bool)
            if anomalous:  # the fast blob (k = 0) of the anomalous frames
                lab = data["labels"][arrs["frame"]].astype(bool)
                odd = lab & (np.arange(len(c)) % 2 == 0)
            c[odd] = _bicycle(rng, int(odd.sum()))
            arrs = {**arrs, "classes": c.astype(np.float16)}
        for k, v in arrs.items():
            atomic_save_npy(work / split / f"{k}.npy", v)
        atomic_write_json(work / split / "frames.json", data["clips"])
        if split == "test":
            atomic_save_npy(work / split / "labels.npy", data["labels"])
        manifest["splits"][split] = {"n_frames": n_clips * 40, "n_cubes": len(arrs["frame"]),
                                     "shapes": {k: list(v.shape) for k, v in arrs.items()}}
    atomic_write_json(work / "manifest.json", manifest)
    return work


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from helpers import train_on_one_thread

    work = _work_with_classes(tmp_path_factory.mktemp("appearance") / "work")
    return train_on_one_thread(work, "--preset", "generic", "--model-size", "tiny", "--epochs", "1",
                               "--batch-size", "16", "--device", "cpu", "--quiet")


def test_training_fits_the_term_and_test_scores_with_it(trained: Path, capsys) -> None:
    from statevad.checkpoint import load_checkpoint
    from statevad.cli import main
    from statevad.training import TAIL_APPEARANCE_RULE

    _, ck = load_checkpoint(trained)
    assert ck.appearance is not None and {"appearance_mean", "appearance_std"} <= set(ck.stats)
    sc = ck.preset.score
    # weighed by the selection's tail rule with the other terms, and recorded there
    assert sc.w_appearance == ck.selection["w_appearance"] > 0
    assert ck.selection["appearance"] == {"w_appearance": sc.w_appearance, "rule": TAIL_APPEARANCE_RULE}
    work = trained.parent
    capsys.readouterr()
    assert main(["test", "--work", str(work), "--device", "cpu", "--quiet"]) == 0
    with_term = json.loads((work / "results" / "model" / "metrics.json").read_text())
    rows = list(csv.DictReader(open(work / "results" / "model" / "objects.csv")))
    z = np.array([float(r["z_appearance"]) for r in rows])
    bike = np.arange(len(z)) % 2 == 0  # cube order = the arrays' order
    bike &= np.load(work / "test" / "labels.npy")[np.load(work / "test" / "frame.npy")].astype(bool)
    assert z[bike].min() > z[~bike].max()
    assert with_term["score"]["w_appearance"] == sc.w_appearance
    assert main(["test", "--work", str(work), "--device", "cpu", "--quiet", "--out", str(work / "r0"),
                 "--set", "score.w_appearance=0"]) == 0
    without = json.loads((work / "r0" / "metrics.json").read_text())
    assert without["score"]["w_appearance"] == 0
    assert with_term["micro_auroc"] >= without["micro_auroc"]
    # metrics.json's parts: the fusion without the term is that run; the term alone is reported too
    part = "without_appearance_term" if sc.w_motion else "state_only"
    assert with_term["parts"][part]["micro_auroc"] == pytest.approx(without["micro_auroc"])
    assert {"appearance_only", "box_speed_no_learning", "state_only"} <= set(with_term["parts"])


def test_a_work_dir_without_classes_is_one_clear_line(trained: Path, tmp_path: Path, capsys) -> None:
    from helpers import fails_one_line

    plain = _work_with_classes(tmp_path / "plain", classes=False)
    fails_one_line(["test", "--work", str(plain), "--model", str(trained), "--device", "cpu", "--quiet"],
                   capsys, "no class descriptions", "score.w_appearance=0")


def test_training_without_classes_leaves_the_term_off(tmp_path: Path) -> None:
    from helpers import train_on_one_thread

    from statevad.checkpoint import load_checkpoint

    work = _work_with_classes(tmp_path / "plain", classes=False)
    _, ck = load_checkpoint(train_on_one_thread(work, "--preset", "generic", "--model-size", "tiny",
                                                "--epochs", "1", "--batch-size", "16", "--device", "cpu",
                                                "--quiet", "--set", "train.select=false"))
    assert ck.appearance is None and ck.preset.score.w_appearance == 0


def test_engine_carries_class_descriptions_to_the_network() -> None:
    """A box stage giving (boxes, classes): the network stage gets each scored cube's description, after the
    motion filter and the object cap, in cube order."""
    from statevad.stream.engine import StreamScorer

    def boxes(_p: np.ndarray, cur: np.ndarray, _n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        b = np.array([[0, 0, 8, 8], [8, 8, 16, 16], [0, 8, 8, 16]], np.float32)
        c = np.zeros((3, N_CLASSES), np.float32)
        t = float(cur[0, 0, 0])
        c[:, 2] = [t, 100 + t, 200 + t]  # frame and box, readable from what the network stage gets
        return b, c

    def flow(a: np.ndarray, _b: np.ndarray) -> np.ndarray:
        f = np.zeros((*a.shape[:2], 2), np.float32)
        f[8:16, 8:16] = 1.0  # box 1 always moves
        if a[0, 0, 0] == 5:
            f[0:8, 0:8] = 0.5  # box 0 moves only in frame 5's flow: its cubes pass the filter around it
        return f

    def net(raw: np.ndarray, fl: np.ndarray, speed: np.ndarray, classes: np.ndarray | None = None):
        assert classes is not None and len(classes) == len(raw)
        z = np.zeros(len(raw))
        return z, z, classes[:, 2].astype(np.float64)

    # max_objects 2: box 2 (never moving) is capped away; the motion filter keeps box 0 only near frame 5
    eng = StreamScorer(length=1, patch=4, box_fn=boxes, flow_fn=flow, net_fn=net, motion_thr=0.01,
                       batch_frames=2, max_objects=2)
    out = []
    for t in range(9):
        out += eng.push(np.full((16, 16, 3), t, np.uint8))
    out += eng.finish()
    assert [r.index for r in out] == list(range(9))
    for r in out:
        want = ([r.index] if r.index in (4, 5, 6) else []) + [100 + r.index]
        assert r.scores.tolist() == want, (r.index, r.scores)


def test_stream_stage_without_a_detector_is_one_clear_line() -> None:
    from statevad.boxes import BoxExtractor
    from statevad.config import BoxConfig
    from statevad.stream.stages import DescribedBoxes

    with pytest.raises(UserError, match="w_appearance=0"):
        DescribedBoxes(BoxExtractor(BoxConfig(), "motion"))


# every object scored on every frame, the detector on every frame, each object's own score (no track mean):
# the exact per-frame comparison below
PER_FRAME = ["--set", "score.score_every=1", "--set", "score.detect_every=1", "--set", "score.track_frames=0"]


def test_score_adds_each_objects_appearance_z(tmp_path: Path) -> None:
    """`statevad score` on real footage (the bundled Ped2 clip, detector boxes): each object's score gains
    exactly w_appearance x the z-score of its box's class description, which the detector pass that made the
    boxes also gave."""
    import statevad
    from statevad.boxes import default_detector_path
    from statevad.checkpoint import save_checkpoint
    from statevad.cli import main
    from statevad.config import get_preset, override, with_model_size
    from statevad.io import read_frames
    from statevad.model import STATE
    from statevad.stream.stages import box_fn

    video = Path(statevad.__file__).parent / "data" / "demo" / "test" / "02.mp4"
    if not default_detector_path().is_file() or not video.is_file():
        pytest.skip("needs the bundled detector and demo clip")
    rng = np.random.default_rng(5)
    fitted = AppearanceModel(_person(rng, 256).astype(np.float16), 5, 0.2, 0.1, 64)
    p = get_preset("generic")
    p.model = with_model_size(p.model, "tiny")
    p.score = override(p.score, w_appearance=0.5)
    torch_state = STATE(p.model).eval()
    stats = {"raw_mean": 50.0, "raw_std": 20.0, "flow_mean": 500.0, "flow_std": 300.0, "motion_mean": 1.0,
             "motion_std": 1.0, **fitted.stats()}
    model = save_checkpoint(tmp_path / "m.pt", torch_state, p, stats, None, appearance=fitted.to_payload())
    n = 8
    runs = {}
    for name, extra in (("with", []), ("without", ["--set", "score.w_appearance=0"])):
        out = tmp_path / name
        assert main(["score", str(video), "--model", str(model), "--out", str(out), "--max-frames", str(n),
                     "--no-perturb", "--quiet", "--border-min-size", "0", *PER_FRAME, *extra]) == 0
        runs[name] = [json.loads(x) for x in (out / "objects.jsonl").read_text().splitlines()]
    a, b = runs["with"], runs["without"]
    assert len(a) == len(b) > 0 and [(o["frame"], o["box"]) for o in a] == [(o["frame"], o["box"]) for o in b]
    ext, _ = box_fn(p.box, None)
    frames = read_frames(str(video))[:n]
    for t in range(n):
        boxes, classes = ext.with_classes(frames[max(t - 1, 0)], frames[t], frames[min(t + 1, n - 1)])
        rows = [(i, o) for i, o in enumerate(a) if o["frame"] == t]
        for i, o in rows:
            j = int(np.argmin(np.abs(np.round(boxes, 1) - np.array(o["box"])).sum(1)))
            want = 0.5 * fitted.zscore(classes[j:j + 1])[0]
            assert a[i]["score"] - b[i]["score"] == pytest.approx(want, abs=1e-4)


def test_the_a_priori_weight_rule() -> None:
    from statevad.config import ScoreConfig
    from statevad.training import appearance_weight

    assert appearance_weight(ScoreConfig(w_raw=1.0, w_flow=1.0)) == 1.0
    assert appearance_weight(ScoreConfig(w_raw=0.0, w_flow=0.5, w_motion=4.0)) == 0.5  # one branch's share
    assert appearance_weight(ScoreConfig(w_raw=2.0, w_flow=1.0)) == 1.5
    assert appearance_weight(ScoreConfig(w_raw=0.0, w_flow=0.0, w_motion=2.0)) == 2.0


def test_sparse_detector_describes_moved_boxes_from_the_last_detector_frame() -> None:
    """With the detector every k-th frame, a box moved by the flow takes its class description from the
    cells of the last frame the detector ran on (the object is still under them)."""
    from statevad.stream.stages import SparseDetector, stream_boxes

    class Fake:
        detector = object()
        source = "detector"

        @staticmethod
        def box(t: int) -> np.ndarray:
            return np.array([[4.0 + 2 * t, 3.0 + t, 14.0 + 2 * t, 13.0 + t]], np.float32)

        def detect(self, frame: np.ndarray):
            t = int(frame[0, 0, 0])
            scores = np.zeros((1, N_CLASSES), np.float32)
            scores[0, 2] = 0.1 * (t + 1)  # which frame's cells described the box
            return self.box(t), self.box(t), scores

        def with_motion(self, p, c, n, app):
            return app

    stage = SparseDetector(Fake(), 3, describe=True)
    flow = np.broadcast_to(np.array([2.0, 1.0], np.float32), (40, 40, 2)).copy()
    got = []
    for t in range(5):
        f = np.full((40, 40, 3), t, np.uint8)
        boxes, classes = stage(f, f, f, flow_prev=None if t == 0 else flow, index=t)
        np.testing.assert_allclose(boxes, Fake.box(t), atol=1e-5)
        got.append(round(float(classes[0, 2]), 3))
    assert got == [0.1, 0.1, 0.1, 0.4, 0.4]  # frames 0 and 3 ran the detector
    with pytest.raises(UserError, match="w_appearance=0"):
        stream_boxes(lambda p, c, n: np.zeros((0, 4)), 1, describe=True)  # reference boxes: no classes
