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

The same run from the package's entry point (every variant in one command):

    python -m ilm_keras.experiments run --config openp5_cpu \
        --data ../shared/data/openp5/ML100K --variant ilm --work_dir runs/ml100k
"""

from ilm_keras.utils.quiet import quiet_backend_logs

quiet_backend_logs()  # before TensorFlow/JAX are imported

import os

from absl import app
from absl import flags

from ilm_keras.experiments.configs import config_from_flags
from ilm_keras.experiments.configs import define_config_flags
from ilm_keras.experiments.configs import define_openp5_data_flags
from ilm_keras.experiments.openp5 import run_openp5

FLAGS = flags.FLAGS
define_config_flags("openp5_cpu")
define_openp5_data_flags()
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
    run_openp5(os.path.join(FLAGS.data_dir, FLAGS.dataset), config_from_flags(),
               FLAGS.output_dir, variant=FLAGS.variant,
               shared_dir=FLAGS.shared_dir, sample_users=FLAGS.sample_users,
               item_texts_from=FLAGS.item_texts_from)
    with open(os.path.join(FLAGS.output_dir, "results.md")) as f:
        print(f.read())


if __name__ == "__main__":
    app.run(main)
