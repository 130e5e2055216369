r"""Talk about movies whose text the model never saw: one cell of the
item-language benchmark (ILM over frozen SmolLM2-135M-Instruct, ML-100K).

Holds out 20% of the movies (no text of theirs is trained on; only their CF
vectors from the ratings are known), pretrains the Q-Former on the other
movies' texts (phase 1), trains the ILM's item encoder over frozen SmolLM2 on
their conversational tasks (phase 2), then asks about a held-out movie.
`benchmarks/item_language_table.py` runs every variant and reference row.

    KERAS_BACKEND=jax python examples/item_language.py \
        --data ../shared/data/ml-100k --set phase2_steps=150
"""


from ilm_keras.utils.quiet import quiet_backend_logs

quiet_backend_logs()  # before TensorFlow/JAX are imported

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from ilm_keras.experiments.configs import define_item_language_flags  # noqa: E402

define_item_language_flags()
_VARIANT = flags.DEFINE_enum("variant", "ilm", ["mlp", "ilm_rand", "ilm"], "Item encoder.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from ilm_keras.data.movielens import load_ml100k
    from ilm_keras.experiments import item_language as il
    from ilm_keras.llm import load_causal_lm
    from ilm_keras.metrics.semantic import MiniLMSentenceEncoder

    config = il.config_from_flags(num_eval_items=16, eval_tasks=("genres", "year"))
    data = load_ml100k(FLAGS.data)
    backbone, tokenizer = load_causal_lm(config.llm)
    result = il.run_item_language_seed(
        data, config, backbone, tokenizer, MiniLMSentenceEncoder(),
        variants=("ilm",) if _VARIANT.value == "ilm" else (_VARIANT.value,))
    model = result["models"][_VARIANT.value]
    for case in result["examples"][_VARIANT.value]["held_out"]["genres"][:3]:
        print(f"Q (held-out item): {case['prompt'].split('user', 1)[1].split('<|im_end|>')[0].strip()}")
        print(f"A: {case['answer']}\n   (reference: {case['reference']})")
    held = result["rows"][_VARIANT.value]["held_out"]["genres"]
    print(f"held-out genres task: genre F1 {held['genre_f1']:.3f}, exactly right "
          f"{held['genre_exact']:.0%}, semantic consistency {held['semantic_consistency']:.3f}")
    del model


if __name__ == "__main__":
    app.run(main)
