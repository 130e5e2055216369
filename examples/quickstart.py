"""Quickstart: every ILM phase on built-in synthetic data, on a laptop CPU.

    python examples/quickstart.py

Steps (progress bars for every `fit`):
  0. CF: iALS user/item embeddings from the training interactions;
  1. phase 1: Q-Former pretraining (item-text, item-item, user-item losses);
  -  LLM: a small Llama decoder pretrained on the text-only OpenP5 prompts
     (sequential + straightforward tasks, `item_<id>` answers) plus
     "What is item_<id> about?" -> item text, then frozen;
  2. phase 2: `none` (OpenP5-R: the frozen decoder alone) and `ilm` (Q-Former
     soft tokens after every item/user mention; only Q-Former + adaptor train);
  -  test: HR@10 / NDCG@10 of `recommend()` (trie-constrained beam search,
     10 beams) on the sequential task, seen template 0, with the user's history
     items excluded from the ranking; beside them iALS dot-product retrieval
     and a random ranking;
  -  one conversational exchange: the ILM describes an item named in the prompt.

The synthetic data (`ilm_keras.data.make_synthetic_data`) plants clusters that
users, items and item texts share. No download; no GPU needed.
`benchmarks/quickstart_backends.py` runs this script on each backend and
writes `benchmarks/results/quickstart.md`. Seed 0 on the 2-core CPU took
204 s with Keras' default backend (TensorFlow) and 291 s with
`KERAS_BACKEND=jax`. Test HR@10 / NDCG@10 with history excluded
(TensorFlow; JAX in brackets): random ranking 0.200 / 0.091, OpenP5-R
0.200 / 0.096 (0.210 / 0.109), ILM 0.283 / 0.144 (0.207 / 0.106), iALS
dot product 0.453 / 0.267. One seed's ranking depends on the shuffle, so
compare over seeds (0-2 on JAX: ILM 0.236 +- 0.015, OpenP5-R 0.204 +-
0.009; `benchmarks/results/length_grouping.md`). The small LLM variants
do not reach plain CF retrieval at this size. `--small` gives a smoke run.
"""

import json
import time

from absl import app
from absl import flags

from ilm_keras.experiments import quickstart_config
from ilm_keras.experiments import run_synthetic
from ilm_keras.experiments.synthetic import SMALL_DATA

FLAGS = flags.FLAGS
flags.DEFINE_integer("num_users", 300, "Synthetic users.")
flags.DEFINE_integer("num_items", 60, "Synthetic items.")
flags.DEFINE_integer("num_clusters", 6, "Planted clusters.")
flags.DEFINE_integer("llm_epochs", 12, "LLM pretraining epochs.")
flags.DEFINE_integer("phase2_epochs", 3, "Phase-2 epochs.")
flags.DEFINE_bool("small", False, "A much smaller, one-minute smoke run.")
flags.DEFINE_string("output", None, "Optional JSON file for the results.")
flags.DEFINE_integer("seed", 0, "Seed.")


def main(argv):
    del argv
    config = quickstart_config(FLAGS.small, FLAGS.seed, FLAGS.llm_epochs,
                               FLAGS.phase2_epochs)
    sizes = (SMALL_DATA if FLAGS.small else
             dict(num_users=FLAGS.num_users, num_items=FLAGS.num_items,
                  num_clusters=FLAGS.num_clusters, interactions_per_user=12))
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
    chat = results["conversation"]
    print(f"\nuser: {chat['prompt']}\nILM:  {chat['reply']}\n"
          f"(item text: {chat['reference']})")
    print(f"\ntotal {total:.0f}s; per phase: "
          + ", ".join(f"{k} {v:.0f}s" for k, v in results["seconds"].items()))
    if FLAGS.output:
        keep = {k: results[k] for k in
                ("metrics", "cf_dot_product", "random", "conversation", "seconds")}
        keep["config"] = config.to_dict()
        with open(FLAGS.output, "w") as f:
            json.dump(keep, f, indent=2)


if __name__ == "__main__":
    app.run(main)
