"""Determinism: with --seed, two CPU trainings write bit-identical model files and identical test scores."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from helpers import make_work

from statevad.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

TRAIN = ["--model-size", "tiny", "--epochs", "2", "--batch-size", "6", "--device", "cpu", "--quiet"]




def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_seeded_cpu_trainings_are_bit_identical(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1764547200")  # the model card's training date, fixed
    work = make_work(tmp_path / "work")
    a, b, c, d = (tmp_path / f"{n}.pt" for n in "abcd")
    assert main(["train", "--work", str(work), "--seed", "7", "--out", str(a), *TRAIN]) == 0
    assert main(["train", "--work", str(work), "--seed", "7", "--out", str(b), *TRAIN]) == 0
    assert main(["train", "--work", str(work), "--seed", "7", "--deterministic", "--out", str(c),
                 *TRAIN]) == 0
    assert main(["train", "--work", str(work), "--seed", "8", "--out", str(d), *TRAIN]) == 0
    assert _sha(a) == _sha(b) == _sha(c), "same seed: the model files are byte for byte equal"
    assert _sha(a) != _sha(d), "another seed trains another model"
    assert not torch.are_deterministic_algorithms_enabled(), "--deterministic is restored after training"
    scores = []
    for model in (a, b):
        out = tmp_path / f"res_{model.stem}"
        assert main(["test", "--work", str(work), "--model", str(model), "--device", "cpu", "--out", str(out),
                     "--quiet"]) == 0
        scores.append((out / "scores.csv").read_bytes() + (out / "objects.csv").read_bytes())
    assert scores[0] == scores[1]
