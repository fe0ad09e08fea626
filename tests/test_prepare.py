"""The work directory: contents and shapes, cache reuse, stale/corrupt caches redone, atomicity, CLI."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from statevad import preparation as prep
from statevad.errors import UserError
from statevad.workdir import open_split


def _frames(n: int, seed: int, h: int = 48, w: int = 64) -> np.ndarray:
    """A textured background with a bright block moving 3 px right per frame."""
    rng = np.random.default_rng(seed)
    bg = rng.integers(60, 120, (h, w), dtype=np.uint8)
    out = np.repeat(bg[None, :, :, None], n, axis=0).repeat(3, axis=3)
    for t in range(n):
        out[t, 10:30, 5 + 3 * t:17 + 3 * t] = 230
    return out


@dataclass
class FakeClip:
    name: str
    split: str
    source: Path
    n_frames: int
    start: int
    scene: int = 0
    size: tuple[int, int] = (48, 64)
    labels: np.ndarray | None = None

    def read(self) -> np.ndarray:
        return np.load(self.source)


class FakeDataset:
    """Duck-typed stand-in for statevad.datasets.Dataset, so these tests do not depend on its readers."""

    def __init__(self, root: Path, lengths: dict[str, list[int]]) -> None:
        self.root, self.layout, self.name = root, "fake", "generic"
        self.reference_boxes: dict[str, Path] = {}
        self._clips: dict[str, list[FakeClip]] = {}
        for split, lens in lengths.items():
            start, clips = 0, []
            for i, n in enumerate(lens):
                src = root / f"{split}_{i}.npy"
                if not src.exists():
                    np.save(src, _frames(n, seed=i + (100 if split == "test" else 0)))
                clips.append(FakeClip(f"{i:02d}", split, src, n, start))
                start += n
            self._clips[split] = clips
            boxes = [np.array([[2.0, 2.0, 40.0, 40.0]], np.float32)] * start
            ref = root / f"ref_{split}.npz"
            np.savez(ref, boxes=np.concatenate(boxes), offsets=np.arange(start + 1))
            self.reference_boxes[split] = ref

    def clips(self, split: str) -> list[FakeClip]:
        return self._clips[split]

    def labels(self, split: str) -> np.ndarray:
        return np.zeros(sum(c.n_frames for c in self._clips[split]), np.int8)


@pytest.fixture()
def fake(tmp_path: Path) -> FakeDataset:
    root = tmp_path / "data"
    root.mkdir()
    return FakeDataset(root, {"train": [10, 9], "test": [8, 4]})  # test clip 1 is too short for l=3


def test_prepare_reference_writes_the_documented_work_dir(fake: FakeDataset, tmp_path: Path) -> None:
    work = tmp_path / "w"
    with pytest.warns(UserWarning, match="too short"):
        m = prep.prepare(fake, work, box_source="reference", progress=False)
    assert m["format"] == "statevad-work/1" and m["box_source"] == "reference"
    assert m["splits"]["train"]["n_cubes"] == 19 and m["splits"]["test"]["n_cubes"] == 8
    assert m["splits"]["test"]["skipped_clips"] == {"1": m["splits"]["test"]["skipped_clips"]["1"]}
    tr = open_split(work, "train", verify=True)
    assert tr.raw.shape == (19, 7, 32, 32, 3) and tr.raw.dtype == np.uint8
    assert tr.flow.shape == (19, 7, 32, 32, 2) and tr.flow.dtype == np.float16
    assert tr.frame.tolist() == list(range(19)) and tr.clip.tolist() == [0] * 10 + [1] * 9
    assert tr.box.dtype == np.float32 and tr.labels is None and tr.n_frames == 19
    assert isinstance(tr.raw, np.memmap)
    assert [c["start"] for c in tr.clips] == [0, 10]
    te = open_split(work, "test")
    assert te.labels is not None and te.labels.dtype == np.int8 and te.labels.shape == (12,)
    assert json.loads((work / "manifest.json").read_text())["splits"]["test"]["n_frames"] == 12


def test_rerun_reuses_caches_and_redoes_stale_or_corrupt(fake: FakeDataset, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "w"
    prep.prepare(fake, work, split="train", box_source="motion", progress=False)
    raw_before = np.load(work / "train" / "raw.npy").copy()
    calls: list[int] = []
    real = prep.process_clip
    monkeypatch.setattr(prep, "process_clip", lambda i, *a, **k: calls.append(i) or real(i, *a, **k))
    m = prep.prepare(fake, work, split="train", box_source="motion", progress=False)
    assert calls == [] and m["splits"]["train"]["n_clips_computed"] == 0
    caches = sorted((work / "train" / "clips").glob("*.npz"))
    caches[0].write_bytes(caches[0].read_bytes()[:1000])  # truncated (corrupt) cache
    m = prep.prepare(fake, work, split="train", box_source="motion", progress=False)
    assert calls == [0]
    np.testing.assert_array_equal(np.load(work / "train" / "raw.npy"), raw_before)
    calls.clear()
    m = prep.prepare(fake, work, split="train", box_source="motion", length=2, progress=False)  # options
    assert sorted(calls) == [0, 1] and m["splits"]["train"]["shapes"]["raw"][1] == 5
    assert not list(work.rglob(".*.tmp*")), "temporary files left behind"


def test_options_identity_names_the_detector_by_content() -> None:
    opts = {"box": {"detector_path": "/a/nanodet.onnx", "score_thr": 0.4}, "detector_sha256": "s1"}
    moved = {"box": {"detector_path": "/b/nanodet.onnx", "score_thr": 0.4}, "detector_sha256": "s1"}
    other = {"box": {"detector_path": "/a/nanodet.onnx", "score_thr": 0.4}, "detector_sha256": "s2"}
    assert prep.options_identity(opts) == prep.options_identity(moved)
    assert prep.options_identity(opts) != prep.options_identity(other)
    assert opts["box"]["detector_path"] == "/a/nanodet.onnx"  # the manifest keeps where it was read from
    no_detector = {"box": {"detector_path": "/a/x.onnx"}, "detector_sha256": None}  # motion boxes only
    assert prep.options_identity(no_detector) == no_detector


def test_options_added_later_keep_older_caches_valid() -> None:
    # a manifest written before box.detector_grid existed names the same cubes as one with its default
    old = {"box": {"score_thr": 0.4}, "detector_sha256": "s1"}
    new = {"box": {"score_thr": 0.4, "detector_grid": 1}, "detector_sha256": "s1"}
    grid = {"box": {"score_thr": 0.4, "detector_grid": 2}, "detector_sha256": "s1"}
    assert prep.options_identity(old) == prep.options_identity(new)
    assert "detector_grid" not in prep.options_identity(new)["box"]
    assert prep.options_identity(grid) != prep.options_identity(old)
    assert new["box"]["detector_grid"] == 1  # the manifest itself keeps the option


def test_caches_survive_a_moved_detector_file(fake: FakeDataset, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Another clone or install of the project reads the same detector from another path: its caches stay
    valid (they used to be recomputed, because the fingerprint held the detector's path)."""
    from statevad.boxes import default_detector_path

    src = default_detector_path()
    if not src.is_file():
        pytest.skip(f"no bundled detector at {src}")
    copies = [tmp_path / "one" / src.name, tmp_path / "two" / src.name]
    for c in copies:
        c.parent.mkdir()
        shutil.copyfile(src, c)
    work = tmp_path / "w"
    prep.prepare(fake, work, split="train", box_source="detector+motion", detector_path=str(copies[0]),
                 progress=False)
    calls: list[int] = []
    real = prep.process_clip
    monkeypatch.setattr(prep, "process_clip", lambda i, *a, **k: calls.append(i) or real(i, *a, **k))
    m = prep.prepare(fake, work, split="train", box_source="detector+motion", detector_path=str(copies[1]),
                     progress=False)
    assert calls == [] and m["splits"]["train"]["n_clips_computed"] == 0
    assert m["options"]["box"]["detector_path"] == str(copies[1].resolve())


