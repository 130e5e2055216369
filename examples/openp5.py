"""One cell of the paper's Tables 3-4: an ILM variant on an OpenP5 dataset.

    python examples/openp5.py --dataset ML100K --variant ilm \
        --output_dir runs/ml100k_ilm_seed0

Settings come from a named config (`--config`, default `openp5_cpu`, in
`ilm_keras/experiments/configs.py`); replace single fields with `--set`,
e.g. `--set seed=1 --set phase1_losses=all`. The dataset decides the
exclusion rule, the user sample and the phase-1 losses
(`ilm_keras.experiments.openp5.dataset_config`), as in
`benchmarks/openp5_table.py`.

Pipeline (paper §4.4): iALS CF embeddings -> phase 1 (Q-Former, for `ilm`) ->
a Llama decoder pretrained on the text-only OpenP5 prompts, then frozen ->
phase 2 (`none` = OpenP5-R, `mlp`, `ilm_rand`, `ilm`) with the checkpoint of
the best validation NDCG@10 -> test HR/NDCG@{5,10} on the sequential and
straightforward tasks with a seen template (0) and the unseen template.

Writes `results.json` and `results.md` to `--output_dir`. Resumable: rerun the
same command after a kill (even `kill -9`); finished phases are loaded from
disk and a phase killed mid-training continues from its last backup (at most
`backup_steps` steps back, mid-epoch too) and ends with the same weights as an
uninterrupted run. Every file is written atomically; a truncated one stops the
run with an error naming what to delete (`ilm_keras/utils/resume.py`,
`ilm_keras/utils/files.py`). CF, phase 1 and
the LLM are shared by all variants of one dataset/config/seed through
`--shared_dir` (default: `<output_dir>/../shared_<dataset>_seed<seed>`).

Data: `--data_dir/<dataset>/user_sequence.txt` + OpenP5's index files. ML100K
item texts (for phase 1) come from `--item_texts_from` (default
`../shared/data/ml-100k`). Beauty has no item texts here: `ilm` (phase 1 needs
item-text pairs) stops with an error naming that; run `ilm_rand`, `mlp`, `none`.
"""

from ilm_keras.utils.quiet import fit_verbosity
from ilm_keras.utils.quiet import quiet_backend_logs

quiet_backend_logs()  # before TensorFlow/JAX are imported

import dataclasses
import os

from absl import app
from absl import flags

from ilm_keras.experiments.configs import config_from_flags
from ilm_keras.experiments.configs import define_config_flags
from ilm_keras.experiments.openp5 import dataset_config
from ilm_keras.experiments.openp5 import load_dataset
from ilm_keras.experiments.openp5 import run_openp5_cell

FLAGS = flags.FLAGS
define_config_flags("openp5_cpu")
flags.DEFINE_string("dataset", "ML100K", "OpenP5 dataset folder name.")
flags.DEFINE_string("data_dir", "../shared/data/openp5", "OpenP5 data folder.")
flags.DEFINE_string("item_texts_from", None,
                    "MovieLens folder with the item texts (default for ML100K: "
                    "<data_dir>/../ml-100k).")
flags.DEFINE_enum("variant", "ilm", ["none", "mlp", "ilm_rand", "ilm"], "Variant.")
flags.DEFINE_string("output_dir", "runs/openp5", "This cell's output folder.")
flags.DEFINE_string("shared_dir", None, "Folder of CF / phase 1 / LLM outputs.")
flags.DEFINE_integer("sample_users", 2000,
                     "Datasets with more test users than this are scored on a "
                     "fixed random sample of this many.")


def main(argv):
    del argv
    texts = FLAGS.item_texts_from
    if texts is None and FLAGS.dataset == "ML100K":
        texts = os.path.join(os.path.dirname(FLAGS.data_dir.rstrip("/")), "ml-100k")
    data = load_dataset(FLAGS.data_dir, FLAGS.dataset, item_texts_from=texts)
    config = dataset_config(config_from_flags(), data,
                            sample_users=FLAGS.sample_users)
    # Progress bars on a terminal; one line per epoch into a file or pipe.
    config = dataclasses.replace(config, verbose=fit_verbosity(config.verbose))
    shared = FLAGS.shared_dir or os.path.join(
        os.path.dirname(os.path.abspath(FLAGS.output_dir)),
        f"shared_{FLAGS.dataset}_seed{config.seed}",
    )
    run_openp5_cell(data, FLAGS.variant, config, FLAGS.output_dir,
                    shared_dir=shared)
    with open(os.path.join(FLAGS.output_dir, "results.md")) as f:
        print(f.read())


if __name__ == "__main__":
    app.run(main)
