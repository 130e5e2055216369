"""Named pipeline configurations: the one place experiment settings live.

Examples, benchmarks and the command line (`python -m ilm_keras.experiments`)
start from one of these and override single fields (`--set seed=1`), so no
script keeps a copy of the settings that could drift.

- `quickstart`: every phase on the built-in synthetic data in a few minutes
  on a laptop CPU (`examples/quickstart.py`): random item ids and a decoder
  that trains in phase 2 (beyond the paper), the setting in which the CF
  soft tokens help on that data.
- `quickstart_small`: the pipeline at test size (about a minute), with the
  library's defaults (one-token item ids, the LLM frozen in phase 2).
- `openp5_cpu`: one OpenP5 cell (ML100K, Beauty) sized for a 2-core CPU
  within an hour per seed (`benchmarks/openp5_table.py`), with the settings
  that learn at that budget: atomic item ids, leak-free user vectors, a
  warmup + cosine schedule (chosen on validation,
  `benchmarks/learning_curves.py`).
- `paper`: the ILM paper's OpenP5 setting as far as it is specified (8-layer
  Q-Former and decoder, random item indexing, the user's CF table row,
  history of 20): for accelerators; a 2-core CPU cannot train it.
- `throughput`: the model shapes `benchmarks/throughput.py` times (Q-Former
  and decoder sizes only; not a training recipe).

`python -m ilm_keras.experiments configs [NAME]` lists them and prints one's
fields; `python -m ilm_keras.experiments run --config NAME` runs one.
"""

import dataclasses
import difflib
import os
import typing

from absl import flags

from ilm_keras.experiments.pipeline import PipelineConfig


def _quickstart():
    """Every phase on the built-in synthetic data, minutes on a laptop CPU."""
    return PipelineConfig(
        max_history=10, cf_dim=32, qformer_layers=2, qformer_hidden=64,
        qformer_heads=4, num_query_tokens=4, num_cf_tokens=4,
        phase1_epochs=10, phase1_batch_size=32, llm_layers=2, llm_hidden=64,
        llm_heads=4, llm_epochs=12, llm_learning_rate=3e-3,
        templates_per_example=1, describe_items=True,
        phase2_epochs=3, phase2_learning_rate=1e-3,
        num_beams=10, verbose=1,
        # The paper's random item ids (spelled digit by digit), whose
        # identity the CF vector carries in one soft token; with one token
        # per item the decoder learns these 60 items from the sequences alone
        # and the CF adds nothing it lacks (README, "Recommendation
        # quality").
        item_indexing="random",
        # Beyond the paper: the decoder trains in phase 2 (every variant,
        # OpenP5-R too, for the same steps). Frozen, this small decoder
        # does not learn to read the soft tokens.
        phase2_train_llm=True,
        # One describe pair per item against ~90 recommendation prompts per
        # item and epoch: repeated, so that both the decoder and phase 2 see
        # each item's text often enough to answer "What is item_X about?".
        describe_repeats=8,
    )


# The quickstart's synthetic data sizes (`run_synthetic` keyword arguments).
QUICKSTART_DATA = dict(num_users=300, num_items=60, num_clusters=6,
                       interactions_per_user=12)
QUICKSTART_SMALL_DATA = dict(num_users=60, num_items=24, num_clusters=3,
                             interactions_per_user=8)


def _quickstart_small():
    """The pipeline at test size (about a minute on a 2-core CPU)."""
    return PipelineConfig(
        max_history=5, cf_dim=16, qformer_layers=1, qformer_hidden=32,
        qformer_heads=2, num_query_tokens=2, num_cf_tokens=2,
        phase1_losses="it", phase1_epochs=1, phase1_batch_size=8,
        llm_layers=1, llm_hidden=32, llm_heads=2, llm_epochs=8,
        llm_batch_size=64, llm_learning_rate=1e-2, templates_per_example=1,
        describe_items=True, phase2_epochs=1, phase2_batch_size=64,
        max_eval_users=16, length_bucket=64, num_beams=10, verbose=0,
        # A few optimizer steps per phase here: no warmup (a warmup longer
        # than the run would only lower the learning rate).
        llm_warmup_steps=0, phase2_warmup_steps=0,
    )


