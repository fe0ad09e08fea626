import subprocess
import sys

import pytest

from statevad.cli import main


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in ("prepare", "train", "test", "score", "demo", "info"):
        assert name in out


def test_console_entry_point_runs():
    res = subprocess.run([sys.executable, "-m", "statevad", "--version"], capture_output=True, text=True)
    assert res.returncode == 0
    assert "statevad" in res.stdout


def test_set_overrides_any_preset_field_with_its_type():
    import pytest

    from statevad.config import get_preset
    from statevad.errors import UserError
    from statevad.settings import apply_sets

    base = get_preset("ped2")
    p = apply_sets(base, ["box.score_thr=0.3", "box.detector_grid=1", "box.detector_tiles=2",
                          "box.motion_wrap=true", "flow.dis_preset=fast", "cube.length=2"],
                   ("box", "flow", "cube"))
    assert (p.box.score_thr, p.box.detector_tiles, p.box.motion_wrap) == (0.3, 2, True)
    assert isinstance(p.box.detector_tiles, int) and p.flow.dis_preset == "fast" and p.cube.length == 2
    assert base.box.score_thr == 0.5 and base.box.detector_tiles == 1  # the preset itself is untouched
    for bad, msg in [("box.nope=1", "has no field 'nope'"), ("box.min_area=big", "not a valid int"),
                     ("model.width=3", "SECTION in box"), ("score_thr=0.3", "SECTION.FIELD=VALUE"),
                     ("box.motion_wrap=maybe", "not a valid bool")]:
        with pytest.raises(UserError, match=msg):
            apply_sets(base, [bad], ("box", "flow", "cube"))


def test_prepare_rejects_a_bad_set_with_one_line(synthetic_root, tmp_path, capsys):
    rc = main(["prepare", "--root", str(synthetic_root), "--work", str(tmp_path / "w"),
               "--set", "box.nope=1"])
    err = capsys.readouterr().err
    assert rc != 0 and "Traceback" not in err and "box has no field 'nope'" in err
    assert not (tmp_path / "w" / "manifest.json").exists()
    # the ped2 preset's detector grid and column tiles together: one line saying which to set to 1
    rc = main(["prepare", "--root", str(synthetic_root), "--work", str(tmp_path / "w"), "--preset", "ped2",
               "--set", "box.detector_tiles=2"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and "set one of them to 1" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "w" / "manifest.json").exists()