def test_detector_boxes_carry_class_descriptions(fake: FakeDataset, tmp_path: Path) -> None:
    """Detector boxes come with each cube's 80 class scores (the appearance term's input), from the same
    detector pass; motion boxes have none, and their work directory says so by lacking the array."""
    from statevad.boxes import default_detector_path

    if not default_detector_path().is_file():
        pytest.skip(f"no bundled detector at {default_detector_path()}")
    work = tmp_path / "w"
    m = prep.prepare(fake, work, split="train", box_source="detector+motion", progress=False)
    tr = open_split(work, "train", verify=True)
    assert tr.classes is not None and tr.classes.shape == (len(tr), 80) and tr.classes.dtype == np.float16
    assert "classes" in m["splits"]["train"]["checksums"]
    plain = prep.prepare(fake, tmp_path / "m", split="train", box_source="motion", progress=False)
    assert open_split(tmp_path / "m", "train").classes is None
    assert "classes" not in plain["splits"]["train"]["shapes"]
    # a flipped byte in the class descriptions is caught like one in the cubes
    arr = np.load(work / "train" / "classes.npy", mmap_mode="r+")
    if len(arr):
        arr[0, 0] = arr[0, 0] + np.float16(1)
        arr.flush()
        with pytest.raises(UserError, match="classes.npy does not match its checksum"):
            open_split(work, "train", verify=True)


