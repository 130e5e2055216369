"""Throughput of `ItemLanguageModel.recommend()` vs HF transformers `generate`.

Builds a randomly initialized keras-hub `LlamaBackbone`, wraps it in an
`ItemLanguageModel` (text only, `item_encoder="none"`: the work of the peer)
and times `recommend()` (top-K trie-constrained beam search) on synthetic
prompts (`user_<id> watched item_<id> , item_<id> , ... next`). In the same
run, the same weights are converted into a HF transformers
`LlamaForCausalLM` (torch), its logits are checked against ours on a prompt,
and HF `generate(num_beams=W, num_return_sequences=W,
prefix_allowed_tokens_fn=<trie>)` (the OpenP5 method) is timed on the same
prompts. Reported: prompts/s of both, the ratio, and the share of prompts on
which both return the same top item. Weights are random: this measures speed,
and agreement of two implementations of the same search.

Rows of ours:
- `recommend()`: the default path (Llama: beams decode against one shared
  prompt cache, per-step beam widths from the trie);
- `recommend(), per-beam cache` (`--generic_path`): the generic path every
  backbone family supports (cache tiled to the beams and reordered each
  step); it is what `recommend()` ran before the shared-cache path.

Default size (runs in a few minutes on the 2-core CPU): the OpenP5-sized
decoder, 4 layers, hidden 256, 4 heads, FFN 1024, and a character/word
tokenizer of 121 tokens (so `item_1001` is 6 tokens: `item _ 1 0 0 1`); the
peer config of `../shared/notes/stack-facts.md` is
`--num_layers=8 --hidden_dim=768 --num_heads=12 --num_kv_heads=12
--intermediate_dim=2048 --vocabulary_size=32000`.

Writes a markdown report (numbers, command, machine) to `--output`.

Usage (from the repository root):
    python benchmarks/recommend_throughput.py
    python benchmarks/recommend_throughput.py --num_prompts=943 \\
        --num_items=1682 --peer_prompts=64
    python benchmarks/recommend_throughput.py --backend=tensorflow --nopeer
    # GPU (see benchmarks/device/gpu_recommend.sh):
    python benchmarks/recommend_throughput.py --dtype=bfloat16 --device=cuda
"""

import os
import platform
import shlex
import sys
import time

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import report  # noqa: E402  (benchmarks/, the script's folder)

