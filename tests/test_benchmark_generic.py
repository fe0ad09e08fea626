"""benchmarks/ped2_generic.py runs the user's three commands with the generic preset and nothing else, and its
JSON keeps what `statevad test` reported (the commands themselves are not run here: they take an hour)."""

from __future__ import annotations

import json

from helpers import load_benchmark


def _study(tmp_path, monkeypatch, results: str, metrics: dict, *flags: str) -> tuple[list[list[str]], dict]:
    """The study run with each command faked (1.5 min each; `statevad test` leaves ``metrics`` in
    WORK/``results``, checked to be the --out it was given): the commands and the JSON."""
    study = load_benchmark("ped2_generic")
    work = tmp_path / "work"
    ran: list[list[str]] = []

    def fake_run(cmd: list[str]) -> float:
        ran.append(cmd)
        if cmd[1] == "test":
            out = work / results
            assert cmd[cmd.index("--out") + 1] == str(out)
            out.mkdir(parents=True)
            (out / "metrics.json").write_text(json.dumps(metrics))
        return 1.5

    monkeypatch.setattr(study, "run", fake_run)
    out = tmp_path / "generic.json"
    assert study.main(["--root", "ROOT", "--work", str(work), *flags, "--out", str(out)]) == 0
    return ran, json.loads(out.read_text())


def test_the_three_commands_and_the_json(tmp_path, monkeypatch):
    ran, doc = _study(tmp_path, monkeypatch, "results",
                      {"micro_auroc": 0.97, "macro_auroc": 0.96, "eer": 0.08, "chosen_on_test_labels": [],
                       "parts": {"STATE alone": {"micro_auroc": 0.95}}, "n_cubes": 10})
    assert [c[1] for c in ran] == ["prepare", "train", "test"]
    assert ran[0][ran[0].index("--preset") + 1] == "generic"
    assert not any("--set" in c or "--epochs" in c for c in ran)  # the preset's defaults, nothing by hand
    assert doc["chosen_on_test_labels"] == []
    assert doc["minutes"] == {"prepare": 1.5, "train": 1.5, "test": 1.5, "total": 4.5}
    assert doc["results"]["micro_auroc"] == 0.97
    assert doc["results"]["parts"]["STATE alone"]["micro_auroc"] == 0.95
    assert doc["command"].startswith("python benchmarks/ped2_generic.py --root ROOT")


def test_a_seed_trains_and_tests_a_model_of_its_own(tmp_path, monkeypatch):
    ran, doc = _study(tmp_path, monkeypatch, "results-seed3",
                      {"micro_auroc": 0.9, "chosen_on_test_labels": []}, "--seed", "3")
    model = str(tmp_path / "work" / "model-seed3.pt")
    assert ran[1][ran[1].index("--seed") + 1] == "3" and ran[1][ran[1].index("--out") + 1] == model
    assert ran[2][ran[2].index("--model") + 1] == model
    assert doc["seed"] == 3