def test_failed_clip_leaves_no_partial_outputs(fake: FakeDataset, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "w"

    def boom(*a: object, **k: object) -> None:
        raise RuntimeError("killed")

    monkeypatch.setattr("statevad.cubes.clip_cubes", boom)
    with pytest.raises(RuntimeError):
        prep.prepare(fake, work, split="train", box_source="motion", progress=False)
    assert not (work / "manifest.json").exists()
    assert not list(work.rglob("*.npz")) and not list(work.rglob("*.npy"))
    with pytest.raises(UserError, match="run `statevad prepare"):
        open_split(work, "train")


def test_parallel_jobs_match_serial(fake: FakeDataset, tmp_path: Path) -> None:
    a = prep.prepare(fake, tmp_path / "a", split="train", box_source="motion", progress=False)
    b = prep.prepare(fake, tmp_path / "b", split="train", box_source="motion", jobs=2, progress=False)
    assert a["splits"]["train"]["checksums"] == b["splits"]["train"]["checksums"]


def test_open_split_errors(fake: FakeDataset, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not a prepared work directory"):
        open_split(tmp_path / "nothing", "train")
    work = tmp_path / "w"
    prep.prepare(fake, work, split="train", box_source="motion", progress=False)
    with pytest.raises(UserError, match="no prepared test split"):
        open_split(work, "test")
    raw = work / "train" / "raw.npy"
    arr = np.load(raw)
    arr[0, 0, 0, 0, 0] ^= 1
    np.save(raw, arr)
    with pytest.raises(UserError, match="checksum"):
        open_split(work, "train", verify=True)


def test_bad_options_are_user_errors(fake: FakeDataset, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="detector model not found"):
        prep.prepare(fake, tmp_path / "w", box_source="detector", detector_path=str(tmp_path / "x.onnx"),
                     progress=False)
    with pytest.raises(UserError, match="unknown split"):
        prep.prepare(fake, tmp_path / "w", split="val", progress=False)
    fake.reference_boxes = {}
    with pytest.raises(UserError, match="no reference box file"):
        prep.prepare(fake, tmp_path / "w", split="train", box_source="reference", progress=False)


def test_prepare_on_the_synthetic_scene_via_cli(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """End to end through `statevad prepare` with the real dataset loader (needs the synthetic fixture)."""
    try:
        root = request.getfixturevalue("synthetic_root")
    except pytest.FixtureLookupError:
        pytest.skip("synthetic_root fixture (tests/conftest.py) not available yet")
    from statevad.cli import main

    work = tmp_path / "w"
    assert main(["prepare", "--root", str(root), "--work", str(work), "--boxes", "motion", "--quiet"]) == 0
    for split in ("train", "test"):
        d = open_split(work, split, verify=True)
        assert len(d) > 0 and d.raw.shape[1:] == (7, 32, 32, 3)
        assert d.frame.max() < d.n_frames
    with pytest.raises(SystemExit):  # argparse rejects an unknown box source
        main(["prepare", "--root", str(root), "--work", str(work), "--boxes", "nope"])
