"""One cell of the paper's Tables 3-4: an ILM variant on an OpenP5 dataset.

    python examples/openp5.py --dataset ML100K --variant ilm --losses it_ui \
        --output_dir runs/ml100k_ilm_seed0

Pipeline (paper §4.4): iALS CF embeddings -> phase 1 (Q-Former, for `ilm`) ->
a Llama decoder pretrained on the text-only OpenP5 prompts, then frozen ->
phase 2 (`none` = OpenP5-R, `mlp`, `ilm_rand`, `ilm`) with the checkpoint of
the best validation NDCG@10 -> test HR/NDCG@{5,10} on the sequential and
straightforward tasks with a seen template (0) and the unseen template.

Writes `results.json` and `results.md` to `--output_dir`. Resumable: rerun the
same command after a kill; finished phases are loaded from disk and a phase
killed mid-training continues from its last finished epoch. CF, phase 1 and
the LLM are shared by all variants of one dataset/config/seed through
`--shared_dir` (default: `<output_dir>/../shared_<dataset>_seed<seed>`).

Data: `--data_dir/<dataset>/user_sequence.txt` + OpenP5's index files. ML100K
item texts (for phase 1) come from `--item_texts_from` (default
`../shared/data/ml-100k`). Beauty has no item texts here: `ilm` (phase 1 needs
item-text pairs) stops with an error naming that; run `ilm_rand`, `mlp`, `none`.
"""

import os

from absl import app
from absl import flags

from ilm_keras.experiments import PipelineConfig
from ilm_keras.experiments.openp5 import load_dataset
from ilm_keras.experiments.openp5 import run_openp5_cell

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "ML100K", "OpenP5 dataset folder name.")
flags.DEFINE_string("data_dir", "../shared/data/openp5", "OpenP5 data folder.")
flags.DEFINE_string("item_texts_from", None,
                    "MovieLens folder with item texts (default: "
                    "../shared/data/ml-100k for ML100K, none otherwise).")
flags.DEFINE_enum("variant", "ilm", ["none", "mlp", "ilm_rand", "ilm"], "Variant.")
flags.DEFINE_enum("losses", "it_ui", ["it", "it_ii", "it_ui", "all"],
                  "Phase-1 losses (Table 4).")
flags.DEFINE_string("output_dir", "runs/openp5", "This cell's output folder.")
flags.DEFINE_string("shared_dir", None, "Folder of CF / phase 1 / LLM outputs.")
flags.DEFINE_integer("seed", 0, "Seed.")
flags.DEFINE_integer("max_history", 20, "History cut (OpenP5: 20).")
flags.DEFINE_integer("cf_dim", 64, "iALS factors.")
flags.DEFINE_integer("qformer_layers", 2, "Q-Former layers (paper: 8).")
flags.DEFINE_integer("qformer_hidden", 128, "Q-Former width.")
flags.DEFINE_integer("num_query_tokens", 4, "Soft tokens per mention.")
flags.DEFINE_integer("phase1_epochs", 20, "Phase-1 epochs.")
flags.DEFINE_integer("llm_layers", 2, "LLM decoder layers (paper: 8).")
flags.DEFINE_integer("llm_hidden", 128, "LLM width.")
flags.DEFINE_integer("llm_epochs", 5, "LLM pretraining epochs.")
flags.DEFINE_integer("llm_steps_per_epoch", None, "Cap on LLM batches per epoch.")
flags.DEFINE_integer("phase2_epochs", 3, "Phase-2 epochs.")
flags.DEFINE_integer("phase2_steps_per_epoch", None, "Cap on phase-2 batches per epoch.")
flags.DEFINE_integer("num_mlp_tokens", 1, "Soft tokens per mention for `mlp`.")
flags.DEFINE_integer("templates_per_example", 3, "Seen templates per example/epoch.")
flags.DEFINE_bool("exclude_history", None,
                  "Drop history items from rankings (default: True for "
                  "MovieLens, False for Amazon, as OpenP5).")
flags.DEFINE_integer("max_eval_users", None, "Evaluate the first N users only.")
flags.DEFINE_integer("max_valid_users", 200, "Users of the per-epoch validation.")


def make_config():
    exclude = FLAGS.exclude_history
    if exclude is None:
        exclude = FLAGS.dataset.upper().startswith("ML")
    return PipelineConfig(
        max_history=FLAGS.max_history,
        cf_dim=FLAGS.cf_dim,
        qformer_layers=FLAGS.qformer_layers,
        qformer_hidden=FLAGS.qformer_hidden,
        num_query_tokens=FLAGS.num_query_tokens,
        phase1_losses=FLAGS.losses,
        phase1_epochs=FLAGS.phase1_epochs,
        llm_layers=FLAGS.llm_layers,
        llm_hidden=FLAGS.llm_hidden,
        llm_epochs=FLAGS.llm_epochs,
        llm_steps_per_epoch=FLAGS.llm_steps_per_epoch,
        phase2_epochs=FLAGS.phase2_epochs,
        phase2_steps_per_epoch=FLAGS.phase2_steps_per_epoch,
        num_mlp_tokens=FLAGS.num_mlp_tokens,
        templates_per_example=FLAGS.templates_per_example,
        exclude_history=exclude,
        max_eval_users=FLAGS.max_eval_users,
        max_valid_users=FLAGS.max_valid_users,
        seed=FLAGS.seed,
    )


def main(argv):
    del argv
    texts = FLAGS.item_texts_from
    if texts is None and FLAGS.dataset == "ML100K":
        texts = os.path.join(os.path.dirname(FLAGS.data_dir.rstrip("/")), "ml-100k")
    data = load_dataset(FLAGS.data_dir, FLAGS.dataset, item_texts_from=texts)
    shared = FLAGS.shared_dir or os.path.join(
        os.path.dirname(os.path.abspath(FLAGS.output_dir)),
        f"shared_{FLAGS.dataset}_seed{FLAGS.seed}",
    )
    results = run_openp5_cell(data, FLAGS.variant, make_config(),
                              FLAGS.output_dir, shared_dir=shared)
    with open(os.path.join(FLAGS.output_dir, "results.md")) as f:
        print(f.read())
    del results


if __name__ == "__main__":
    app.run(main)
