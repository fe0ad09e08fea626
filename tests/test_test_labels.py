"""Which settings were picked on test labels (issue 18): each preset says so (config.TEST_LABEL_CHOICES) and
`statevad test` lists the ones a run used in metrics.json's "chosen_on_test_labels"."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from helpers import make_work, tiny_preset

from statevad.config import PRESETS, TEST_LABEL_CHOICES, chosen_on_test_labels, get_preset
from statevad.evaluation import run_test
from statevad.training import train

pytestmark = pytest.mark.usefixtures("one_thread")


def test_every_preset_says_which_values_came_from_test_labels() -> None:
    assert set(TEST_LABEL_CHOICES) == set(PRESETS)
    assert TEST_LABEL_CHOICES["generic"] == {}  # a user's footage has no labels
    for name, choices in TEST_LABEL_CHOICES.items():
        score = get_preset(name).score
        for key, why in choices.items():
            section, field = key.split(".")
            assert section == "score" and hasattr(score, field), key
            assert why.startswith(f"{getattr(score, field):g},"), (key, why)  # the reason names the value
        # the preset as it stands uses every one of them
        assert set(chosen_on_test_labels(name, score)) == set(choices)


def test_a_selected_or_changed_value_is_not_listed_but_the_same_value_set_again_is() -> None:
    score = get_preset("ped2").score  # epsilon 0.002 and w_motion 4, both chosen on the Ped2 test set
    assert set(chosen_on_test_labels("ped2", score)) == {"score.epsilon", "score.w_motion"}
    selection = {"epsilon": 0.0, "w_raw": 1.0, "w_flow": 0.9, "w_motion": 1.27}
    selected = dataclasses.replace(score, epsilon=0.0, w_flow=0.9, w_motion=1.27)
    assert chosen_on_test_labels("ped2", selected, selection) == {}
    # the selection happened to pick the preset's epsilon: that value is label-free in this model
    assert set(chosen_on_test_labels("ped2", dataclasses.replace(selected, epsilon=0.002),
                                     {**selection, "epsilon": 0.002})) == set()
    # a user who sets the test-chosen weight back over a selection uses a test-chosen value
    assert set(chosen_on_test_labels("ped2", dataclasses.replace(selected, w_motion=4.0),
                                     selection)) == {"score.w_motion"}
    assert chosen_on_test_labels("PED2", dataclasses.replace(score, epsilon=0.01, w_motion=1.0)) == {}
    assert chosen_on_test_labels("no-such-preset", score) == {}


def test_statevad_test_lists_the_test_chosen_settings_it_used(tmp_path: Path) -> None:
    work = make_work(tmp_path / "work")
    # the ped2 preset without its label-free selection: its fallback constants are the test-chosen ones
    model = train(work, tiny_preset(select=False), out=work / "model.pt", progress=False)
    used = run_test(work, model, out=tmp_path / "a", progress=False)
    assert set(used["chosen_on_test_labels"]) == {"score.epsilon", "score.w_motion"}
    assert "Ped2 test set" in used["chosen_on_test_labels"]["score.w_motion"]
    own = run_test(work, model, out=tmp_path / "b", progress=False, sets=["score.epsilon=0.01"],
                   overrides={"w_motion": 1.0})
    assert own["chosen_on_test_labels"] == {}
