"""The experiment spec: what a coordinator writes, and what is refused."""

from __future__ import annotations

import pytest

from radfed.spec import ExperimentSpec, SpecError, from_mapping, load_spec, spec_to_toml


def test_toml_round_trip(tmp_path):
    spec = ExperimentSpec(name="a", rounds=5, learning_rate=1e-4, freeze="top-k", labels=("x", "y", "z"))
    path = tmp_path / "exp.toml"
    path.write_text(spec_to_toml(spec))
    assert load_spec(path) == spec
    assert ExperimentSpec.from_json(spec.to_json()) == spec


def test_experiment_table_or_top_level(tmp_path):
    path = tmp_path / "exp.toml"
    path.write_text('name = "top"\nrounds = 2\n')
    assert load_spec(path).rounds == 2


@pytest.mark.parametrize(
    "data, key",
    [
        ({"name": "x", "backbone": "vgg"}, "'backbone'"),
        ({"name": "x", "freeze": "some"}, "'freeze'"),
        ({"name": "x", "batch_size": 1.5}, "'batch_size'"),
        ({"name": "x", "learning_rate": True}, "'learning_rate'"),
        ({"name": "x", "labels": ["only"]}, "'labels'"),
        ({"rounds": 1}, "'name'"),
        ({"name": "x", "label_smoothing": 0.7}, "'label_smoothing'"),
        ({"name": "x", "weight_decay": -1}, "'weight_decay'"),
        ({"name": "x", "warmup_rounds": 1.5}, "'warmup_rounds'"),
        ({"name": "x", "augment": "mixup"}, "'augment'"),
        ({"name": "x", "bn_policy": "fedbn"}, "'bn_policy'"),
    ],
)
def test_refusals_name_the_key(data, key):
    with pytest.raises(SpecError) as info:
        from_mapping(data)
    assert key in str(info.value) and "\n" not in str(info.value)


def test_clinic_side_does_not_need_the_weight_file():
    text = ExperimentSpec(name="a").to_json().replace('"random"', '"/coordinator/only.pt"')
    assert ExperimentSpec.from_json(text).weights == "/coordinator/only.pt"


def test_not_toml(tmp_path):
    path = tmp_path / "exp.toml"
    path.write_text("name = \n")
    with pytest.raises(SpecError, match="not valid TOML"):
        load_spec(path)


def test_data_options_table_round_trips_and_is_checked(tmp_path):
    path = tmp_path / "exp.toml"
    path.write_text('[experiment]\nname = "ct"\n[experiment.data]\nwindow = "lung"\nfilters = { Modality = ["CT"] }\n')
    spec = load_spec(path)
    assert spec.data == {"window": "lung", "filters": {"Modality": ["CT"]}}
    path.write_text(spec_to_toml(spec))
    assert load_spec(path) == spec
    with pytest.raises(SpecError, match="'data'.*frame_policy"):
        from_mapping({"name": "x", "data": {"frame_policy": "some"}})


def test_spec_backbones_are_the_model_registry():
    from radfed.models import list_models
    from radfed.spec import BACKBONES

    assert sorted(BACKBONES) == list_models()


def test_recipe_keys_round_trip_and_old_specs_stay_valid(tmp_path):
    """A spec written before the recipe keys existed loads with the measured defaults;
    the keys round-trip through TOML and JSON."""
    path = tmp_path / "old.toml"
    path.write_text('[experiment]\nname = "old"\nlearning_rate = 1e-3\nrounds = 4\n')
    old = load_spec(path)
    assert (old.weight_decay, old.label_smoothing, old.augment, old.bn_policy) == (
        ExperimentSpec.weight_decay,
        ExperimentSpec.label_smoothing,
        ExperimentSpec.augment,
        ExperimentSpec.bn_policy,
    )
    spec = ExperimentSpec(
        name="r", weight_decay=0.0, label_smoothing=0.0, warmup_rounds=2, augment="flip", bn_policy="global"
    )
    path.write_text(spec_to_toml(spec))
    assert load_spec(path) == spec == ExperimentSpec.from_json(spec.to_json())


def test_warmup_scales_the_first_rounds_only():
    from radfed.training import round_learning_rate

    assert [round_learning_rate(1e-3, r, 1) for r in (1, 2, 3)] == [5e-4, 1e-3, 1e-3]
    assert round_learning_rate(1e-3, 1, 0) == 1e-3
