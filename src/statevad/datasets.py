"""Dataset layouts → an ordered list of clips with global frame indices, scenes and ground truth.

The layout is detected from the root folder. Supported (see ``LAYOUTS``):

* ``ped2-video`` — the project's Ped2 copy: ``video/{training,testing}/*.mkv``,
  ``gt/frame_labels_test.npy``, ``gt/pixel_masks_test_packbits.npz`` and ``boxes_reference_{train,test}.npz``
  (the original pipeline's boxes, in the ``boxes``/``offsets`` format of ``../shared/data/ped2``).
* ``ucsd`` — the official UCSD release (``UCSDped1``/``UCSDped2``): ``Train/TrainNNN/*.tif``,
  ``Test/TestNNN/*.tif``, ``Test/TestNNN_gt/*.bmp`` pixel masks and the ``UCSDpedN.m`` interval file.
* ``frames`` — the frames-folder release used by most papers: ``training/frames/NN/*.jpg``,
  ``testing/frames/NN/*.jpg``, labels from ``<name>.mat`` (variable ``gt``: per clip a 2xK array of 1-based
  inclusive [start; end] intervals) or ``testing/test_frame_mask/NN.npy``.
* ``avenue`` — CUHK Avenue as published: ``training_videos/*.avi``, ``testing_videos/*.avi``,
  ``ground_truth_demo/testing_label_mask/N_label.mat`` (``volLabel``: a cell of per-frame masks).
* ``shanghaitech`` — ``training/videos/*.avi`` (or ``training/videosFrame/<clip>/``),
  ``testing/frames/<scene>_<clip>/*.jpg``, ``testing/test_frame_mask/<clip>.npy``,
  ``testing/test_pixel_mask/<clip>.npy``; the scene id is the part of the clip name before ``_``.
* ``generic`` — a user's own footage: ``train/`` and ``test/`` holding video files and/or frame folders (one
  clip each). Optional labels for test clips, in the root or in ``test/``: ``labels.json`` =
  ``{"<clip>": [[first, last], ...]}`` with **0-based inclusive** frame indices, or ``labels.csv`` with header
  ``clip,start,end`` (same convention). A test clip without an entry has unknown labels (-1).

Global frame index = the clips of a split concatenated in layout order, frames in order (spec 1.2). Frame
counts come from container headers or folder listings (fast); :meth:`Clip.read` verifies them.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TypeVar

import numpy as np

from statevad.errors import UserError
from statevad.events import intervals_to_labels
from statevad.io import IMAGE_EXTS, VIDEO_EXTS, list_images, natural_key, open_source, read_frames

SPLITS = ("train", "test")
T = TypeVar("T")


@dataclass
class Clip:
    """One video or frame folder of a split, placed in the split's global frame index by ``start``.

    Frames are decoded only on :meth:`read` / :meth:`iter_frames` (a dataset index must be cheap to build);
    pixel masks only on :meth:`pixel_masks`, through ``mask_loader`` (they can be gigabytes for Avenue).
    """

    name: str
    split: str
    source: Path
    n_frames: int
    start: int
    scene: str = "0"
    size: tuple[int, int] | None = None
    labels: np.ndarray | None = None
    mask_loader: Callable[[], np.ndarray] | None = field(default=None, repr=False)

    def read(self) -> np.ndarray:
        """All frames, (n_frames, H, W, 3) uint8 BGR; a count different from the index is an error."""
        frames = read_frames(self.source, strict=True)
        if len(frames) != self.n_frames:
            raise UserError(f"{self.source}: decoded {len(frames)} frames but the dataset index expects "
                            f"{self.n_frames}; the file is truncated or its header is wrong (re-encode it)")
        return frames

    def iter_frames(self) -> Iterator[np.ndarray]:
        with open_source(self.source, strict=True) as src:
            yield from src

    def pixel_masks(self) -> np.ndarray | None:
        """(n_frames, H, W) bool pixel ground truth, loaded on demand; None where the dataset has none."""
        if self.mask_loader is None:
            return None
        masks = np.asarray(self.mask_loader()).astype(bool)
        where = f"pixel masks of clip {self.name} ({self.source})"
        if masks.ndim != 3 or len(masks) != self.n_frames:
            raise UserError(f"{where} have shape {masks.shape}; expected ({self.n_frames}, H, W), one mask "
                            f"per frame")
        if self.size is not None and masks.shape[1:] != self.size:
            raise UserError(f"{where} are {masks.shape[2]}x{masks.shape[1]} but the frames are "
                            f"{self.size[1]}x{self.size[0]} (W x H); the masks belong to another video")
        return masks


@dataclass
class Dataset:
    """A detected layout: ordered clips per split, ground truth, and the preset name that suits it."""

    root: Path
    layout: str
    name: str
    train: list[Clip]
    test: list[Clip]
    reference_boxes: dict[str, Path] = field(default_factory=dict)

    def clips(self, split: str) -> list[Clip]:
        if split not in SPLITS:
            raise UserError(f"unknown split {split!r}: use 'train' or 'test'")
        return self.train if split == "train" else self.test

    def n_frames(self, split: str) -> int:
        return sum(c.n_frames for c in self.clips(split))

    def labels(self, split: str = "test") -> np.ndarray | None:
        clips = self.clips(split)
        if not any(c.labels is not None for c in clips):
            return None
        parts = [c.labels.astype(np.int8) if c.labels is not None else np.full(c.n_frames, -1, np.int8)
                 for c in clips]
        return np.concatenate(parts) if parts else np.zeros(0, np.int8)


# ------------------------------------------------------------------------------------------ helpers
def _subdirs(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=lambda p: natural_key(p.name))


def _videos(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTS),
                  key=lambda p: natural_key(p.name))


def _probe(source: Path) -> tuple[int, tuple[int, int] | None]:
    """Frame count and (H, W) without decoding the whole clip."""
    # open_source(strict) already rejects empty folders, non-image files, 0-byte and unopenable videos.
    with open_source(source, strict=True) as src:
        n, size = src.n_frames, src.size
    if not n:
        n = len(read_frames(source, strict=True))
    return int(n), size


def _make_clips(split: str, sources: list[tuple[str, Path, str]]) -> list[Clip]:
    """Probe every clip (header / listing only) and assign global start indices in layout order."""
    from tqdm import tqdm

    clips, start = [], 0
    # ShanghaiTech has ~440 clips: show progress there, stay silent on small datasets and in tests.
    for name, source, scene in tqdm(sources, desc=f"indexing {split} clips", unit="clip", leave=False,
                                    disable=len(sources) < 100, file=sys.stderr):
        n, size = _probe(source)
        clips.append(Clip(name=name, split=split, source=source, n_frames=n, start=start, scene=scene,
                          size=size))
        start += n
    return clips


def _check_labels(clip: Clip, labels: np.ndarray, origin: Path | str) -> np.ndarray:
    labels = (np.asarray(labels).reshape(-1) > 0).astype(np.uint8)
    if len(labels) != clip.n_frames:
        raise UserError(f"{origin}: ground truth of clip {clip.name} has {len(labels)} frames but the clip "
                        f"has {clip.n_frames}; the labels do not belong to this video")
    return labels


def _intervals_to_labels(n: int, intervals: list[tuple[int, int]], one_based: bool, origin: Path | str,
                         clip: str) -> np.ndarray:
    """Inclusive intervals to 0/1 labels; an interval outside the clip means the file belongs to other
    videos, so it is an error that quotes the file's own (1- or 0-based) numbers."""
    try:
        return intervals_to_labels(intervals, n, first=1 if one_based else 0, where=f" of clip {clip}")
    except ValueError as exc:
        raise UserError(f"{origin}: {exc}") from None


