"""Throughput of `ItemLanguageModel.recommend()` (constrained top-K beam search).

Builds a randomly initialized Llama-architecture decoder (the peer config in
`../shared/notes/stack-facts.md`: 8 layers, hidden 768, prompts of 64 tokens,
batch 32, 10 beams, 10 returned, a trie over 1,349 item strings of 6 tokens),
wraps it in an `ItemLanguageModel` and times `recommend()` on synthetic
prompts (`user_<id> watched item_<id> , item_<id> , ...`). Weights are random:
this measures speed only. The first call (compilation) is timed separately;
the throughput is the best of `--repeats` timed passes over all prompts.

Rows:
- `none`: text only (OpenP5-R), the same work as the peer's plain decoder.
- `mlp` (optional, `--item_encoders=none,mlp`): CoLLM adaptor, each mention
  followed by `--soft_tokens` soft tokens (longer prompts).

The peer number (HF transformers `generate` with a `prefix_allowed_tokens_fn`
trie, same decoder shape, on this 2-core CPU) is 0.6 prompts/s.

Writes a markdown report (numbers, command, machine) to `--output`.

Usage (from the repository root):
    python benchmarks/recommend_throughput.py
    python benchmarks/recommend_throughput.py --backend=tensorflow
    python benchmarks/recommend_throughput.py --num_layers=2 --hidden_dim=128
"""

import os
import platform
import shlex
import sys
import time

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

FLAGS = flags.FLAGS
flags.DEFINE_enum("backend", "jax", ["jax", "tensorflow"], "Keras backend.")
flags.DEFINE_integer("num_layers", 8, "Decoder layers.")
flags.DEFINE_integer("hidden_dim", 768, "Decoder width.")
flags.DEFINE_integer("num_heads", 12, "Query heads.")
flags.DEFINE_integer("num_kv_heads", 12, "Key/value heads.")
flags.DEFINE_integer("intermediate_dim", 2048, "Feed-forward width.")
flags.DEFINE_integer("vocabulary_size", 32000, "Decoder vocabulary size.")
flags.DEFINE_integer("num_items", 1349, "Catalogue size (ids 1001...).")
flags.DEFINE_integer("prompt_tokens", 64, "Prompt length in text tokens.")
flags.DEFINE_integer("num_prompts", 64, "Prompts per timed pass.")
flags.DEFINE_integer("batch_size", 32, "Prompts per compiled batch.")
flags.DEFINE_integer("k", 10, "Items returned per prompt.")
flags.DEFINE_integer("num_beams", 10, "Beam width.")
flags.DEFINE_integer("repeats", 2, "Timed passes (the best is reported).")
flags.DEFINE_list("item_encoders", ["none"], "Rows: none and/or mlp.")
flags.DEFINE_integer("soft_tokens", 2, "Soft tokens per mention (mlp).")
flags.DEFINE_integer("cf_dim", 64, "CF embedding dimension (mlp).")
flags.DEFINE_string(
    "output",
    "benchmarks/results/recommend_throughput.md",
    "Markdown report (relative to the repository root).",
)


def make_tokenizer(keras_hub):
    """A byte-level BPE where `item_1001` is 6 tokens: item _ 1 0 0 1."""
    vocab = {"<|endoftext|>": 0}
    for c in [chr(c) for c in range(33, 127)] + ["Ġ"]:
        vocab[c] = len(vocab)
    merges = []
    for word in ["item", "Ġitem", "user", "Ġuser", "Ġwatched", "Ġnext"]:
        current = word[0]
        for ch in word[1:]:
            merges.append(f"{current} {ch}")
            current += ch
            vocab.setdefault(current, len(vocab))
    return keras_hub.models.GPT2Tokenizer(vocabulary=vocab, merges=merges)


def make_prompts(tokenizer, item_ids, num_prompts, target, rng):
    """Prompts of about `target` text tokens (start token included)."""
    prompts = []
    for p in range(num_prompts):
        text = f"user_{p + 1} watched"
        while len(tokenizer(text + " , item_1001 next")) + 1 < target:
            sep = " ," if text.endswith(tuple("0123456789")) else ""
            text += f"{sep} item_{rng.choice(item_ids)}"
        text += " next"
        # Pad to the exact length with single-character words.
        while len(tokenizer(text)) + 1 < target:
            text += " x"
        prompts.append(text)
    return prompts