def _openp5_cpu():
    """One OpenP5 cell sized for a 2-core CPU (within an hour per seed)."""
    return PipelineConfig(
        max_history=20, cf_dim=64, cf_regularization=50.0, cf_alpha=10.0,
        qformer_layers=2, qformer_hidden=64, qformer_heads=4,
        num_query_tokens=4, num_cf_tokens=4, phase1_losses="it_ui",
        phase1_epochs=5, phase1_steps_per_epoch=150,
        llm_layers=2, llm_hidden=64, llm_heads=4, llm_epochs=6,
        llm_steps_per_epoch=1000, llm_batch_size=64, llm_learning_rate=2e-3,
        llm_warmup_steps=100, templates_per_example=1,
        phase2_epochs=4, phase2_steps_per_epoch=250, phase2_batch_size=32,
        phase2_learning_rate=1e-3, phase2_warmup_steps=50,
        item_indexing="atomic", user_vectors="fold_in",
        max_valid_users=None, verbose=2,
    )


def _paper():
    """The ILM paper's OpenP5 setting as far as specified (accelerators)."""
    return PipelineConfig(
        max_history=20, cf_dim=64, qformer_layers=8, qformer_hidden=768,
        qformer_heads=12, num_query_tokens=32, num_cf_tokens=8,
        phase1_losses="it_ui", phase1_batch_size=256,
        phase1_learning_rate=3e-5, qformer_initializer_range=0.02,
        llm_layers=8, llm_hidden=512, llm_heads=8, templates_per_example=3,
        item_indexing="random",
        user_vectors="table", phase2_learning_rate=5e-4, verbose=1,
    )


def _throughput():
    """The model shapes `benchmarks/throughput.py` times (not for training)."""
    return PipelineConfig(
        max_history=10, cf_dim=64, qformer_layers=4, qformer_hidden=256,
        qformer_heads=8, num_query_tokens=32, num_cf_tokens=8,
        qformer_text_length=32, llm_layers=4, llm_hidden=256, llm_heads=8,
    )


NAMED_CONFIGS = {
    "quickstart": _quickstart,
    "quickstart_small": _quickstart_small,
    "openp5_cpu": _openp5_cpu,
    "paper": _paper,
    "throughput": _throughput,
}


def describe_config(name):
    """One line on what the named config `name` is for.

    Example:
    ```python
    describe_config("openp5_cpu")  # "One OpenP5 cell sized for a 2-core ..."
    ```
    """
    get_config(name)  # raises for an unknown name
    return NAMED_CONFIGS[name].__doc__.strip().splitlines()[0]


