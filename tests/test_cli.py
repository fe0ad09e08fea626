import subprocess
import sys

from statevad.cli import main


def test_help_lists_subcommands(capsys):
    try:
        main(["--help"])
    except SystemExit as exc:
        assert exc.code == 0
    out = capsys.readouterr().out
    for name in ("prepare", "train", "test", "score", "demo", "info"):
        assert name in out


def test_console_entry_point_runs():
    res = subprocess.run([sys.executable, "-m", "statevad", "--version"], capture_output=True, text=True)
    assert res.returncode == 0
    assert "statevad" in res.stdout
