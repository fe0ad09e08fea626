"""One settings path: preset ← config file ← --set ← flags, the same for every command."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from helpers import make_work

from statevad.checkpoint import load_checkpoint
from statevad.cli import main
from statevad.config import get_preset
from statevad.errors import UserError
from statevad.settings import read_config, resolve

pytestmark = pytest.mark.usefixtures("one_thread")
README = Path(__file__).resolve().parents[1] / "README.md"


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "settings.toml"
    path.write_text(text)
    return path


def test_config_then_set_then_flags(tmp_path: Path) -> None:
    cfg = _toml(tmp_path, "[train]\nepochs = 3\nlr = 0.01\nbatch_size = 16\n[box]\nscore_thr = 0.25\n")
    base = get_preset("ped2")
    only_file = resolve(base, "train", config=cfg)
    assert (only_file.train.epochs, only_file.train.lr, only_file.train.batch_size) == (3, 0.01, 16)
    assert only_file.box == base.box  # train reads only its own sections of a shared file
    with_set = resolve(base, "train", config=cfg, sets=["train.epochs=2"])
    assert (with_set.train.epochs, with_set.train.lr) == (2, 0.01)
    flags = {"train": {"epochs": 1, "lr": None}}  # a flag not given (None) changes nothing
    with_flag = resolve(base, "train", config=cfg, sets=["train.epochs=2"], flags=flags)
    assert (with_flag.train.epochs, with_flag.train.lr) == (1, 0.01)
    prep = resolve(base, "prepare", config=cfg, flags={"box": {"score_thr": 0.6}})
    assert prep.box.score_thr == 0.6 and resolve(base, "prepare", config=cfg).box.score_thr == 0.25
    assert base.train.epochs == 20 and base.box.score_thr == 0.5  # the preset itself is untouched


@pytest.mark.parametrize("text, msg", [
    ("[boxes]\nscore_thr = 0.3\n", "'boxes' is not a settings table"),
    ("epochs = 3\n", "'epochs' is not a settings table"),
    ("[train]\nepoch = 3\n", "train has no field 'epoch'"),
    ("[train]\nepochs = 'three'\n", r"\[train\] epochs = 'three': expected int"),
    ("[train]\nepochs = 2.5\n", "expected int"),
    ("[train]\nbf16 = 1\n", "expected bool"),
    ("[model]\nwidths = [8, 'a', 32]\n", "expected tuple"),
    ("[train\nepochs = 3\n", "not valid TOML"),
])
def test_bad_config_files_are_one_clear_error(tmp_path: Path, text: str, msg: str) -> None:
    with pytest.raises(UserError, match=msg):
        read_config(_toml(tmp_path, text))


def test_config_values_take_the_field_types(tmp_path: Path) -> None:
    data = read_config(_toml(tmp_path, "[model]\nwidths = [8, 16, 32]\n[train]\nlr = 1\nmax_cubes = 5\n"
                                       "[box]\ndetector_path = 'x.onnx'\n"))
    assert data == {"model": {"widths": (8, 16, 32)}, "train": {"lr": 1.0, "max_cubes": 5},
                    "box": {"detector_path": "x.onnx"}}
    assert isinstance(data["train"]["lr"], float)


def test_cli_train_config_set_and_flag_override_in_that_order(tmp_path: Path, capsys) -> None:
    work = make_work(tmp_path / "work")
    cfg = _toml(tmp_path, "[train]\nepochs = 3\nbatch_size = 8\nseed = 7\n[score]\nepsilon = 0.0\n")
    base = ["train", "--work", str(work), "--model-size", "tiny", "--device", "cpu", "--quiet",
            "--config", str(cfg)]
    runs = {"file": [], "set": ["--set", "train.epochs=2"],
            "flag": ["--set", "train.epochs=2", "--epochs", "1"]}
    epochs = {}
    for name, extra in runs.items():
        out = tmp_path / f"{name}.pt"
        assert main([*base, *extra, "--out", str(out)]) == 0
        preset = load_checkpoint(out)[1].preset
        epochs[name] = preset.train.epochs
        assert (preset.train.batch_size, preset.train.seed) == (8, 7)
        assert preset.score.epsilon == get_preset("ped2").score.epsilon  # [score] is not train's section
    assert epochs == {"file": 3, "set": 2, "flag": 1}
    # statevad test reads the same file's [score] table (and --set / flags override it)
    test = ["test", "--work", str(work), "--model", str(tmp_path / "flag.pt"), "--quiet",
            "--config", str(cfg)]
    eps_set = ["--set", "score.epsilon=0.003"]
    for name, extra in (("t1", []), ("t2", eps_set), ("t3", [*eps_set, "--epsilon", "0.004"])):
        assert main([*test, "--out", str(tmp_path / name), *extra]) == 0
    metrics = [json.loads((tmp_path / t / "metrics.json").read_text()) for t in ("t1", "t2", "t3")]
    assert [m["score"]["epsilon"] for m in metrics] == [0.0, 0.003, 0.004]
    capsys.readouterr()


def test_cli_bad_config_is_one_line_exit_2(tmp_path: Path, capsys) -> None:
    work = make_work(tmp_path / "work")
    cfg = _toml(tmp_path, "[train]\nepochs = -\n")
    assert main(["train", "--work", str(work), "--config", str(cfg), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not valid TOML" in err and "Traceback" not in err
    assert main(["test", "--work", str(work), "--config", str(tmp_path / "missing.toml"), "--quiet"]) == 2
    assert "no such file" in capsys.readouterr().err


@pytest.mark.slow
def test_readme_python_api_example_runs(tmp_path: Path, monkeypatch, capsys) -> None:
    """The README's Python API section, run as it is written (on the bundled sample)."""
    text = README.read_text()
    section = text[text.index("## Python API"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})  # noqa: S102 - the project's own README
    out = capsys.readouterr().out.split()
    assert 0.5 <= float(out[0]) <= 1.0 and int(out[1]) == 40
    assert (tmp_path / "results" / "scores.csv").is_file() and (tmp_path / "work" / "model.pt").is_file()


