"""Phase 0 + phase 1 on the built-in synthetic data: does the Q-Former learn
to match items it never saw a text for with the right text?

Items and texts share planted clusters (`make_synthetic_data`). CF embeddings
come from iALS on the interactions. The Q-Former is pretrained on the texts of
80% of the items (and on item-item / user-item pairs of all items); for the
held-out 20% we rank the held-out texts by item-text similarity and report:

- text recall@1: the item's own text ranks first (the title word is random,
  so CF cannot know it: expect little above chance);
- cluster accuracy@1: the top text belongs to the item's cluster (the part of
  the text that CF can know).

An untrained Q-Former with the same architecture is scored in the same run.

    python examples/phase1_synthetic.py --epochs 30
"""

from ilm_keras.utils.quiet import quiet_backend_logs

quiet_backend_logs()  # before TensorFlow/JAX are imported

import time

from absl import app
from absl import flags

import keras
import numpy as np

import ilm_keras
from ilm_keras.cf import IALS
from ilm_keras.data import item_item_pairs
from ilm_keras.data import make_synthetic_data
from ilm_keras.data import user_item_pairs

FLAGS = flags.FLAGS
flags.DEFINE_integer("num_items", 200, "Synthetic items.")
flags.DEFINE_integer("num_users", 600, "Synthetic users.")
flags.DEFINE_integer("num_clusters", 8, "Planted clusters.")
flags.DEFINE_float("held_out", 0.2, "Share of items whose text is held out.")
flags.DEFINE_integer("cf_dim", 32, "iALS factors.")
flags.DEFINE_integer("num_layers", 2, "Q-Former layers.")
flags.DEFINE_integer("hidden_dim", 64, "Q-Former width.")
flags.DEFINE_integer("num_query_tokens", 8, "Learned queries.")
flags.DEFINE_integer("num_cf_tokens", 4, "Key/value tokens per CF vector.")
flags.DEFINE_enum("losses", "all", ["it", "it_ii", "it_ui", "all"], "Losses.")
flags.DEFINE_integer("batch_size", 32, "Examples per batch.")
flags.DEFINE_integer("epochs", 30, "Epochs (one pass over item-text pairs each).")
flags.DEFINE_float("learning_rate", 1e-3, "AdamW learning rate.")
flags.DEFINE_integer("seed", 0, "Seed.")


def retrieval_scores(pretrainer, item_table, token_ids, padding_mask, items,
                     clusters):
    similarity = keras.ops.convert_to_numpy(
        pretrainer.item_text_similarity(item_table[items], token_ids, padding_mask)
    )
    top = similarity.argmax(axis=1)
    return {
        "text_recall@1": float(np.mean(top == np.arange(len(items)))),
        "cluster_accuracy@1": float(np.mean(clusters[items[top]] == clusters[items])),
    }


def main(argv):
    del argv
    keras.utils.set_random_seed(FLAGS.seed)
    data, planted = make_synthetic_data(
        num_users=FLAGS.num_users,
        num_items=FLAGS.num_items,
        num_clusters=FLAGS.num_clusters,
        seed=FLAGS.seed,
    )
    clusters = planted["item_clusters"]
    start = time.time()
    ials = IALS(factors=FLAGS.cf_dim, iterations=15, seed=FLAGS.seed)
    user_table, item_table = ials.fit(data.sequences, num_items=data.num_items)
    print(f"phase 0: iALS {FLAGS.cf_dim} factors in {time.time() - start:.1f}s")

    rng = np.random.default_rng(FLAGS.seed)
    order = rng.permutation(data.num_items)
    num_held = int(round(FLAGS.held_out * data.num_items))
    held, train = np.sort(order[:num_held]), np.sort(order[num_held:])
    tokenizer = ilm_keras.QFormerTokenizer.train(
        [data.item_texts[i] for i in train], vocabulary_size=400, sequence_length=16
    )
    token_ids, padding_mask = tokenizer.encode(data.item_texts)
    dataset, steps = ilm_keras.make_phase1_dataset(
        item_table,
        item_text=(train, token_ids[train], padding_mask[train]),
        item_item=item_item_pairs(data.sequences),
        user_item=user_item_pairs(data.sequences),
        user_table=user_table,
        losses=FLAGS.losses,
        batch_size=FLAGS.batch_size,
        seed=FLAGS.seed,
    )

    def build():
        qformer = ilm_keras.QFormer(
            vocabulary_size=tokenizer.vocabulary_size(),
            cf_dim=FLAGS.cf_dim,
            num_layers=FLAGS.num_layers,
            hidden_dim=FLAGS.hidden_dim,
            num_heads=4,
            intermediate_dim=4 * FLAGS.hidden_dim,
            num_query_tokens=FLAGS.num_query_tokens,
            max_text_length=16,
            num_cf_tokens=FLAGS.num_cf_tokens,
            dropout=0.1,
        )
        return ilm_keras.QFormerPretrainer(
            qformer,
            losses=FLAGS.losses,
            embed_dim=64,
            dec_token_id=tokenizer.dec_token_id,
            seed=FLAGS.seed,
        )

    untrained = build()
    pretrainer = build()
    pretrainer.compile(
        optimizer=keras.optimizers.AdamW(FLAGS.learning_rate, weight_decay=0.01)
    )
    start = time.time()
    pretrainer.fit(dataset, steps_per_epoch=steps, epochs=FLAGS.epochs,
                   shuffle=False, verbose=2)  # the dataset shuffles itself
    print(f"phase 1: {FLAGS.epochs} epochs x {steps} steps in {time.time() - start:.1f}s")

    print(f"\nheld-out items: {len(held)}; chance: text recall@1 "
          f"{1 / len(held):.3f}, cluster accuracy@1 ~{1 / FLAGS.num_clusters:.3f}")
    for name, model in (("untrained Q-Former", untrained), ("pretrained Q-Former", pretrainer)):
        scores = retrieval_scores(
            model, item_table, token_ids[held], padding_mask[held], held, clusters
        )
        print(f"{name:>20}: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))


if __name__ == "__main__":
    app.run(main)
