"""Contracts of cxr_core.config: each study model's recipe, settings that survive a run folder's JSON,
paths taken from the environment, and the names (models, threshold rules, metrics) other modules
build their choices from."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

from cxr_core import config, evaluate
from cxr_core.config import HEADLINE_METRICS, METRIC_LABELS, METRICS, THRESHOLD_RULES, TrainSettings, UserError
from cxr_core.registry import STUDY_MODELS, default_settings, descriptions

SCRATCH = ("baseline_cnn", "regularized_cnn")  # trained from random weights; the others start from ImageNet


# ---------------------------------------------------------------- recipes per model


@pytest.mark.parametrize("name", STUDY_MODELS)
def test_each_model_gets_its_own_recipe(name):
    settings = default_settings(name)
    assert settings.model == name
    if name in SCRATCH:
        assert (settings.weights, settings.image_size) == ("none", 128 if name == "baseline_cnn" else 64)
    else:  # the ImageNet bases were trained on 224 px photographs
        assert (settings.weights, settings.image_size) == ("imagenet", 224)
    # Only the seed study's plain CNN trains without augmentation: it is the overfitting reference.
    assert settings.augment is (name != "baseline_cnn")
    assert settings.threshold_rule in THRESHOLD_RULES


def test_fine_tuning_learns_more_gently_than_training_a_frozen_base():
    assert default_settings("mobilenetv2_finetune").learning_rate < default_settings("mobilenetv2_frozen").learning_rate


def test_the_regularized_cnn_recipe_is_the_settings_defaults():
    assert default_settings("regularized_cnn") == TrainSettings()


def test_each_call_gives_a_fresh_recipe():
    # Callers (the Train page, the CLI, the test fixtures) change the recipe they get in place.
    first = default_settings("baseline_cnn")
    first.epochs, first.image_size = 1, 32
    again = default_settings("baseline_cnn")
    assert (again.epochs, again.image_size) == (8, 128)


def test_an_unknown_model_is_a_user_error_that_lists_the_choices():
    with pytest.raises(UserError, match="unknown model 'resnet9000'") as error:
        default_settings("resnet9000")
    assert all(name in str(error.value) for name in STUDY_MODELS)


# ---------------------------------------------------------------- settings in a run folder


@pytest.mark.parametrize("name", STUDY_MODELS)
def test_settings_survive_a_round_trip_through_json(name):
    settings = default_settings(name)
    settings.epochs, settings.zoom_in, settings.threshold_rule = 3, 0.1, "youden"
    stored = json.loads(json.dumps(settings.to_dict()))
    assert stored["model"] == name and stored["threshold_rule"] == "youden"
    assert TrainSettings.from_dict(stored) == settings


def test_settings_of_an_older_run_load_with_defaults_for_what_it_lacks():
    # A run folder's settings.json also holds keys that are not settings (data_dir), and runs saved
    # before a setting existed lack it.
    stored = default_settings("baseline_cnn").to_dict()
    del stored["zoom_in"], stored["label_smoothing"]
    stored.update(data_dir="/data/chest_xray", no_longer_a_setting=1)
    settings = TrainSettings.from_dict(stored)
    assert settings.zoom_in == TrainSettings().zoom_in and settings.label_smoothing == TrainSettings().label_smoothing
    assert (settings.model, settings.epochs, settings.augment) == ("baseline_cnn", 8, False)
    assert not hasattr(settings, "data_dir")
    assert set(settings.to_dict()) == {field.name for field in dataclasses.fields(TrainSettings)}


# ---------------------------------------------------------------- paths from the environment


def test_runs_and_cache_folders_follow_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CXR_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("CXR_CACHE_DIR", str(tmp_path / "cache"))
    assert config.runs_dir() == tmp_path / "runs"
    assert config.cache_dir() == tmp_path / "cache"
    assert config.demo_data_dir() == tmp_path / "cache" / "demo_data"


@pytest.mark.parametrize("value", [None, ""])
def test_without_the_environment_runs_and_cache_live_in_the_project(monkeypatch, value, project_root):
    for name in ("CXR_RUNS_DIR", "CXR_CACHE_DIR"):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert config.runs_dir() == project_root / "runs"
    assert config.cache_dir() == project_root / ".cache"
    assert config.demo_data_dir() == project_root / ".cache" / "demo_data"


def test_the_data_folder_comes_from_cxr_data_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("CXR_DATA_DIR", raising=False)
    assert config.configured_data_dir() is None  # unset: the synthetic demo set
    monkeypatch.setenv("CXR_DATA_DIR", "")
    assert config.configured_data_dir() is None
    monkeypatch.setenv("CXR_DATA_DIR", str(tmp_path / "chest_xray"))
    assert config.configured_data_dir() == tmp_path / "chest_xray"
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("CXR_DATA_DIR", "~/chest_xray")
    assert config.configured_data_dir() == tmp_path / "chest_xray"


# ---------------------------------------------------------------- names other modules build on


def test_every_model_has_a_description_a_teacher_can_show():
    assert set(descriptions()) == set(STUDY_MODELS)
    for name, text in descriptions().items():
        assert len(text) > 100, name  # a paragraph, not a label


def test_every_threshold_rule_is_one_threshold_for_applies():
    from dataclasses import replace

    y = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    prob = np.array([0.1, 0.3, 0.6, 0.2, 0.5, 0.7, 0.8, 0.9])
    settings = TrainSettings(target_sensitivity=0.95, fixed_threshold=0.65)
    chosen = {rule: evaluate.threshold_for(replace(settings, threshold_rule=rule), y, prob)["threshold"]
              for rule in THRESHOLD_RULES}
    assert chosen == {"sensitivity": 0.2, "youden": 0.7, "fixed": 0.65}
    with pytest.raises(ValueError, match="sensitivity, youden"):
        evaluate.choose_threshold(y, prob, rule="f1")


def test_metrics_are_the_keys_of_an_evaluation_and_each_has_a_label():
    report = evaluate.evaluate_predictions([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9], 0.5, n_boot=0)
    assert set(METRICS) <= set(report)
    assert set(METRIC_LABELS) == set(METRICS)
    assert [m for m in METRICS if m in HEADLINE_METRICS] == list(HEADLINE_METRICS)


def test_importing_config_does_not_load_tensorflow(project_root):
    # Pages read model names and descriptions from here; loading TensorFlow there costs seconds.
    code = "import sys, cxr_core.config; sys.exit('tensorflow' in sys.modules or 'keras' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=project_root).returncode == 0


def test_pages_name_folders_by_home_project_or_name_never_the_servers_own_path(tmp_path, monkeypatch):
    from pathlib import Path

    from cxr_core import config
    from cxr_core.config import shown_path

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert shown_path(tmp_path / "home" / "data" / "chest_xray") == "~/data/chest_xray"
    # A checkout in /srv (wherever this one lies): the data beside it is named from the project.
    monkeypatch.setattr(config, "PROJECT_ROOT", Path("/srv/cxr/checkout"))
    assert shown_path(Path("/srv/cxr/shared/data/chest_xray")) == "../shared/data/chest_xray"
    assert shown_path(Path("/var/tmp/xyz/cache/demo_data")) == "demo_data"
    # A checkout cloned into the temporary folder: the other temporary folders beside it keep their name only.
    monkeypatch.setattr(config.tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(config, "PROJECT_ROOT", tmp_path / "checkout")
    assert shown_path(tmp_path / "pytest-of-someone" / "demo0" / "chest_xray") == "chest_xray"