def test_prepare_test_and_score_read_the_config_file(synthetic_root: Path, tmp_path: Path, capsys) -> None:
    """`--config` works for every command: prepare records the file's [box]/[cube] values, test and score
    use its [score] values, and `--set` / a flag still override them."""
    import json

    from helpers import tiny_model

    cfg = _toml(tmp_path, "[box]\nmotion_binary_thr = 25\n[cube]\nlength = 2\n[score]\nepsilon = 0.0\n"
                          "w_motion = 0.0\n")
    work = tmp_path / "work"
    assert main(["prepare", "--root", str(synthetic_root), "--work", str(work), "--boxes", "motion",
                 "--config", str(cfg), "--set", "cube.length=1", "--quiet"]) == 0
    options = json.loads((work / "manifest.json").read_text())["options"]
    assert options["box"]["motion_binary_thr"] == 25 and options["cube"]["length"] == 1  # --set wins
    model = tiny_model(tmp_path / "tiny.pt")
    video = str(sorted(p for p in (synthetic_root / "test").iterdir() if p.is_dir())[0])
    score = ["score", video, "--model", str(model), "--boxes", "motion", "--max-frames", "12", "--no-video",
             "--quiet", "--config", str(cfg)]
    assert main([*score, "--out", str(tmp_path / "s")]) == 0
    events = json.loads((tmp_path / "s" / "events.json").read_text())
    assert events["perturbation epsilon"] == 0.0 and events["w_motion"] == 0.0
    overridden = ["--set", "score.epsilon=0.005", "--w-motion", "2"]
    assert main([*score, "--out", str(tmp_path / "s2"), *overridden]) == 0
    events = json.loads((tmp_path / "s2" / "events.json").read_text())
    assert events["perturbation epsilon"] == 0.005 and events["w_motion"] == 2.0
    capsys.readouterr()
