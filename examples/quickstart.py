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

`benchmarks/quickstart_backends.py` runs this script per backend and seed and
writes the times, metrics and replies to `benchmarks/results/quickstart.md`.
"""

from ilm_keras.utils.quiet import fit_verbosity
from ilm_keras.utils.quiet import quiet_backend_logs

quiet_backend_logs()  # before TensorFlow/JAX are imported

import dataclasses
import json
import time

from absl import app
from absl import flags

from ilm_keras.experiments import run_synthetic
from ilm_keras.experiments.configs import QUICKSTART_DATA
from ilm_keras.experiments.configs import QUICKSTART_SMALL_DATA
from ilm_keras.experiments.configs import config_from_flags
from ilm_keras.experiments.configs import define_config_flags

FLAGS = flags.FLAGS
define_config_flags("quickstart")
flags.DEFINE_bool("small", False, "A much smaller, one-minute smoke run "
                  "(--config quickstart_small on smaller data).")
flags.DEFINE_string("output", None, "Optional JSON file for the results.")


def main(argv):
    del argv
    if FLAGS.small and FLAGS.config == "quickstart":
        FLAGS.config = "quickstart_small"
    config = config_from_flags()
    # Progress bars on a terminal; one line per epoch into a file or pipe.
    config = dataclasses.replace(config, verbose=fit_verbosity(config.verbose))
    sizes = QUICKSTART_SMALL_DATA if FLAGS.small else QUICKSTART_DATA
    start = time.time()
    results = run_synthetic(config, **sizes)
    total = time.time() - start

    print("\nTest, sequential task, seen template 0, history items excluded:")
    rows = [("random ranking", results["random"]),
            ("iALS dot product", results["cf_dot_product"])]
    rows += [(f"{'OpenP5-R' if v == 'none' else v.upper()} ({v})", m)
             for v, m in results["metrics"].items()]
    for name, m in rows:
        print(f"  {name:>22}: HR@10 {m['HR@10']:.4f}  NDCG@10 {m['NDCG@10']:.4f}")
    describe = results["describe"]
    print("\n\"What is item_<id> about?\" for " + str(
        next(iter(describe.values()))["items"]) + " items, share whose reply "
        "names exactly the item's genres: " + ", ".join(
            f"{v} {d['genres_correct']:.2f}" for v, d in describe.items()))
    chat = results["conversation"]
    print(f"\nuser: {chat['prompt']}\nILM:  {chat['reply']}\n"
          f"(item text: {chat['reference']})")
    print(f"\ntotal {total:.0f}s; per phase: "
          + ", ".join(f"{k} {v:.0f}s" for k, v in results["seconds"].items()))
    if FLAGS.output:
        keep = {k: results[k] for k in
                ("metrics", "cf_dot_product", "random", "conversation", "describe",
                 "seconds")}
        keep["config"] = config.to_dict()
        with open(FLAGS.output, "w") as f:
            json.dump(keep, f, indent=2)


if __name__ == "__main__":
    app.run(main)
