"""One process of a multi-process data-parallel phase 1 (JAX, CPU or TPU).

Launched once per process by `examples/multi_process.sh` (or by your
cluster's launcher, with the same arguments):

    python examples/multi_process.py --process_id 0 --num_processes 2 \
        --coordinator 127.0.0.1:12345

Every process builds the same synthetic data, iALS tables and phase-1
pipeline, makes only its own rows of every global batch
(`make_phase1_dataset(..., num_processes, process_id)`) and trains the Q-Former under
`keras.distribution.DataParallel` over all processes' devices: each step is
the step one device would take on the global batch. On CPU, JAX's gloo
collectives carry the all-reduces (`--cpu_devices` virtual devices per
process); on a TPU pod slice drop `--cpu_devices` and run one process per
host. Phase 2 shards the same way (`PromptResponseBatches.fit_input(...,
num_processes, process_id)`; `tests/distribution/
test_distribution_multi_process.py` checks both phases against one device).
"""

import os

from absl import app
from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_integer("process_id", 0, "This process's index.")
flags.DEFINE_integer("num_processes", 2, "Processes in the run.")
flags.DEFINE_string("coordinator", "127.0.0.1:12345", "host:port of process 0.")
flags.DEFINE_integer("cpu_devices", 2, "Virtual CPU devices per process (0: real devices).")
flags.DEFINE_integer("epochs", 3, "Phase-1 epochs.")
flags.DEFINE_integer("batch_size", 32, "Global batch size.")


def main(argv):
    del argv
    os.environ["KERAS_BACKEND"] = "jax"
    if FLAGS.cpu_devices:
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "")
            + f" --xla_force_host_platform_device_count={FLAGS.cpu_devices}"
        )
        import jax

        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    import keras

    keras.distribution.initialize(
        job_addresses=FLAGS.coordinator, num_processes=FLAGS.num_processes,
        process_id=FLAGS.process_id,
    )
    import ilm_keras
    from ilm_keras.cf import IALS
    from ilm_keras.data import item_item_pairs, make_synthetic_data

    keras.utils.set_random_seed(0)  # the same weights in every process
    data, _ = make_synthetic_data(num_users=300, num_items=64, seed=0)
    _, item_table = IALS(factors=16).fit(data.sequences, num_items=data.num_items)
    tokenizer = ilm_keras.QFormerTokenizer.train(data.item_texts, 200, 16)
    ids, mask = tokenizer.encode(data.item_texts)
    dataset, steps = ilm_keras.make_phase1_dataset(
        item_table, item_text=(list(range(data.num_items)), ids, mask),
        item_item=item_item_pairs(data.sequences), losses="it_ii",
        batch_size=FLAGS.batch_size, seed=0,
        num_processes=FLAGS.num_processes, process_id=FLAGS.process_id,
    )
    with keras.distribution.DataParallel(auto_shard_dataset=False).scope():
        qformer = ilm_keras.QFormer(
            vocabulary_size=tokenizer.vocabulary_size(), cf_dim=16,
            num_layers=2, hidden_dim=32, num_heads=4, intermediate_dim=64,
            num_query_tokens=4, max_text_length=16,
        )
        pretrainer = ilm_keras.QFormerPretrainer(
            qformer, losses="it_ii", dec_token_id=tokenizer.dec_token_id
        )
        pretrainer.compile(optimizer=keras.optimizers.AdamW(1e-3))
        history = pretrainer.fit(
            dataset, steps_per_epoch=steps, epochs=FLAGS.epochs,
            shuffle=False, verbose=2 if FLAGS.process_id == 0 else 0,
        )
    import jax

    print(f"process {jax.process_index()} of {jax.process_count()}, "
          f"{jax.device_count()} devices: loss per epoch "
          f"{[round(x, 4) for x in history.history['loss']]}", flush=True)


if __name__ == "__main__":
    app.run(main)