def main(argv):
    del argv
    os.environ["KERAS_BACKEND"] = FLAGS.backend
    import keras
    import keras_hub
    import numpy as np

    from ilm_keras.models.item_language_model import ItemLanguageModel
    from ilm_keras.models.item_language_model_preprocessor import (
        ItemLanguageModelPreprocessor,
    )

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    tokenizer = make_tokenizer(keras_hub)
    item_ids = [str(1001 + i) for i in range(FLAGS.num_items)]
    user_ids = [str(u + 1) for u in range(FLAGS.num_prompts)]
    prompts = make_prompts(
        tokenizer, item_ids, FLAGS.num_prompts, FLAGS.prompt_tokens, rng
    )
    history = [[m for m in p.split() if m.startswith("item_")] for p in prompts]
    backbone = keras_hub.models.LlamaBackbone(
        vocabulary_size=FLAGS.vocabulary_size,
        num_layers=FLAGS.num_layers,
        num_query_heads=FLAGS.num_heads,
        num_key_value_heads=FLAGS.num_kv_heads,
        hidden_dim=FLAGS.hidden_dim,
        intermediate_dim=FLAGS.intermediate_dim,
    )
    rows = []
    for encoder in FLAGS.item_encoders:
        preprocessor = ItemLanguageModelPreprocessor(
            tokenizer,
            item_ids,
            user_ids,
            sequence_length=512,
            max_mentions=32,
        )
        kwargs = {}
        if encoder == "mlp":
            kwargs = {
                "num_mlp_tokens": FLAGS.soft_tokens,
                "item_embeddings": rng.normal(
                    size=(len(item_ids), FLAGS.cf_dim)
                ).astype("float32"),
                "user_embeddings": rng.normal(
                    size=(len(user_ids), FLAGS.cf_dim)
                ).astype("float32"),
            }
        model = ItemLanguageModel(
            backbone, preprocessor, item_encoder=encoder, **kwargs
        )
        trie = model.item_trie()
        lengths = [len(ids) for ids, _ in preprocessor._layout_prompts(prompts)[0]]

        def run(model=model):
            return model.recommend(
                prompts,
                k=FLAGS.k,
                num_beams=FLAGS.num_beams,
                exclude=history,
                batch_size=FLAGS.batch_size,
            )

        start = time.perf_counter()
        items, scores = model.recommend(
            prompts[: FLAGS.batch_size],
            k=FLAGS.k,
            num_beams=FLAGS.num_beams,
            exclude=history[: FLAGS.batch_size],
            batch_size=FLAGS.batch_size,
        )
        first = time.perf_counter() - start
        times = []
        for _ in range(FLAGS.repeats):
            start = time.perf_counter()
            items, scores = run()
            times.append(time.perf_counter() - start)
        for b, row in enumerate(items):
            assert len(set(row)) == FLAGS.k
            assert not set(row) & {h[len("item_") :] for h in history[b]}
        assert np.isfinite(scores).all()
        best = min(times)
        rows.append(
            {
                "encoder": encoder,
                "prompt_tokens": f"{min(lengths)}-{max(lengths)}",
                "item_tokens": trie.max_length,
                "nodes": trie.num_nodes,
                "first": first,
                "best": best,
                "throughput": len(prompts) / best,
            }
        )
        print(rows[-1], flush=True)

    params = backbone.count_params()
    command = "python " + " ".join(
        [shlex.quote(a) for a in ["benchmarks/recommend_throughput.py"] + sys.argv[1:]]
    )
    load = os.getloadavg()
    lines = [
        "# recommend() throughput (constrained top-K beam search)",
        "",
        f"Command (from the repository root): `{command}`",
        "",
        (
            f"- Backend: {FLAGS.backend} (keras {keras.__version__}, "
            f"keras-hub {keras_hub.__version__}); CPU only, {os.cpu_count()} "
            f"cores ({platform.processor() or platform.machine()}); load "
            f"average before the report {load[0]:.1f} (the cores are shared)."
        ),
        (
            f"- Decoder: random `LlamaBackbone`, {FLAGS.num_layers} layers, "
            f"hidden {FLAGS.hidden_dim}, {FLAGS.num_heads} heads "
            f"({FLAGS.num_kv_heads} KV), FFN {FLAGS.intermediate_dim}, "
            f"vocabulary {FLAGS.vocabulary_size}: {params / 1e6:.1f}M "
            "parameters, float32."
        ),
        (
            f"- Catalogue: {FLAGS.num_items} items `item_<id>` (6 tokens + "
            f"end token); {FLAGS.num_prompts} prompts per pass, batch "
            f"{FLAGS.batch_size}, {FLAGS.num_beams} beams, top {FLAGS.k}, the "
            "prompt's own items excluded."
        ),
        (
            "- Time: wall clock of `recommend()` over all prompts (host-side "
            f"tokenization included), best of {FLAGS.repeats}; `first call` "
            "is one batch including compilation."
        ),
        "",
        (
            "| item encoder | prompt tokens | trie nodes | first call (s) | "
            "pass (s) | prompts/s |"
        ),
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['encoder']} | {r['prompt_tokens']} | {r['nodes']} | "
            f"{r['first']:.1f} | {r['best']:.2f} | {r['throughput']:.2f} |"
        )
    lines += [
        "",
        (
            "Peer (stack-facts.md, measured on this CPU): HF transformers "
            "`generate` with 10 beams and a `prefix_allowed_tokens_fn` trie "
            "on the same decoder shape, batch 32, prompt 64 tokens: 0.6 "
            "prompts/s."
        ),
        "",
    ]
    path = os.path.join(REPO, FLAGS.output)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    app.run(main)
