"""The model registry: one ModelSpec per model, both recipes, and adding a model in one place."""

from __future__ import annotations

import pytest

from cxr_core import registry
from cxr_core.config import THRESHOLD_RULES, TrainSettings, UserError
from cxr_core.registry import ModelSpec, Recipe, Weights


def tiny_builder(inputs, settings, steps_per_epoch=None):
    from keras import layers

    x = layers.Rescaling(1 / 255, name="rescale")(inputs)
    x = layers.Conv2D(4, 3, activation="relu", name="tiny_conv")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return layers.Dense(1, activation="sigmoid", name="pneumonia")(x)


@pytest.fixture
def tiny_model():
    spec = registry.register(ModelSpec("tiny_cnn", "A four-filter CNN that exists only in this test.",
                                       builder=tiny_builder, improved=dict(epochs=1, image_size=32)))
    yield spec
    registry.unregister(spec.name)


def test_the_study_models_are_registered_in_the_study_order():
    assert registry.STUDY_MODELS == ("baseline_cnn", "regularized_cnn", "mobilenetv2_frozen",
                                     "mobilenetv2_finetune", "densenet121_frozen")
    assert registry.from_scratch() == ("baseline_cnn", "regularized_cnn")
    assert registry.pretrained() == ("mobilenetv2_frozen", "mobilenetv2_finetune", "densenet121_frozen")
    assert registry.DEFAULT_MODEL in registry.names() and registry.REFERENCE_MODEL in registry.names()


@pytest.mark.parametrize("name", registry.STUDY_MODELS)
def test_the_study_recipe_is_the_study_as_it_describes_itself(name):
    settings = registry.default_settings(name, Recipe.STUDY)
    assert (settings.recipe, settings.image_size, settings.epochs, settings.learning_rate if name != "mobilenetv2_finetune"
            else settings.learning_rate * 10) == ("study", 180, 10, 1e-3)
    assert settings.lr_schedule == "constant" and settings.early_stopping_patience == 0
    assert not settings.class_weighting
    assert (settings.threshold_rule, settings.fixed_threshold) == ("fixed", 0.5)
    assert settings.augment == (name != "baseline_cnn") and settings.augmentation == "study"
    assert settings.weights == (Weights.IMAGENET if registry.get(name).pretrained else Weights.NONE)
    assert settings.train_on_validation  # all of train, as the study; validation only draws curves


@pytest.mark.parametrize("name", registry.STUDY_MODELS)
def test_the_improved_recipe_keeps_the_projects_defaults(name):
    settings = registry.default_settings(name)
    assert settings.recipe == "improved" and settings.threshold_rule in THRESHOLD_RULES
    assert settings.threshold_rule != "fixed" and settings.lr_schedule == "cosine"
    assert registry.default_settings(name) is not registry.default_settings(name)  # a fresh copy each call


def test_unknown_model_and_recipe_are_refused_with_the_choices():
    with pytest.raises(UserError, match="regularized_cnn"):
        registry.get("resnet9000")
    with pytest.raises(UserError, match="improved, study"):
        registry.default_settings("baseline_cnn", "fancy")


def test_old_settings_without_a_recipe_load_as_the_improved_recipe():
    stored = registry.default_settings("baseline_cnn").to_dict()
    for key in ("recipe", "augmentation", "lr_schedule", "fixed_threshold"):
        stored.pop(key)
    loaded = TrainSettings.from_dict(stored)
    assert (loaded.recipe, loaded.augmentation, loaded.lr_schedule) == ("improved", "improved", "cosine")


def test_a_registered_model_builds_and_is_offered_by_train(tiny_model):
    from cxr_core.cli import parser
    from cxr_core.models import build_model

    assert "tiny_cnn" in registry.names()
    model = build_model(registry.default_settings("tiny_cnn"))
    assert model.name == "tiny_cnn" and model.input_shape == (None, 32, 32, 1) and model.output_shape == (None, 1)
    args = parser().parse_args(["train", "--model", "tiny_cnn", "--recipe", "study"])
    assert (args.model, args.recipe) == ("tiny_cnn", "study")


def test_a_registered_model_trains_through_the_cli(tiny_model, demo_dir, tmp_path, capsys):
    from cxr_core.cli import main
    from cxr_core.store import RunStore

    code = main(["train", "--model", "tiny_cnn", "--data", str(demo_dir), "--runs", str(tmp_path)])
    run_id = capsys.readouterr().out.strip().splitlines()[-1]
    assert code == 0
    run = RunStore(tmp_path).get(run_id)
    assert run.model == "tiny_cnn" and run.state == "done" and run.has_model
    assert main(["runs", "--json", "--runs", str(tmp_path)]) == 0
    import json

    (listed,) = json.loads(capsys.readouterr().out)
    assert (listed["run"], listed["model"], listed["recipe"]) == (run_id, "tiny_cnn", "improved")


def test_a_registered_model_is_on_the_train_page(tiny_model, demo_dir, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("CXR_DATA_DIR", str(demo_dir))
    from pathlib import Path

    app = Path(__file__).resolve().parent.parent / "app.py"
    at = AppTest.from_file(str(app), default_timeout=60).run()
    at.switch_page("pages/2_train.py").run()
    assert not at.exception
    chooser = next(s for s in at.selectbox if s.label == "Model")
    assert "tiny_cnn" in chooser.options
    chooser.select("tiny_cnn").run()
    assert not at.exception
    assert "A four-filter CNN that exists only in this test." in [i.value for i in at.info]
    assert next(n for n in at.number_input if n.label == "Epochs").value == 1


def test_the_recipes_command_prints_the_registry(capsys):
    import json

    from cxr_core.cli import main

    assert main(["recipes", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert list(printed["models"]) == list(registry.names())
    for name in registry.names():
        for recipe in Recipe:
            assert printed["models"][name][recipe] == registry.default_settings(name, recipe).to_dict()
    assert printed["study_notes"] == list(registry.STUDY_NOTES)
    assert main(["recipes"]) == 0
    assert "Conv2D widths 16/32/64" in capsys.readouterr().out
