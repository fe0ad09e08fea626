"""`statevad test` scores the fusion's parts like the fused score (metrics.json ``parts``, issue 18): STATE
alone and the per-box flow speed, with no learning, come out of the same run, so a user's own labelled
footage says whether the learned score beats the trivial one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import make_work, tiny_preset

from statevad.evaluation import run_test
from statevad.training import train

pytestmark = pytest.mark.usefixtures("one_thread")


def test_each_part_scores_as_a_run_with_only_its_weights(tmp_path: Path) -> None:
    work = make_work(tmp_path / "work")
    # the ped2 fallback weights (no selection): raw 1, flow 1, motion 4; the work dir has no class scores
    model = train(work, tiny_preset(select=False), out=work / "model.pt", progress=False)
    full = run_test(work, model, out=tmp_path / "full", progress=False)
    parts = full["parts"]
    assert set(parts) == {"state_only", "box_speed_no_learning"}
    assert json.loads((tmp_path / "full" / "metrics.json").read_text())["parts"] == parts
    for part in parts.values():
        assert set(part) == {"micro_auroc", "macro_auroc", "eer"} and 0 <= part["micro_auroc"] <= 1
    # STATE alone is the run without the motion term
    state = run_test(work, model, out=tmp_path / "state", progress=False, overrides={"w_motion": 0.0})
    assert parts["state_only"]["micro_auroc"] == pytest.approx(state["micro_auroc"])
    assert parts["state_only"]["macro_auroc"] == pytest.approx(state["macro_auroc"])
    # the box speed is the motion term alone (its z-score is the speed, shifted and scaled: the same ranks)
    speed = run_test(work, model, out=tmp_path / "speed", progress=False,
                     overrides={"w_raw": 0.0, "w_flow": 0.0, "w_motion": 1.0})
    assert parts["box_speed_no_learning"]["micro_auroc"] == pytest.approx(speed["micro_auroc"])
    assert speed["parts"]["box_speed_no_learning"] == parts["box_speed_no_learning"]  # weights do not count


def test_the_command_line_prints_the_parts(tmp_path: Path, capsys) -> None:
    from statevad.cli import main

    work = make_work(tmp_path / "work")
    train(work, tiny_preset(select=False), out=work / "model.pt", progress=False)
    capsys.readouterr()
    assert main(["test", "--work", str(work), "--device", "cpu", "--quiet"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    metrics = json.loads((work / "results" / "model" / "metrics.json").read_text())
    assert line["parts_micro_auroc"] == {k: v["micro_auroc"] for k, v in metrics["parts"].items()}
