"""Quickstart: every ILM phase on built-in synthetic data, on a laptop CPU.

    python examples/quickstart.py

Steps (progress bars for every `fit` on a terminal, one line per epoch
when the output goes to a file):
  0. CF: iALS user/item embeddings from the training interactions;
  1. phase 1: Q-Former pretraining (item-text, item-item, user-item losses);
  -  LLM: a small Llama decoder pretrained on the text-only OpenP5 prompts
     (sequential + straightforward tasks, `item_<id>` answers) plus
     "What is item_<id> about?" -> item text;
  2. phase 2: `none` (OpenP5-R: the decoder alone, text only) and `ilm`
     (Q-Former soft tokens after every item/user mention, through the
     adaptor), both on the same batches;
  -  test: HR@10 / NDCG@10 of `recommend()` (trie-constrained beam search,
     10 beams) on the sequential task, seen template 0, with every item the
     user saw before the target excluded from the ranking; beside them iALS
     dot-product retrieval and a random ranking, same users and exclusion;
  -  "What is item_<id> about?" for 50 items: the share of replies that name
     the item's genres, and one exchange printed.

The synthetic data (`ilm_keras.data.make_synthetic_data`) plants clusters that
users, items and item texts share. No download; no GPU needed.

Settings: the named config `quickstart` (`ilm_keras/experiments/configs.py`):
the paper's random item ids, and a decoder that trains in phase 2 beside the
item encoder (beyond the paper; OpenP5-R trains the same steps on text), the
setting in which the CF soft tokens help here. Replace a field with `--set`,
e.g. `--set seed=1` or `--set phase2_train_llm=false` (the paper's frozen
LLM). `--small` gives a one-minute smoke run.

The same run from the package's entry point:
`python -m ilm_keras.experiments run --config quickstart --work_dir runs/quickstart`.

`benchmarks/quickstart_backends.py` runs this script per backend and seed and
writes the times, metrics and replies to `benchmarks/results/quickstart.md`.
"""

from ilm_keras.utils.quiet import quiet_backend_logs

quiet_backend_logs()  # before TensorFlow/JAX are imported

from absl import app
from absl import flags

from ilm_keras.experiments.configs import config_from_flags
from ilm_keras.experiments.configs import define_config_flags
from ilm_keras.experiments.synthetic import run_quickstart
from ilm_keras.experiments.synthetic import synthetic_sizes

FLAGS = flags.FLAGS
define_config_flags("quickstart")
flags.DEFINE_bool("small", False, "A much smaller, one-minute smoke run "
                  "(--config quickstart_small on smaller data).")
flags.DEFINE_string("output", None, "Optional JSON file for the results.")
flags.DEFINE_string("preset_dir", "runs/quickstart/preset",
                    "Where the trained ILM is saved, as a keras-hub preset "
                    "(`ItemLanguageModel.from_preset`); '' to skip.")


def main(argv):
    del argv
    if FLAGS.small and FLAGS.config == "quickstart":
        FLAGS.config = "quickstart_small"
    sizes = synthetic_sizes("quickstart_small" if FLAGS.small else "quickstart")
    run_quickstart(config_from_flags(), sizes, output=FLAGS.output,
                   preset_dir=FLAGS.preset_dir or None)


if __name__ == "__main__":
    app.run(main)
