"""Named configs and the `--config` / `--set` flags every entry point shares."""

import dataclasses
import os

import pytest
from absl import flags

from ilm_keras import data as ild
from ilm_keras.experiments import PipelineConfig
from ilm_keras.experiments import quickstart_config
from ilm_keras.experiments.configs import NAMED_CONFIGS
from ilm_keras.experiments.configs import config_from_flags
from ilm_keras.experiments.configs import define_config_flags
from ilm_keras.experiments.configs import get_config
from ilm_keras.experiments.configs import parse_overrides
from ilm_keras.experiments.openp5 import dataset_config


@pytest.mark.parametrize("name", sorted(NAMED_CONFIGS))
def test_every_named_config_is_a_valid_pipeline_config(name):
    config = get_config(name)
    assert isinstance(config, PipelineConfig)
    assert get_config(name, seed=7).seed == 7
    assert dataclasses.replace(get_config(name), seed=7) == get_config(name, seed=7)


def test_quickstart_config_is_the_named_one():
    assert quickstart_config() == get_config("quickstart")
    assert quickstart_config(small=True, seed=3) == get_config(
        "quickstart_small", seed=3)


def test_overrides_take_the_field_types():
    assert parse_overrides(
        ["seed=2", "phase2_learning_rate=5e-4", "item_indexing=random",
         "exclude_history=false", "max_eval_users=none"]
    ) == {"seed": 2, "phase2_learning_rate": 5e-4, "item_indexing": "random",
          "exclude_history": False, "max_eval_users": None}


@pytest.mark.parametrize("assignments, message", [
    (["seed"], "FIELD=VALUE"),
    (["sed=1"], "Unknown PipelineConfig field 'sed'"),
    (["seed=one"], "seed takes a int"),
    (["exclude_history=maybe"], "true/false"),
])
def test_bad_overrides_name_the_problem(assignments, message):
    with pytest.raises(ValueError, match=message):
        parse_overrides(assignments)


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="Unknown config 'nope'"):
        get_config("nope")
    with pytest.raises(ValueError, match="Unknown PipelineConfig field"):
        get_config("quickstart", sed=1)


def test_flags_pick_the_config_and_set_wins_over_the_script():
    values = flags.FlagValues()  # a private registry, not absl's global one
    define_config_flags("quickstart", flag_values=values)
    values(["prog", "--config=quickstart_small", "--set=seed=4",
            "--set", "llm_epochs=2"])
    config = config_from_flags(values, seed=1, phase2_epochs=5)
    assert config == get_config("quickstart_small", seed=4, llm_epochs=2,
                                phase2_epochs=5)


def test_item_language_flags_reach_the_item_language_config():
    from ilm_keras.experiments import item_language as il
    from ilm_keras.experiments.configs import define_item_language_flags

    values = flags.FlagValues()
    define_item_language_flags(flag_values=values)
    values(["prog", "--set=align_epochs=20", "--set", "eval_tasks=genres,year"])
    assert values.data.endswith(os.path.join("shared", "data", "ml-100k"))
    assert values.recipe == "paper"
    config = il.config_from_flags(values, seed=3)
    assert config == il.ItemLanguageConfig(seed=3, align_epochs=20,
                                           eval_tasks=("genres", "year"))


def test_item_language_recipe_then_script_then_set():
    from ilm_keras.experiments import item_language as il
    from ilm_keras.experiments.configs import ITEM_LANGUAGE_RECIPES
    from ilm_keras.experiments.configs import define_item_language_flags

    values = flags.FlagValues()
    define_item_language_flags(flag_values=values)
    values(["prog", "--recipe=genre_bag", "--set=align_validation=0.1"])
    config = il.config_from_flags(values, align_epochs=50, phase2_steps=7)
    assert config.align_target == "genre_bag"  # the recipe
    assert config.align_epochs == 50 and config.phase2_steps == 7  # the script
    assert config.align_validation == 0.1  # --set wins over both
    for name, fields in ITEM_LANGUAGE_RECIPES.items():  # every recipe is valid
        il.ItemLanguageConfig(**fields)
    with pytest.raises(flags.IllegalFlagValueError, match="recipe"):
        values(["prog", "--recipe=genre_lst"])


def test_dataset_config_follows_the_dataset():
    data, _ = ild.make_synthetic_data(num_users=30, num_items=20,
                                      num_clusters=2, interactions_per_user=5)
    config = get_config("openp5_cpu")
    movielens = dataset_config(config, dataclasses.replace(data, name="ML100K"),
                               sample_users=10)
    assert movielens.exclude_history and movielens.max_eval_users == 10
    assert movielens.phase1_losses == config.phase1_losses
    amazon = dataset_config(
        config, dataclasses.replace(data, name="Beauty", item_texts=None),
        sample_users=100)
    assert not amazon.exclude_history and amazon.max_eval_users is None
    assert amazon.phase1_losses == "ii_ui"