FLAGS = flags.FLAGS
flags.DEFINE_enum("backend", "jax", ["jax", "tensorflow"], "Keras backend.")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Decoder dtype.")
flags.DEFINE_enum("device", "cpu", ["cpu", "cuda"], "Device of the HF peer.")
flags.DEFINE_integer("num_layers", 4, "Decoder layers.")
flags.DEFINE_integer("hidden_dim", 256, "Decoder width.")
flags.DEFINE_integer("num_heads", 4, "Query heads.")
flags.DEFINE_integer("num_kv_heads", 4, "Key/value heads.")
flags.DEFINE_integer("intermediate_dim", 1024, "Feed-forward width.")
flags.DEFINE_integer(
    "vocabulary_size", 0, "Decoder vocabulary (0: the tokenizer's, 121)."
)
flags.DEFINE_integer("num_items", 1349, "Catalogue size (ids 1001...).")
flags.DEFINE_integer("prompt_tokens", 64, "Prompt length in text tokens.")
flags.DEFINE_integer(
    "prompt_tokens_max",
    0,
    "If larger than --prompt_tokens, prompt lengths are drawn uniformly "
    "from [prompt_tokens, prompt_tokens_max].",
)
flags.DEFINE_integer("num_prompts", 64, "Prompts per timed pass of ours.")
flags.DEFINE_integer("batch_size", 32, "Prompts per batch (both).")
flags.DEFINE_integer("k", 10, "Items returned per prompt.")
flags.DEFINE_integer("num_beams", 10, "Beam width (both).")
flags.DEFINE_integer("repeats", 2, "Timed passes of ours (the best is reported).")
flags.DEFINE_boolean("peer", True, "Time the HF transformers peer.")
flags.DEFINE_integer(
    "peer_prompts", 0, "Prompts for the peer (the first ones; 0: all)."
)
flags.DEFINE_boolean("generic_path", True, "Also time the generic per-beam-cache path.")
flags.DEFINE_boolean("check_greedy", False, "Check cached greedy == uncached greedy.")
flags.DEFINE_boolean(
    "block_tensorflow",
    False,
    "Make `import tensorflow` fail (checks the TF-free path of GPU images).",
)
flags.DEFINE_boolean(
    "flash_attention",
    True,
    "Let Keras pick cuDNN flash attention where it deems it usable "
    "(--noflash_attention: plain XLA attention).",
)
flags.DEFINE_string(
    "output",
    "benchmarks/results/recommend_throughput.md",
    "Markdown report (relative to the repository root unless absolute).",
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


def make_prompts(tokenizer, item_ids, num_prompts, lengths, rng):
    """Prompts of `lengths[p]` text tokens (start token included)."""
    prompts = []
    for p in range(num_prompts):
        target = int(lengths[p])
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


def to_hf_llama(backbone, dtype, device):
    """A `transformers.LlamaForCausalLM` with the backbone's weights."""
    import keras
    import numpy as np
    import torch
    import transformers

    def arr(variable):
        return keras.ops.convert_to_numpy(keras.ops.cast(variable.value, "float32"))

    layers = backbone.transformer_layers
    attention = layers[0]._self_attention_layer
    config = transformers.LlamaConfig(
        vocab_size=backbone.vocabulary_size,
        hidden_size=backbone.hidden_dim,
        intermediate_size=backbone.intermediate_dim,
        num_hidden_layers=backbone.num_layers,
        num_attention_heads=backbone.num_query_heads,
        num_key_value_heads=backbone.num_key_value_heads,
        rms_norm_eps=backbone.layer_norm_epsilon,
        rope_theta=attention.rope_max_wavelength,
        max_position_embeddings=4096,
        tie_word_embeddings=backbone.tie_word_embeddings,
        attention_bias=False,
        mlp_bias=False,
    )
    model = transformers.LlamaForCausalLM(config)
    hidden = backbone.hidden_dim
    state = {
        "model.embed_tokens.weight": arr(backbone.token_embedding.embeddings),
        "model.norm.weight": arr(backbone.layer_norm.scale),
    }
    if not backbone.tie_word_embeddings:
        state["lm_head.weight"] = arr(backbone.token_embedding.reverse_embeddings).T
    for i, layer in enumerate(layers):
        att = layer._self_attention_layer
        prefix = f"model.layers.{i}."
        for name, dense in [
            ("q", att._query_dense),
            ("k", att._key_dense),
            ("v", att._value_dense),
        ]:
            state[prefix + f"self_attn.{name}_proj.weight"] = (
                arr(dense.kernel).reshape(hidden, -1).T
            )
        state[prefix + "self_attn.o_proj.weight"] = (
            arr(att._output_dense.kernel).reshape(-1, hidden).T
        )
        state[prefix + "mlp.gate_proj.weight"] = arr(
            layer._feedforward_gate_dense.kernel
        ).T
        state[prefix + "mlp.up_proj.weight"] = arr(
            layer._feedforward_intermediate_dense.kernel
        ).T
        state[prefix + "mlp.down_proj.weight"] = arr(
            layer._feedforward_output_dense.kernel
        ).T
        state[prefix + "input_layernorm.weight"] = arr(
            layer._self_attention_layernorm.scale
        )
        state[prefix + "post_attention_layernorm.weight"] = arr(
            layer._feedforward_layernorm.scale
        )
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [
        m
        for m in missing
        if not (backbone.tie_word_embeddings and m == "lm_head.weight")
    ]
    if missing or unexpected:
        raise RuntimeError(
            f"Weight conversion: missing {missing}, unexpected {unexpected}."
        )
    if backbone.tie_word_embeddings:
        model.tie_weights()
    torch_dtype = torch.bfloat16 if dtype == "bfloat16" else torch.float32
    return model.to(device=device, dtype=torch_dtype).eval()


class TriePrefixFn:
    """OpenP5's `prefix_allowed_tokens_fn`: a Python trie over item tokens."""

    def __init__(self, sequences, prompt_width):
        self.root = {}
        for s in sequences:
            node = self.root
            for t in s:
                node = node.setdefault(int(t), {})
        self.prompt_width = prompt_width

    def __call__(self, batch_id, input_ids):
        node = self.root
        for t in input_ids[self.prompt_width :].tolist():
            node = node.get(t)
            if node is None:
                return []
        return list(node.keys())


def hf_recommend(model, prep, trie, prompts, num_beams, batch_size, device):
    """Top-`num_beams` item indices per prompt with HF `generate` + trie."""
    import numpy as np
    import torch

    sequences = {tuple(s): i for i, s in enumerate(trie.sequences)}
    x = prep.recommend_preprocess(prompts)
    layouts = [ids[:n].tolist() for ids, n in zip(x["token_ids"], x["lengths"])]
    tops = []
    for start in range(0, len(prompts), batch_size):
        chunk = layouts[start : start + batch_size]
        width = max(len(ids) for ids in chunk)
        # Decoder-only generation pads on the left.
        ids = np.full((len(chunk), width), prep.pad_token_id, "int64")
        mask = np.zeros((len(chunk), width), "int64")
        for b, row in enumerate(chunk):
            ids[b, width - len(row) :] = row
            mask[b, width - len(row) :] = 1
        with torch.no_grad():
            out = model.generate(
                input_ids=torch.from_numpy(ids).to(device),
                attention_mask=torch.from_numpy(mask).to(device),
                num_beams=num_beams,
                num_return_sequences=num_beams,
                max_new_tokens=trie.max_length,
                prefix_allowed_tokens_fn=TriePrefixFn(trie.sequences, width),
                do_sample=False,
                early_stopping=True,
                eos_token_id=prep.end_token_id,
                pad_token_id=prep.pad_token_id,
            )
        out = out[:, width:].cpu().numpy().reshape(len(chunk), num_beams, -1)
        for b in range(len(chunk)):
            row = []
            for s in out[b]:
                s = list(s)
                if prep.end_token_id in s:
                    s = s[: s.index(prep.end_token_id) + 1]
                row.append(sequences.get(tuple(s), -1))
            tops.append(row)
    return tops


def greedy_check(model, prompts, steps=4):
    """Cached `generate()` greedy tokens vs an uncached argmax loop."""
    import keras
    import numpy as np

    prep = model.preprocessor
    x = prep.generate_preprocess(prompts, sequence_length=prep.sequence_length)
    model.compile(sampler="greedy")
    model.preprocessor = None
    try:
        out = model.generate(dict(x), stop_token_ids=None)
    finally:
        model.preprocessor = prep
    out = keras.ops.convert_to_numpy(out["token_ids"])
    token_ids, mask = x["token_ids"].copy(), x["padding_mask"].copy()
    lengths = mask.sum(axis=1)
    for _ in range(steps):
        logits = keras.ops.convert_to_numpy(
            model.predict_on_batch(dict(x, token_ids=token_ids, padding_mask=mask))
        )
        for b, n in enumerate(lengths):
            token_ids[b, n] = int(np.argmax(logits[b, n - 1]))
            mask[b, n] = True
        lengths = lengths + 1
    start = x["padding_mask"].sum(axis=1)
    same = [
        bool((out[b, : start[b] + steps] == token_ids[b, : start[b] + steps]).all())
        for b in range(len(prompts))
    ]
    return sum(same), len(same)


def main(argv):
    del argv
    os.environ["KERAS_BACKEND"] = FLAGS.backend
    if FLAGS.block_tensorflow:
        if FLAGS.backend == "tensorflow":
            raise ValueError("--block_tensorflow needs --backend=jax.")
        sys.modules["tensorflow"] = None
    import keras
    import keras_hub
    import numpy as np

    from ilm_keras.models.item_language_model import ItemLanguageModel
    from ilm_keras.models.item_language_model_preprocessor import (
        ItemLanguageModelPreprocessor,
    )

    if not FLAGS.flash_attention:
        keras.config.disable_flash_attention()
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    tokenizer = make_tokenizer(keras_hub)
    vocabulary_size = FLAGS.vocabulary_size or tokenizer.vocabulary_size()
    item_ids = [str(1001 + i) for i in range(FLAGS.num_items)]
    user_ids = [str(u + 1) for u in range(FLAGS.num_prompts)]
    low = FLAGS.prompt_tokens
    high = max(FLAGS.prompt_tokens_max, low)
    target_lengths = rng.integers(low, high + 1, size=FLAGS.num_prompts)
    prompts = make_prompts(tokenizer, item_ids, FLAGS.num_prompts, target_lengths, rng)
    backbone = keras_hub.models.LlamaBackbone(
        vocabulary_size=vocabulary_size,
        num_layers=FLAGS.num_layers,
        num_query_heads=FLAGS.num_heads,
        num_key_value_heads=FLAGS.num_kv_heads,
        hidden_dim=FLAGS.hidden_dim,
        intermediate_dim=FLAGS.intermediate_dim,
        dtype=FLAGS.dtype,
    )
    preprocessor = ItemLanguageModelPreprocessor(
        tokenizer, item_ids, user_ids, sequence_length=512, max_mentions=256
    )
    model = ItemLanguageModel(backbone, preprocessor, item_encoder="none")
    trie = model.item_trie()
    lengths = preprocessor.recommend_preprocess(prompts)["lengths"].tolist()
    print(
        f"prompts {len(prompts)} of {min(lengths)}-{max(lengths)} tokens; "
        f"trie {trie.num_nodes} nodes, widths {trie.beam_widths(FLAGS.num_beams)}",
        flush=True,
    )

    def time_ours(shared, subset):
        model._shared_prompt_decoding = shared
        batch = subset[: FLAGS.batch_size]
        start = time.perf_counter()
        model.recommend(
            batch, k=FLAGS.k, num_beams=FLAGS.num_beams, batch_size=FLAGS.batch_size
        )
        first = time.perf_counter() - start
        times = []
        for _ in range(FLAGS.repeats):
            start = time.perf_counter()
            items, scores = model.recommend(
                subset,
                k=FLAGS.k,
                num_beams=FLAGS.num_beams,
                batch_size=FLAGS.batch_size,
            )
            times.append(time.perf_counter() - start)
        for row in items:
            assert len(set(row)) == FLAGS.k
        assert np.isfinite(scores).all() and (np.diff(scores, axis=1) <= 0).all()
        return items, scores, first, min(times)

    rows = []
    items, _, first, best = time_ours(True, prompts)
    rows.append(("`recommend()`", len(prompts), first, best))
    print(rows[-1], flush=True)
    peer_n = FLAGS.peer_prompts or len(prompts)
    peer_prompts = prompts[:peer_n]
    generic_items = None
    notes = []
    if FLAGS.generic_path:
        try:
            generic_items, _, g_first, g_best = time_ours(False, peer_prompts)
            rows.append(
                ("`recommend()`, per-beam cache (before)", peer_n, g_first, g_best)
            )
            print(rows[-1], flush=True)
        except Exception as e:  # noqa: BLE001 (reported: the row is missing)
            notes.append(f"- Per-beam-cache path failed: {type(e).__name__}: {e}"[:500])
            print(notes[-1], flush=True)
        model._shared_prompt_decoding = True
    if generic_items is not None:
        same = np.mean([a[0] == b[0] for a, b in zip(items[:peer_n], generic_items)])
        same_all = np.mean(
            [list(a) == list(b) for a, b in zip(items[:peer_n], generic_items)]
        )
        notes.append(
            f"- Shared-cache path vs per-beam-cache path: same top item on "
            f"{same:.1%} of prompts, same top-{FLAGS.k} list on {same_all:.1%}."
        )
    if FLAGS.check_greedy:
        try:
            ok, n = greedy_check(model, prompts[:8])
            notes.append(
                f"- Cached greedy == uncached greedy ({FLAGS.dtype}, 4 new "
                f"tokens): {ok}/{n} prompts."
            )
        except Exception as e:  # noqa: BLE001 (reported in the notes)
            notes.append(f"- Greedy check failed: {type(e).__name__}: {e}"[:500])
        print(notes[-1], flush=True)

    peer = None
    if FLAGS.peer:
        import torch
        import transformers

        torch.set_num_threads(
            os.cpu_count() if FLAGS.device == "cpu" else torch.get_num_threads()
        )
        hf = to_hf_llama(backbone, FLAGS.dtype, FLAGS.device)
        x = preprocessor.generate_preprocess(
            prompts[:2], sequence_length=max(lengths[:2]) + 1
        )
        ours_logits = keras.ops.convert_to_numpy(
            keras.ops.cast(model.predict_on_batch(x), "float32")
        )
        with torch.no_grad():
            hf_logits = (
                hf(
                    input_ids=torch.from_numpy(np.asarray(x["token_ids"], "int64")).to(
                        FLAGS.device
                    ),
                    attention_mask=torch.from_numpy(
                        np.asarray(x["padding_mask"], "int64")
                    ).to(FLAGS.device),
                )
                .logits.float()
                .cpu()
                .numpy()
            )
        real = np.asarray(x["padding_mask"], bool)
        logit_diff = float(np.abs(ours_logits - hf_logits)[real].max())
        print(f"max |logits ours - HF| = {logit_diff:.2e}", flush=True)
        # In float32 the two must agree to rounding; in bfloat16 the
        # difference is reported (rounding of 8 layers), not checked.
        if FLAGS.dtype == "float32" and logit_diff > 1e-3:
            raise RuntimeError(
                f"Converted HF model disagrees: max logit diff {logit_diff}."
            )
        hf_recommend(
            hf,
            preprocessor,
            trie,
            peer_prompts[: FLAGS.batch_size],
            FLAGS.num_beams,
            FLAGS.batch_size,
            FLAGS.device,
        )
        if FLAGS.device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        hf_tops = hf_recommend(
            hf,
            preprocessor,
            trie,
            peer_prompts,
            FLAGS.num_beams,
            FLAGS.batch_size,
            FLAGS.device,
        )
        if FLAGS.device == "cuda":
            torch.cuda.synchronize()
        hf_time = time.perf_counter() - start
        valid = np.mean(
            [all(i >= 0 for i in row) and len(set(row)) == len(row) for row in hf_tops]
        )
        ours_top = [preprocessor.item_index(r[0]) for r in items[:peer_n]]
        same_top = np.mean([a == b[0] for a, b in zip(ours_top, hf_tops)])
        peer = {
            "time": hf_time,
            "n": peer_n,
            "throughput": peer_n / hf_time,
            "same_top": same_top,
            "valid": valid,
            "logit_diff": logit_diff,
            "versions": f"torch {torch.__version__}, transformers {transformers.__version__}",
            "threads": torch.get_num_threads(),
        }
        print(peer, flush=True)

    params = backbone.count_params()
    command = "python " + " ".join(
        [shlex.quote(a) for a in ["benchmarks/recommend_throughput.py"] + sys.argv[1:]]
    )
    load = os.getloadavg()
    device = "CPU only" if FLAGS.device == "cpu" else "GPU"
    if FLAGS.backend == "jax":
        import jax

        device = f"{device} (JAX devices: {jax.devices()[0].device_kind})"
    lines = [
        "# recommend() throughput vs HF transformers trie-constrained `generate`",
        "",
        f"Command (from the repository root): `{command}`",
        "",
        (
            f"- Backend: {FLAGS.backend} ({report.library_versions()}; code "
            f"{report.code_revision()}); {device}, {os.cpu_count()} "
            f"CPU cores ({platform.processor() or platform.machine()}); load "
            f"average at the report {load[0]:.1f} (the cores are shared)."
        ),
        (
            f"- Decoder: random `LlamaBackbone`, {FLAGS.num_layers} layers, "
            f"hidden {FLAGS.hidden_dim}, {FLAGS.num_heads} heads "
            f"({FLAGS.num_kv_heads} KV), FFN {FLAGS.intermediate_dim}, "
            f"vocabulary {vocabulary_size}: {params / 1e6:.2f}M parameters, "
            f"{FLAGS.dtype}."
        ),
        (
            f"- Catalogue: {FLAGS.num_items} items `item_<id>` ({trie.max_length} "
            f"tokens with the end token, trie of {trie.num_nodes} nodes); prompts "
            f"of {min(lengths)}-{max(lengths)} tokens, batch {FLAGS.batch_size}, "
            f"{FLAGS.num_beams} beams, top {FLAGS.k}, no exclusions (the peer has none)."
        ),
        (
            "- Time: wall clock over all prompts (host-side tokenization included); "
            f"ours best of {FLAGS.repeats} passes, `first call` = one batch "
            "including compilation; the peer one pass after a warm-up batch."
        ),
        "",
        "| implementation | prompts | first call (s) | pass (s) | prompts/s |",
        "|---|---|---|---|---|",
    ]
    for name, n, first_s, best_s in rows:
        lines.append(
            f"| {name} | {n} | {first_s:.1f} | {best_s:.2f} | {n / best_s:.1f} |"
        )
    if peer is not None:
        lines.append(
            f"| HF `LlamaForCausalLM.generate` + `prefix_allowed_tokens_fn` trie "
            f"({peer['versions']}, {FLAGS.device}, {peer['threads']} threads) | "
            f"{peer['n']} | - | {peer['time']:.2f} | {peer['throughput']:.1f} |"
        )
    lines.append("")
    if peer is not None:
        ours = rows[0][1] / rows[0][3]
        lines += [
            (
                f"- **Ratio `recommend()` / HF: "
                f"{ours / peer['throughput']:.1f}x** (target >= 10x)."
            ),
            (
                f"- Same top item as HF on {peer['same_top']:.1%} of "
                f"{peer['n']} prompts; HF returned {FLAGS.num_beams} valid "
                f"distinct items on {peer['valid']:.1%}."
            ),
            (
                "- Converted weights: max |logit difference| ours vs HF on 2 "
                f"prompts = {peer['logit_diff']:.1e}."
            ),
        ]
    lines += notes + [""]
    path = (
        FLAGS.output
        if os.path.isabs(FLAGS.output)
        else os.path.join(REPO, FLAGS.output)
    )
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    app.run(main)