def _clip_number(name: str) -> int | None:
    """The number a layout gives a clip (``08`` -> 8, ``Test003`` -> 3; ``01_0014`` -> None, not one)."""
    m = re.fullmatch(r"[A-Za-z_-]*0*(\d+)", name)
    return int(m.group(1)) if m else None


def _per_clip(test: list[Clip], items: list[T], origin: Path | str) -> list[tuple[Clip, T]]:
    """Pair test clips with a label file's per-clip entries (entry k-1 belongs to clip number k).

    By the clip's number whenever every clip has a distinct one in range, so that a partial download (e.g.
    test videos 08 and 17-21 only) gets its own labels; by position only for unnumbered clips, and then the
    counts must match."""
    numbers = [_clip_number(c.name) for c in test]
    if (all(n is not None for n in numbers) and len(set(numbers)) == len(numbers)
            and all(1 <= n <= len(items) for n in numbers)):  # type: ignore[operator]
        return [(c, items[n - 1]) for c, n in zip(test, numbers, strict=True)]  # type: ignore[operator]
    if len(items) != len(test):
        raise UserError(f"{origin}: intervals for {len(items)} clips but {len(test)} test clips, and the "
                        "clip names do not number them")
    return list(zip(test, items, strict=True))


def _guess_name(root: Path) -> str:
    """Preset from the root folder's own name only: a parent such as ``~/avenue_work/my_footage`` must not
    turn the user's footage into Avenue."""
    text = root.resolve().name.lower()
    for key, name in (("ped2", "ped2"), ("avenue", "avenue"), ("shanghai", "shanghaitech")):
        if key in text:
            return name
    return "generic"


