"""Integrity: merged work arrays and model / resume files are checksummed over everything that decides a
result; the work directory is locked against a second prepare; `test` refuses cubes of other options;
writers that hit a full or read-only disk fail with one line and leave no file under a real name."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import fails_one_line as _fails
from helpers import make_work, train_on_one_thread

from statevad import files
from statevad.checkpoint import (
    content_sha256,
    load_checkpoint,
    load_resume,
    save_resume,
    state_dict_sha256,
)
from statevad.cli import main
from statevad.config import with_model_size
from statevad.errors import UserError
from statevad.model import build_model
from statevad.preparation import work_lock
from statevad.synthetic import make_scene
from statevad.training import make_optimizer
from statevad.workdir import open_split

pytestmark = pytest.mark.usefixtures("one_thread")
PREP = ["--boxes", "motion", "--quiet"]
TRAIN = ["--model-size", "tiny", "--epochs", "1", "--batch-size", "8", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_scene(tmp_path_factory.mktemp("integrity") / "scene", n_train=2, n_test=1, n_frames=10,
                      size=(64, 80))


@pytest.fixture(scope="module")
def prepared(scene: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("integrity_work") / "work"
    assert main(["prepare", "--root", str(scene), "--work", str(work), *PREP]) == 0
    return work


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    work = make_work(tmp_path_factory.mktemp("integrity_model") / "work")
    return work, train_on_one_thread(work, *TRAIN)


def _flip(path: Path, offset: int = -100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------------------------- merged arrays
def test_flipped_byte_in_merged_array_is_refused_by_train_and_test_and_repaired_by_prepare(
        scene: Path, prepared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    work = Path(shutil.copytree(prepared, tmp_path / "work"))
    good = (work / "train" / "raw.npy").read_bytes()
    _flip(work / "train" / "raw.npy")
    _fails(["train", "--work", str(work), *TRAIN], capsys, "raw.npy", "checksum")
    assert not (work / "model.pt").exists()
    # prepare re-verifies the arrays it would reuse and merges them again from the clip caches
    assert main(["prepare", "--root", str(scene), "--work", str(work), *PREP]) == 0
    assert (work / "train" / "raw.npy").read_bytes() == good
    open_split(work, "train", verify=True)
    _flip(work / "test" / "flow.npy")
    _fails(["test", "--work", str(work), "--model", str(tmp_path / "none.pt"), "--quiet"], capsys,
           "none.pt")  # the model is read first ...
    with pytest.raises(UserError, match=r"flow\.npy does not match its checksum"):
        open_split(work, "test", verify=True)


# ------------------------------------------------------------------------------------- model files
def _edit_stats(d: dict) -> None:
    d["stats"]["raw_std"] = 7e79


def _edit_w_motion(d: dict) -> None:
    d["preset"]["score"]["w_motion"] = 6.0


def _edit_threshold(d: dict) -> None:
    d["preset"]["box"]["motion_binary_thr"] = 24


def _edit_work_options(d: dict) -> None:
    d["work_manifest"]["options"]["cube"]["motion_thr"] = 1.0


def _edit_history(d: dict) -> None:
    d["history"]["epoch_loss"] = [0.0]


@pytest.mark.parametrize("edit", [_edit_stats, _edit_w_motion, _edit_threshold, _edit_work_options,
                                  _edit_history])
def test_model_file_content_checksum_covers_every_field(edit, trained: tuple[Path, Path],  # noqa: ANN001
                                                        tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    work, model = trained
    data = torch.load(model, weights_only=True)
    assert data["content_sha256"] == content_sha256(data) and data["sha256"] == state_dict_sha256(
        data["state_dict"])
    edit(data)
    bad = tmp_path / "edited.pt"
    torch.save(data, bad)
    with pytest.raises(UserError, match="edited.pt fails its checksum"):
        load_checkpoint(bad)
    _fails(["test", "--work", str(work), "--model", str(bad), "--device", "cpu", "--quiet",
            "--out", str(tmp_path / "r")], capsys, "edited.pt", "fails its checksum")
    assert not (tmp_path / "r" / "metrics.json").exists()


def test_model_files_without_a_content_checksum_still_load(trained: tuple[Path, Path],
                                                           tmp_path: Path) -> None:
    """Files written before the content checksum existed: the weights checksum alone is checked."""
    _, model = trained
    data = torch.load(model, weights_only=True)
    del data["content_sha256"]
    old = tmp_path / "old.pt"
    torch.save(data, old)
    _, ckpt = load_checkpoint(old)
    assert ckpt.sha256 == data["sha256"]
    k = next(k for k, v in data["state_dict"].items() if v.is_floating_point())
    data["state_dict"][k].view(-1)[0] += 1.0
    torch.save(data, old)
    with pytest.raises(UserError, match="fails its checksum"):
        load_checkpoint(old)


def _resume_file(tmp_path: Path) -> tuple[Path, object, object, object]:
    from helpers import tiny_preset

    preset = tiny_preset()
    preset.model = with_model_size(preset.model, "tiny")
    preset.model.frames = 3
    torch.manual_seed(0)
    net = build_model(preset.model)
    opt = make_optimizer(net, preset.train)
    x = torch.rand(2, 3, 3, 32, 32)
    raw, flow = net(x)
    (raw.square().mean() + flow.square().mean()).backward()
    opt.step()
    path = tmp_path / "m.resume.pt"
    save_resume(path, net, opt, 1, preset, "abc", [0.5])
    return path, net, opt, preset


@pytest.mark.parametrize("field", ["epoch", "optimizer", "torch_rng", "history"])
def test_resume_state_checksum_covers_optimizer_rng_and_epoch(field: str, tmp_path: Path) -> None:
    path, net, opt, preset = _resume_file(tmp_path)
    assert load_resume(path, net, opt, preset, "abc") == (1, [0.5])
    data = torch.load(path, weights_only=True)
    if field == "epoch":
        data["epoch"] = 7
    elif field == "optimizer":
        state = next(iter(data["optimizer"]["state"].values()))
        state["exp_avg"].view(-1)[0] += 1.0
    elif field == "torch_rng":
        data["torch_rng"][100] ^= 1
    else:
        data["history"] = [0.1]
    torch.save(data, path)
    with pytest.raises(UserError, match="fails its checksum"):
        load_resume(path, net, opt, preset, "abc")


# ---------------------------------------------------------------------------------- concurrency
def test_a_second_prepare_is_refused_while_one_holds_the_work_dir(scene: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    import os

    work = tmp_path / "w"
    work.mkdir()
    with work_lock(work):
        line = _fails(["prepare", "--root", str(scene), "--work", str(work), *PREP], capsys,
                      "in use by another `statevad prepare`", f"pid {os.getpid()}")
        assert str(work) in line
        assert not (work / "manifest.json").exists()
        # shard runs may share the directory: they take no lock (and never merge or clean)
        assert main(["prepare", "--root", str(scene), "--work", str(work), "--shard", "0/2", *PREP]) == 0
    assert main(["prepare", "--root", str(scene), "--work", str(work), "--shard", "1/2", *PREP]) == 0
    assert main(["prepare", "--root", str(scene), "--work", str(work), "--merge", *PREP]) == 0
    open_split(work, "train", verify=True)


# ------------------------------------------------------------------------------ options vs model
def test_test_refuses_a_work_dir_prepared_with_other_options(trained: tuple[Path, Path], tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    work, model = trained
    other = Path(shutil.copytree(work, tmp_path / "other"))
    m = json.loads((other / "manifest.json").read_text())
    m["options"]["box"]["score_thr"] = 0.3
    m["options"]["cube"]["motion_thr"] = 2.0
    (other / "manifest.json").write_text(json.dumps(m))
    _fails(["test", "--work", str(other), "--model", str(model), "--device", "cpu", "--quiet"], capsys,
           "other options", "box.score_thr", "cube.motion_thr")
    assert main(["test", "--work", str(work), "--model", str(model), "--device", "cpu", "--quiet",
                 "--out", str(tmp_path / "r")]) == 0


def test_re_preparing_one_split_with_other_options_says_the_other_was_dropped(
        scene: Path, prepared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    work = Path(shutil.copytree(prepared, tmp_path / "work"))
    capsys.readouterr()
    assert main(["prepare", "--root", str(scene), "--work", str(work), "--split", "train",
                 "--set", "box.motion_binary_thr=24", *PREP]) == 0
    warn = [ln for ln in capsys.readouterr().err.splitlines() if "warning" in ln]
    assert len(warn) == 1 and "test split" in warn[0] and "dropped" in warn[0], warn
    assert set(json.loads((work / "manifest.json").read_text())["splits"]) == {"train"}
    with pytest.raises(UserError, match="no prepared test split .it was dropped"):
        open_split(work, "test")
    _fails(["test", "--work", str(work), "--model", str(tmp_path / "m.pt"), "--quiet"], capsys, "m.pt")


# --------------------------------------------------------------------------- full / read-only disks
def _refuse_writes_under(monkeypatch: pytest.MonkeyPatch, folder: Path, code: int) -> None:
    real = files.temp_sibling

    def refuse(dest: Path, suffix: str | None = None):  # noqa: ANN202
        if Path(dest).resolve().is_relative_to(folder.resolve()):
            raise OSError(code, "Read-only file system" if code == errno.EROFS else "No space left on device",
                          str(dest))
        return real(dest, suffix)

    monkeypatch.setattr(files, "temp_sibling", refuse)


def test_train_checks_a_read_only_out_before_training(trained: tuple[Path, Path], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import statevad.training

    work, _ = trained
    ro = tmp_path / "ro"
    _refuse_writes_under(monkeypatch, ro, errno.EROFS)
    steps = []
    monkeypatch.setattr(statevad.training, "train_step", lambda *a, **k: steps.append(1) or 0.0)
    _fails(["train", "--work", str(work), *TRAIN, "--out", str(ro / "model.pt")], capsys,
           "--out", "Read-only file system")
    assert steps == []  # refused before any training step
    assert not list(ro.glob("*.pt"))


def test_prepare_on_a_full_disk_is_one_line_and_leaves_no_array(scene: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import statevad.preparation

    def full(path: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(statevad.preparation, "_allocate", full)
    work = tmp_path / "w"
    _fails(["prepare", "--root", str(scene), "--work", str(work), *PREP], capsys, "No space left on device")
    assert not (work / "manifest.json").exists() and not (work / "train" / "raw.npy").exists()
    assert not list((work / "train").glob(".*.tmp*"))


def test_test_on_a_full_disk_is_one_line(trained: tuple[Path, Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    work, model = trained
    out = tmp_path / "r"
    real = files.fsync_file

    def full(path: Path) -> None:
        if path.name.startswith(".objects"):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path)

    monkeypatch.setattr(files, "fsync_file", full)
    _fails(["test", "--work", str(work), "--model", str(model), "--device", "cpu", "--quiet", "--out",
            str(out)], capsys, "No space left on device")
    assert not (out / "objects.csv").exists() and not (out / "metrics.json").exists()
    assert not list(out.glob(".*.tmp*"))
    _refuse_writes_under(monkeypatch, out, errno.EROFS)
    _fails(["test", "--work", str(work), "--model", str(model), "--device", "cpu", "--quiet", "--out",
            str(out / "x")], capsys, "--out", "Read-only file system")
