"""Step time of a phase-1 `fit` whose batch kinds take turns, by dispatch.

`QFormerPretrainer.call` tells an item-text batch from a pair batch by its
row counts. Where TensorFlow relaxes the batch dimension to None, it computes
both kinds' losses, the absent kind's on zero rows, and selects the batch's
own. This script times that step against the dispatch of another revision
(`--baseline_rev`, e.g. one that branched with `ops.cond`), in one process,
on the same data and the same Q-Former (quickstart size by default), for
each `--jit_compile` value (JAX always compiles; on TensorFlow `false` is
Keras' CPU default and `true` is XLA).

Timing: steady state inside one `fit` (a callback reads the clock every
`--steps` steps, a multiple of 3 so that every chunk holds as many batches
of each kind; the first chunk, which compiles, is not counted); the median
chunk of `--repeats`.

    KERAS_BACKEND=tensorflow python benchmarks/phase1_dispatch.py \\
        --baseline_rev fbce790 --jit_compile false,true
"""

import importlib.util
import os
import subprocess
import tempfile
import time

from ilm_keras.utils.quiet import quiet_backend_logs

quiet_backend_logs()

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from report import REPO  # noqa: E402
from report import report_header  # noqa: E402
from report import write_report  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("baseline_rev", None, "Git revision whose pretrainer to time too.")
flags.DEFINE_list("jit_compile", ["false"], "`compile(jit_compile=...)` values: false, true.")
flags.DEFINE_integer("batch_size", 32, "Examples per batch.")
flags.DEFINE_integer("hidden_dim", 64, "Q-Former width.")
flags.DEFINE_integer("num_layers", 2, "Q-Former layers.")
flags.DEFINE_integer("text_length", 32, "Text tokens.")
flags.DEFINE_integer("steps", 30, "Timed steps per chunk (a multiple of 3).")
flags.DEFINE_integer("repeats", 3, "Timed chunks; the median is reported.")
flags.DEFINE_string("output", None, "Optional markdown file for the table.")


def load_pretrainer_class(rev):
    """`QFormerPretrainer` as revision `rev` wrote it (its own module)."""
    source = subprocess.run(
        ["git", "show", f"{rev}:ilm_keras/models/qformer_pretrainer.py"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout
    # Registered under another package: the name is taken by today's class.
    source = source.replace('package="ilm_keras"', 'package="ilm_keras_baseline"')
    path = os.path.join(tempfile.mkdtemp(), "baseline_pretrainer.py")
    with open(path, "w") as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location("baseline_pretrainer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.QFormerPretrainer


def seconds_per_step(pretrainer_class, jit_compile):
    import keras
    import numpy as np

    import ilm_keras

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    b, cf_dim, vocab = FLAGS.batch_size, 32, 400
    items = users = 4 * b
    item_table = rng.normal(size=(items, cf_dim)).astype("float32")
    user_table = rng.normal(size=(users, cf_dim)).astype("float32")
    token_ids = rng.integers(6, vocab, (items, FLAGS.text_length)).astype("int32")
    token_ids[:, 0] = 2
    dataset, _ = ilm_keras.make_phase1_dataset(
        item_table, item_text=(np.arange(items), token_ids,
                               np.ones_like(token_ids, bool)),
        item_item=rng.integers(0, items, (items, 2)),
        user_item=np.stack([np.arange(users), rng.integers(0, items, users)], 1),
        user_table=user_table, losses="all", batch_size=b)
    qformer = ilm_keras.QFormer(
        vocab, cf_dim, num_layers=FLAGS.num_layers, hidden_dim=FLAGS.hidden_dim,
        num_heads=4, intermediate_dim=4 * FLAGS.hidden_dim, num_query_tokens=4,
        max_text_length=FLAGS.text_length, num_cf_tokens=4)
    model = pretrainer_class(qformer, losses="all", seed=0)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3), jit_compile=jit_compile)
    marks = []

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if (batch + 1) % FLAGS.steps == 0:
                float(keras.ops.convert_to_numpy(logs["loss"]))
                marks.append(time.perf_counter())

    model.fit(dataset, steps_per_epoch=(FLAGS.repeats + 1) * FLAGS.steps,
              epochs=1, callbacks=[Clock()], verbose=0, shuffle=False)
    chunks = sorted(b - a for a, b in zip(marks, marks[1:]))
    return chunks[len(chunks) // 2] / FLAGS.steps, model.jit_compile


def main(argv):
    del argv
    if FLAGS.steps % 3:
        raise app.UsageError(f"--steps must be a multiple of 3, got {FLAGS.steps}.")
    from ilm_keras import QFormerPretrainer

    classes = [("working tree", QFormerPretrainer)]
    if FLAGS.baseline_rev:
        classes.append((FLAGS.baseline_rev, load_pretrainer_class(FLAGS.baseline_rev)))
    rows = []
    for value in FLAGS.jit_compile:
        jit = {"true": True, "false": False}[value.lower()]
        for name, cls in classes:
            try:
                seconds, used = seconds_per_step(cls, jit)
                rows.append(f"| {name} | {jit} ({'XLA' if used else 'no XLA'}) "
                            f"| {1000 * seconds:.1f} |")
            except Exception as error:  # A revision that refuses the option.
                rows.append(f"| {name} | {jit} | refused: {str(error)[:80]} |")
            print(rows[-1], flush=True)
    lines = report_header("Phase-1 step time by batch-kind dispatch") + [
        f"Q-Former {FLAGS.num_layers} layers x {FLAGS.hidden_dim}, batch "
        f"{FLAGS.batch_size}, text {FLAGS.text_length} tokens, losses='all' "
        "(item-text, item-item and user-item batches in turn).",
        "",
        "| pretrainer | jit_compile | ms / step |",
        "|---|---|---|",
        *rows,
    ]
    if FLAGS.output:
        write_report(lines, FLAGS.output)
    else:
        print("\n".join(lines))


if __name__ == "__main__":
    app.run(main)