# --------------------------------------------------------------------------------------- layouts
def _load_ped2_video(root: Path) -> Dataset:
    train = _make_clips("train", [(p.stem, p, "0") for p in _videos(root / "video" / "training")])
    test = _make_clips("test", [(p.stem, p, "0") for p in _videos(root / "video" / "testing")])
    label_file = root / "gt" / "frame_labels_test.npy"
    if label_file.exists():
        labels = np.load(label_file, allow_pickle=False).reshape(-1)
        total = sum(c.n_frames for c in test)
        if len(labels) != total:
            raise UserError(f"{label_file}: {len(labels)} labels but the test clips have {total} frames")
        for c in test:
            c.labels = _check_labels(c, labels[c.start:c.start + c.n_frames], label_file)
    mask_file = root / "gt" / "pixel_masks_test_packbits.npz"
    if mask_file.exists():
        for c in test:
            c.mask_loader = _ped2_mask_loader(mask_file, c)
    return Dataset(root, "ped2-video", "ped2", train, test, _reference_boxes(root))


def _reference_boxes(root: Path) -> dict[str, Path]:
    """``boxes_reference_{train,test}.npz`` in the root, whatever the layout (spec 3.5 boxes)."""
    files = {s: root / f"boxes_reference_{s}.npz" for s in SPLITS}
    return {s: f for s, f in files.items() if f.is_file()}


# Mask loaders are functools.partial objects of module-level functions, not closures: clips travel to
# `prepare --jobs N` worker processes, and closures or lambdas cannot be pickled.
def _load_ped2_masks(path: Path, name: str, width: int | None) -> np.ndarray:
    with np.load(path, allow_pickle=False) as data:
        if name not in data.files:
            raise UserError(f"{path}: no pixel masks for test clip {name} (keys: "
                            f"{', '.join(data.files[:5])}...); expected one key per test clip")
        packed = data[name]
    width = width if width else packed.shape[-1] * 8
    return np.unpackbits(packed, axis=-1)[..., :width].astype(bool)


def _ped2_mask_loader(path: Path, clip: Clip) -> Callable[[], np.ndarray]:
    return partial(_load_ped2_masks, path, clip.name, clip.size[1] if clip.size else None)


def _ucsd_root(root: Path) -> Path:
    if (root / "Train").is_dir() and (root / "Test").is_dir():
        return root
    kids = [p for p in _subdirs(root) if p.name.lower().startswith("ucsdped") and (p / "Train").is_dir()]
    if len(kids) > 1:
        names = ", ".join(p.name for p in kids)
        raise UserError(f"{root}: holds {names}; give one of them as the dataset root (e.g. {kids[-1]})")
    return kids[0] if kids else root