def get_config(name, **overrides):
    """A named `PipelineConfig`, with some fields replaced.

    Args:
        name: one of `NAMED_CONFIGS` (`"quickstart"`, `"quickstart_small"`,
            `"openp5_cpu"`, `"paper"`, `"throughput"`).
        **overrides: fields to replace, e.g. `seed=1`.

    Returns:
        A `PipelineConfig`.

    Example:
    ```python
    config = get_config("openp5_cpu", seed=2, max_eval_users=100)
    ```
    """
    if name not in NAMED_CONFIGS:
        raise ValueError(
            f"Unknown config {name!r}; choose from {sorted(NAMED_CONFIGS)}."
        )
    config = NAMED_CONFIGS[name]()
    fields = {f.name for f in dataclasses.fields(PipelineConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(
            f"Unknown PipelineConfig field(s) {unknown}; fields are "
            f"{sorted(fields)}."
        )
    return dataclasses.replace(config, **overrides)


def parse_overrides(assignments, config_class=None):
    """`["seed=1", "item_indexing=random"]` -> `{"seed": 1, ...}`, each
    value converted to its field's type (`none` for None; tuples:
    comma-separated).

    Args:
        assignments: `"FIELD=VALUE"` strings.
        config_class: the dataclass whose fields these are (default
            `PipelineConfig`; the item-language benchmark passes its own).

    Raises:
        ValueError: an assignment without `=`, an unknown field, or a value
            that is not of the field's type.
    """
    config_class = config_class or PipelineConfig
    types = typing.get_type_hints(config_class)
    out = {}
    for assignment in assignments or ():
        if "=" not in assignment:
            raise ValueError(f"Expected FIELD=VALUE, got {assignment!r}.")
        name, text = (part.strip() for part in assignment.split("=", 1))
        if name not in types:
            close = difflib.get_close_matches(name, list(types), n=1)
            hint = (f" Did you mean {close[0]!r}?" if close else
                    " `python -m ilm_keras.experiments configs NAME` lists "
                    "the fields.")
            raise ValueError(
                f"Unknown {config_class.__name__} field {name!r} in "
                f"{assignment!r}." + hint
            )
        kind = types[name]
        if text.lower() == "none":
            out[name] = None
        elif kind is bool:
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError(f"{name} takes true/false, got {text!r}.")
            out[name] = text.lower() in ("true", "1")
        elif kind is tuple:
            out[name] = tuple(t.strip() for t in text.split(",") if t.strip())
        else:
            try:
                out[name] = kind(text)
            except ValueError:
                raise ValueError(
                    f"{name} takes a {kind.__name__}, got {text!r}."
                ) from None
    return out


def define_config_flags(default, flag_values=None):
    """The flags every entry point shares: `--config NAME` (default
    `default`) and `--set FIELD=VALUE` (repeatable). Read them back with
    `config_from_flags`. Call once, at import time of the script.

    Args:
        default: the named config a script runs without `--config`.
        flag_values: an absl `FlagValues` (default: `absl.flags.FLAGS`).
    """
    flag_values = flags.FLAGS if flag_values is None else flag_values
    flags.DEFINE_enum("config", default, sorted(NAMED_CONFIGS),
                      "Named pipeline config (ilm_keras.experiments.configs).",
                      flag_values=flag_values)
    flags.DEFINE_multi_string(
        "set", [], "Replace one config field, FIELD=VALUE (repeatable), "
        "e.g. --set seed=1 --set item_indexing=random.",
        flag_values=flag_values)


def define_openp5_data_flags(flag_values=None):
    """The data flags of the scripts that read one OpenP5 dataset:
    `--dataset` (folder name, default ML100K) and `--data_dir` (the OpenP5
    folder, default `../shared/data/openp5`). Call once, at import time.

    Args:
        flag_values: an absl `FlagValues` (default: `absl.flags.FLAGS`).
    """
    flag_values = flags.FLAGS if flag_values is None else flag_values
    flags.DEFINE_string("dataset", "ML100K", "OpenP5 dataset folder name.",
                        flag_values=flag_values)
    flags.DEFINE_string("data_dir", "../shared/data/openp5", "OpenP5 folder.",
                        flag_values=flag_values)


# Named item-language recipes: `ItemLanguageConfig` fields that differ from
# its defaults (`item_language.config_from_flags` applies one).
ITEM_LANGUAGE_RECIPES = {
    # The paper's recipe: phase 1, then phase 2 over the frozen LLM.
    "paper": {},
    # Beyond the paper: before phase 2, every soft token is fitted to the
    # mean of the LLM's input embeddings of the item's genres, stopped early
    # on a fifth of the seen items (`item_language_bag.md`).
    "genre_bag": {"align_epochs": 200, "align_validation": 0.2,
                  "align_target": "genre_bag"},
}


def define_item_language_flags(flag_values=None):
    """The flags of the scripts that run the item-language experiment:
    `--data` (the ML-100K folder, default `../shared/data/ml-100k` beside
    the project), `--recipe NAME` (`ITEM_LANGUAGE_RECIPES`, default
    `paper`) and `--set FIELD=VALUE` (repeatable, `ItemLanguageConfig`
    fields, applied after the recipe). Read them back with
    `item_language.config_from_flags`. Call once, at import time.

    Args:
        flag_values: an absl `FlagValues` (default: `absl.flags.FLAGS`).
    """
    flag_values = flags.FLAGS if flag_values is None else flag_values
    project = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    flags.DEFINE_string("data", os.path.join(project, "..", "shared", "data", "ml-100k"),
                        "ML-100K folder.", flag_values=flag_values)
    flags.DEFINE_enum("recipe", "paper", list(ITEM_LANGUAGE_RECIPES),
                      "Named item-language recipe (configs.ITEM_LANGUAGE_RECIPES).",
                      flag_values=flag_values)
    flags.DEFINE_multi_string("set", [], "ItemLanguageConfig FIELD=VALUE (repeatable; "
                              "wins over the recipe).", flag_values=flag_values)


def config_from_flags(flag_values=None, **changes):
    """The `PipelineConfig` that `--config` and `--set` name, with
    `changes` applied first (a script's own settings; `--set` wins)."""
    values = flags.FLAGS if flag_values is None else flag_values
    return get_config(values.config, **{**changes, **parse_overrides(values.set)})