def _parse_ucsd_m(path: Path) -> list[list[tuple[int, int]]]:
    """Intervals per test clip from ``UCSDpedN.m`` (``TestVideoFile{end+1}.gt_frame = [61:180, ...];``)."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        m = re.search(r"gt_frame\s*=\s*\[([^\]]*)\]", line)
        if m:
            out.append([(int(a), int(b)) for a, b in re.findall(r"(\d+)\s*:\s*(\d+)", m.group(1))])
    return out


def _load_ucsd(root: Path) -> Dataset:
    base = _ucsd_root(root)
    train_dirs = [p for p in _subdirs(base / "Train") if "Train" in p.name]
    test_dirs = [p for p in _subdirs(base / "Test") if "Test" in p.name and "_gt" not in p.name]
    train = _make_clips("train", [(p.name, p, "0") for p in train_dirs])
    test = _make_clips("test", [(p.name, p, "0") for p in test_dirs])
    m_files = sorted(base.glob("Test/UCSDped*.m")) + sorted(base.glob("UCSDped*.m"))
    if m_files:
        intervals = _parse_ucsd_m(m_files[0])
        for c, iv in _per_clip(test, intervals, m_files[0]):
            labels = _intervals_to_labels(c.n_frames, iv, True, m_files[0], c.name)
            c.labels = _check_labels(c, labels, m_files[0])
    for c in test:
        gt = c.source.parent / f"{c.name}_gt"
        if gt.is_dir():
            c.mask_loader = _folder_mask_loader(gt)
            if c.labels is None:
                masks = c.pixel_masks()
                c.labels = masks.reshape(len(masks), -1).any(axis=1).astype(np.uint8)
    name = "ped2" if "ped2" in base.name.lower() else ("ped1" if "ped1" in base.name.lower() else "generic")
    return Dataset(root, "ucsd", "ped2" if name == "ped1" else name, train, test)


def _load_folder_masks(folder: Path) -> np.ndarray:
    return read_frames(folder, strict=True)[..., 0] > 0


def _folder_mask_loader(folder: Path) -> Callable[[], np.ndarray]:
    return partial(_load_folder_masks, folder)


def _mat_intervals(path: Path) -> list[list[tuple[int, int]]]:
    from scipy.io import loadmat

    data = loadmat(str(path))
    if "gt" not in data:
        raise UserError(f"{path}: no variable 'gt' (expected a cell of 2xK [start; end] intervals per clip)")
    cells = np.asarray(data["gt"]).reshape(-1)
    out = []
    for cell in cells:
        arr = np.asarray(cell, dtype=np.int64)
        arr = arr.reshape(2, -1) if arr.size else np.zeros((2, 0), np.int64)
        out.append([(int(a), int(b)) for a, b in zip(arr[0], arr[1], strict=True)])
    return out


def _scene_of(name: str) -> str:
    """ShanghaiTech clip names are ``<scene>_<clip>`` (``01_0014``); other datasets are one scene."""
    return name.split("_")[0] if _SHT_NAME.match(name) else "0"


_SHT_NAME = re.compile(r"^\d{2}_\d{3,4}(\.avi)?$")


def _load_frames_layout(root: Path) -> Dataset:
    train_dirs = _subdirs(root / "training" / "frames")
    test_dirs = _subdirs(root / "testing" / "frames")
    train = _make_clips("train", [(p.name, p, _scene_of(p.name)) for p in train_dirs])
    test = _make_clips("test", [(p.name, p, _scene_of(p.name)) for p in test_dirs])
    mats = sorted(root.glob("*.mat"))
    mask_dir = root / "testing" / "test_frame_mask"
    if mats:
        intervals = _mat_intervals(mats[0])
        for c, iv in _per_clip(test, intervals, mats[0]):
            c.labels = _check_labels(c, _intervals_to_labels(c.n_frames, iv, True, mats[0], c.name), mats[0])
    elif mask_dir.is_dir():
        _labels_from_npy(test, mask_dir)
    sht = bool(test or train) and all(_SHT_NAME.match(c.name) for c in train + test)
    return Dataset(root, "frames", "shanghaitech" if sht else _guess_name(root), train, test)


def _labels_from_npy(test: list[Clip], mask_dir: Path) -> None:
    for c in test:
        f = mask_dir / f"{c.name}.npy"
        if f.exists():
            c.labels = _check_labels(c, np.load(f, allow_pickle=False), f)


def _load_avenue(root: Path) -> Dataset:
    train = _make_clips("train", [(p.stem, p, "0") for p in _videos(root / "training_videos")])
    test = _make_clips("test", [(p.stem, p, "0") for p in _videos(root / "testing_videos")])
    gt_dir = root / "ground_truth_demo" / "testing_label_mask"
    numbers = [_clip_number(c.name) for c in test]
    by_number = all(n is not None for n in numbers) and len(set(numbers)) == len(numbers)
    for k, c in enumerate(test, start=1):
        f = gt_dir / f"{numbers[k - 1] if by_number else k}_label.mat"  # 08.avi <-> 8_label.mat
        if f.exists():
            masks = _vol_label(f)
            c.labels = _check_labels(c, masks.reshape(len(masks), -1).any(axis=1), f)
            c.mask_loader = partial(_vol_label, f)
    return Dataset(root, "avenue", "avenue", train, test)


def _vol_label(path: Path) -> np.ndarray:
    from scipy.io import loadmat

    data = loadmat(str(path))
    if "volLabel" not in data:
        raise UserError(f"{path}: no variable 'volLabel' (expected a 1 x n_frames cell of masks)")
    cells = np.asarray(data["volLabel"]).reshape(-1)
    return np.stack([np.asarray(m) > 0 for m in cells])


def _load_shanghaitech(root: Path) -> Dataset:
    tr = root / "training"
    if _videos(tr / "videos"):
        train_src = [(p.stem, p, p.stem.split("_")[0]) for p in _videos(tr / "videos")]
    else:
        train_src = [(p.name.removesuffix(".avi"), p, p.name.split("_")[0])
                     for p in _subdirs(tr / "videosFrame")]
    test_src = [(p.name, p, p.name.split("_")[0]) for p in _subdirs(root / "testing" / "frames")]
    train = _make_clips("train", train_src)
    test = _make_clips("test", test_src)
    _labels_from_npy(test, root / "testing" / "test_frame_mask")
    pix = root / "testing" / "test_pixel_mask"
    for c in test:
        f = pix / f"{c.name}.npy"
        if f.exists():
            c.mask_loader = partial(np.load, f, allow_pickle=False)
    return Dataset(root, "shanghaitech", "shanghaitech", train, test)


def _generic_sources(folder: Path) -> list[tuple[str, Path, str]]:
    if not folder.is_dir():
        return []
    items = [p for p in folder.iterdir() if not p.name.startswith(".")
             and ((p.is_file() and p.suffix.lower() in VIDEO_EXTS) or (p.is_dir() and list_images(p)))]
    items.sort(key=lambda p: natural_key(p.name))
    names = [p.stem if p.is_file() else p.name for p in items]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise UserError(f"{folder}: clip names {sorted(dup)} appear twice (a video and a folder with one "
                        "name); rename one of them")
    return [(n, p, "0") for n, p in zip(names, items, strict=True)]


def _read_generic_labels(path: Path) -> dict[str, list[tuple[int, int]]]:
    try:
        if path.suffix == ".json":
            raw = json.loads(path.read_text(encoding="utf-8-sig"))
            if not isinstance(raw, dict):
                raise ValueError("top level must be an object {clip: [[first, last], ...]}")
            return {str(k): [(int(a), int(b)) for a, b in v] for k, v in raw.items()}
        out: dict[str, list[tuple[int, int]]] = {}
        with open(path, newline="", encoding="utf-8-sig") as fh:  # a byte-order mark (Excel) is accepted
            reader = csv.DictReader(fh)
            for row in reader:
                if None in row or any(row.get(k) is None for k in ("clip", "start", "end")):
                    raise ValueError(f"row {reader.line_num} does not have the 3 fields clip,start,end")
                out.setdefault(row["clip"].strip(), []).append((int(row["start"]), int(row["end"])))
        return out
    except RecursionError:
        raise UserError(f"{path}: nested too deeply to be a labels file") from None
    except (ValueError, KeyError, TypeError, csv.Error, UnicodeDecodeError, OverflowError) as exc:
        raise UserError(f"{path}: malformed labels file ({str(exc)[:200]}); expected labels.json "
                        '{"clip": [[first, last], ...]} or labels.csv with header clip,start,end') from None


def _load_generic(root: Path) -> Dataset:
    train = _make_clips("train", _generic_sources(root / "train"))
    test = _make_clips("test", _generic_sources(root / "test"))
    for cand in (root / "labels.json", root / "labels.csv", root / "test" / "labels.json",
                 root / "test" / "labels.csv"):
        if cand.exists():
            table = _read_generic_labels(cand)
            names = {c.name for c in test}
            unknown = sorted(set(table) - names)
            if unknown:
                raise UserError(f"{cand}: labels for clip(s) {unknown[:5]} that are not in {root / 'test'}")
            for c in test:
                if c.name in table:
                    labels = _intervals_to_labels(c.n_frames, table[c.name], False, cand, c.name)
                    c.labels = _check_labels(c, labels, cand)
            break
    return Dataset(root, "generic", _guess_name(root), train, test)


def _is_ped2_video(r: Path) -> bool:
    return (r / "video" / "training").is_dir() or (r / "video" / "testing").is_dir()


def _is_ucsd(r: Path) -> bool:
    return (_ucsd_root(r) / "Train").is_dir() and (_ucsd_root(r) / "Test").is_dir()


def _is_avenue(r: Path) -> bool:
    return (r / "training_videos").is_dir() or (r / "testing_videos").is_dir()


def _is_shanghaitech(r: Path) -> bool:
    return ((r / "training" / "videos").is_dir() or (r / "training" / "videosFrame").is_dir()) and \
        (r / "testing" / "frames").is_dir()


def _is_frames(r: Path) -> bool:
    return (r / "training" / "frames").is_dir() or (r / "testing" / "frames").is_dir()


def _is_generic(r: Path) -> bool:
    return (r / "train").is_dir() or (r / "test").is_dir()


LAYOUTS: list[tuple[str, Callable[[Path], bool], Callable[[Path], Dataset], str]] = [
    ("ped2-video", _is_ped2_video, _load_ped2_video, "video/training/*.mkv + video/testing/*.mkv"),
    ("ucsd", _is_ucsd, _load_ucsd, "UCSDpedN/Train/TrainNNN/*.tif + Test/TestNNN/*.tif"),
    ("avenue", _is_avenue, _load_avenue, "training_videos/*.avi + testing_videos/*.avi"),
    ("shanghaitech", _is_shanghaitech, _load_shanghaitech,
     "training/videos/*.avi + testing/frames/<scene>_<clip>/*.jpg"),
    ("frames", _is_frames, _load_frames_layout, "training/frames/NN/*.jpg + testing/frames/NN/*.jpg"),
    ("generic", _is_generic, _load_generic, "train/ + test/ with videos or frame folders"),
]


def detect_layout(root: Path) -> str:
    """First matching entry of ``LAYOUTS``; order matters (ShanghaiTech's tree also looks like ``frames``)."""
    root = Path(root)
    for name, test, _, _ in LAYOUTS:
        if test(root):
            return name
    expected = "; ".join(f"{n}: {d}" for n, _, _, d in LAYOUTS)
    raise UserError(f"{root}: unknown dataset layout. Expected one of — {expected}")


def load_dataset(root: str | Path) -> Dataset:
    root = Path(root)
    if not root.exists():
        raise UserError(f"{root}: dataset root does not exist")
    if not root.is_dir():
        raise UserError(f"{root}: a dataset root must be a folder (for a single video use `statevad score`)")
    if not any(root.iterdir()):
        raise UserError(f"{root}: empty folder, no dataset here")
    layout = detect_layout(root)
    loader = next(load for name, _, load, _ in LAYOUTS if name == layout)
    ds = loader(root)
    ds.reference_boxes = ds.reference_boxes or _reference_boxes(root)
    if not ds.train and not ds.test:
        raise UserError(f"{root}: layout {layout} detected but no clips were found in it")
    sizes = {c.size for c in ds.train + ds.test if c.size}
    if len(sizes) > 1:
        # Different sizes across clips are legal (user footage may mix cameras): warn only.
        import warnings

        warnings.warn(f"{root}: clips have different frame sizes {sorted(sizes)}", stacklevel=2)
    return ds


# ------------------------------------------------------------------------------------------ describe
def dataset_summary(ds: Dataset) -> dict[str, object]:
    sizes = sorted({c.size for c in ds.train + ds.test if c.size})
    out: dict[str, object] = {"root": str(ds.root), "layout": ds.layout, "preset": ds.name,
                              "resolution": [f"{w}x{h}" for h, w in sizes],
                              "reference_boxes": sorted(ds.reference_boxes)}
    for split in SPLITS:
        clips = ds.clips(split)
        entry: dict[str, object] = {"clips": len(clips), "frames": sum(c.n_frames for c in clips)}
        labels = ds.labels(split)
        if labels is not None:
            entry["labelled_frames"] = int((labels >= 0).sum())
            entry["anomalous_frames"] = int((labels == 1).sum())
        entry["pixel_masks"] = any(c.mask_loader is not None for c in clips)
        entry["scenes"] = sorted({c.scene for c in clips})
        entry["clip_list"] = [{"name": c.name, "frames": c.n_frames, "scene": c.scene,
                               "anomalous": None if c.labels is None else int(c.labels.sum())} for c in clips]
        out[split] = entry
    return out


def source_summary(path: Path) -> dict[str, object]:
    """One video or frame folder, decoded in full (strict): a header count can outlive a truncation and a
    folder listing says nothing about mixed sizes, and ``info`` on one clip is where a user checks that."""
    with open_source(path, strict=True) as src:
        fps = src.fps
        n = sum(1 for _ in src)
        size = src.size
    return {"source": str(path), "kind": "frame folder" if path.is_dir() else "video",
            "frames": n, "resolution": None if size is None else f"{size[1]}x{size[0]}", "fps": fps}


def _has_images(folder: Path) -> bool:
    """A folder with image files is a frame folder (even with stray files, which strict reading reports)."""
    return folder.is_dir() and any(p.suffix.lower() in IMAGE_EXTS for p in list_images(folder))


def describe(path: str | Path, as_json: bool = False) -> int:
    """``statevad info``: a dataset root, a single video / frame folder, or a stream URL."""
    from statevad.io import file_url_path, is_url, probe_stream

    local = file_url_path(str(path)) if not isinstance(path, Path) else None
    if local is None and not isinstance(path, Path) and is_url(str(path)):
        info = probe_stream(str(path))
        if as_json:
            print(json.dumps(info))
        else:
            print(f"stream: {path}\nframes: {info['frames'] or 'unknown (live)'}\n"
                  f"resolution: {info['resolution']}\nfps: {info['fps'] or 'unknown'}")
        return 0
    path = local if local is not None else Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file or folder")
    is_dataset = path.is_dir() and any(test(path) for _, test, _, _ in LAYOUTS)
    if not is_dataset and (path.is_file() or _has_images(path)):
        info = source_summary(path)
        if as_json:
            print(json.dumps(info))
        else:
            print(f"{info['kind']}: {path}\nframes: {info['frames']}\nresolution: {info['resolution']}\n"
                  f"fps: {info['fps']}")
        return 0
    ds = load_dataset(path)
    info = dataset_summary(ds)
    if as_json:
        print(json.dumps(info))
        return 0
    print(f"dataset: {ds.root}\nlayout: {ds.layout} (preset {ds.name})\n"
          f"resolution: {', '.join(info['resolution']) or 'unknown'}")
    for split in SPLITS:
        e = info[split]
        line = f"{split}: {e['clips']} clips, {e['frames']} frames"
        if "anomalous_frames" in e:
            line += f", labels on {e['labelled_frames']} frames ({e['anomalous_frames']} anomalous)"
        elif split == "test":
            line += ", no labels"
        if e["pixel_masks"]:
            line += ", pixel masks"
        if len(e["scenes"]) > 1:
            line += f", {len(e['scenes'])} scenes"
        print(line)
    if ds.reference_boxes:
        print(f"reference boxes: {', '.join(sorted(ds.reference_boxes))}")
    return 0
