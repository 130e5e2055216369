"""Decoder-pretraining and phase-2 training steps of ilm_keras beside HF
transformers (torch, CPU) at the same size, in the same run.

What the OpenP5 budget of `--config` (default `openp5_cpu`) pays for, step
by step, and what the same step costs in HF `transformers`:

1. Decoder pretraining (text only). Ours: the keras-hub `LlamaBackbone` of
   `make_llama_backbone` (`llm_layers` x `llm_hidden`, `llm_heads` heads,
   FFN 4x, untied output projection), wrapped and compiled exactly as
   `pretrain_backbone` does (logits at every position, AdamW with weight
   decay 0.01, cross-entropy averaged over response tokens, weighted token
   accuracy), trained by `keras.Model.fit`. HF: `LlamaForCausalLM` of the
   same config (layers, width, heads, key/value heads, FFN width,
   vocabulary, RoPE 10000, RMSNorm eps 1e-6, untied head, SDPA attention),
   the same loss and accuracy computed from its logits, `torch.optim.AdamW`
   with the same learning rate and weight decay. Batch `llm_batch_size`.
   A third row times the library's own `pretrain_backbone` on the same
   pairs (tokenization and batching in the loop, as a real run).
2. Phase 2. Ours: `ItemLanguageModel` built as `pipeline.build_phase2`
   builds the `ilm` variant (frozen decoder above, `QFormer` of
   `qformer_config` with `num_query_tokens` soft tokens per mention,
   linear adaptor, CF tables, `user_vectors`) fed its preprocessor's
   `loss_positions=True` batches (logits at response tokens only); AdamW
   with weight decay 0.01. HF: the same frozen `LlamaForCausalLM` fed
   `inputs_embeds` whose soft-token slots hold an HF `Blip2QFormerModel`'s
   query outputs (query path only: learned queries, CF vector -> CF tokens
   + LayerNorm as cross-attention keys, same layers/width/heads/FFN,
   cross-attention every 2nd layer, dropout 0.1; built without the text
   FFNs, which ours freezes as the query path never runs them) through a
   linear adaptor; user vectors folded in from the prompt's items with the
   same closed-form iALS solve when `user_vectors="fold_in"`; logits at
   the same response positions; the same loss. Only encoder + adaptor train on both sides. Batch
   `phase2_batch_size`.

Both sides train on the same token ids (the parent process makes them once):
sequential-recommendation prompts (the 10 seen OpenP5 templates, in turn)
over an ML100K-sized catalogue (`--num_items`, `--num_users`) with
`max_history` items each, atomic item ids (`OpenP5Tokenizer`,
`item_indexing="atomic"`), padded to the longest prompt rounded up to 16:
the width of the long (sequential) batches of an ML100K run, what
`sequence_length_for` gives there (80 text-only, 160 with 4 soft tokens per
mention). Shorter (straightforward) batches cost less on both sides.

Each measured thing runs in its own fresh process, one after another: ours
once per Keras backend (`--backends`; `KERAS_BACKEND` set per process), HF
once; every process is pinned to the same `--threads` cores
(`sched_setaffinity`), torch gets `set_num_threads(--threads)`, TensorFlow
`--threads` intra-op threads, and XLA sizes its pool from those cores. The
HF process runs with `OMP_WAIT_POLICY=PASSIVE` (`--omp_wait_policy`): on a
loaded machine torch's spinning OpenMP workers lose their cores, and its
eager steps were up to ~1.5x slower with the default (a probe, batch 64).
Seconds per step are the median of `--steps` steps after `--warmup` steps
(ours: step ends inside one `fit`, each after fetching the loss; HF: each
step after `loss.item()`). `--torch_compile` also times HF under
`torch.compile` (the whole step). Writes `--output` (markdown).

    nice -n 19 python benchmarks/decoder_step.py
    nice -n 19 python benchmarks/decoder_step.py --smoke   # seconds, tiny
"""

import json
import os
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

import report

from ilm_keras.experiments.configs import config_from_flags
from ilm_keras.experiments.configs import define_config_flags

FLAGS = flags.FLAGS
define_config_flags("openp5_cpu")  # the model shapes and batch sizes
flags.DEFINE_list("backends", ["tensorflow", "jax"], "Keras backends to time ours on.")
flags.DEFINE_integer("warmup", 3, "Untimed steps first (the first compiles).")
flags.DEFINE_integer("steps", 10, "Timed steps; the median is reported.")
flags.DEFINE_integer("threads", 2, "CPU cores every process is pinned to; "
                     "torch threads and TensorFlow intra-op threads.")
flags.DEFINE_integer("num_items", 1682, "Catalogue items (ML100K: 1682).")
flags.DEFINE_integer("num_users", 943, "Users (ML100K: 943).")
flags.DEFINE_integer("num_batches", 4, "Distinct batches, cycled.")
flags.DEFINE_bool("torch_compile", True, "Also time HF under torch.compile.")
flags.DEFINE_string(
    "omp_wait_policy", "PASSIVE",
    "OMP_WAIT_POLICY of the HF process ('': torch's default, spinning). On a "
    "loaded machine spinning OpenMP workers lose their core; PASSIVE gave "
    "torch its fastest steps there.")
flags.DEFINE_bool("smoke", False, "Tiny run: batch 4, 1 + 2 steps, no torch.compile.")
flags.DEFINE_string("output", "benchmarks/results/decoder_step.md", "Markdown results file.")
# Internal: what a child process measures, and where the shared data is.
flags.DEFINE_enum("part", None, ["keras", "hf"], "(internal) child process role.")
flags.DEFINE_string("data", None, "(internal) the batches' .npz file.")
flags.DEFINE_string("result", None, "(internal) the child's JSON output.")

LEARNING_RATE, WEIGHT_DECAY = 1e-3, 0.01


def config():
    """The `PipelineConfig` of `--config` / `--set` (smaller with --smoke)."""
    changes = dict(llm_batch_size=4, phase2_batch_size=4) if FLAGS.smoke else {}
    return config_from_flags(**changes)


def warmup_and_steps():
    return (1, 2) if FLAGS.smoke else (FLAGS.warmup, FLAGS.steps)


# ----------------------------------------------------------------------
# The data (parent process): token ids both sides train on.
# ----------------------------------------------------------------------
def tokenizer_and_ids():
    """The atomic-id `OpenP5Tokenizer` over the catalogue, item and user ids."""
    try:
        from ilm_keras.tokenizers import OpenP5Tokenizer
    except ImportError:  # before the tokenizers package
        from ilm_keras.llm import OpenP5Tokenizer

    item_ids = [str(i) for i in range(1, FLAGS.num_items + 1)]
    user_ids = [str(u) for u in range(1, FLAGS.num_users + 1)]
    tokenizer = OpenP5Tokenizer.from_texts(
        [], item_ids=item_ids, item_indexing="atomic")
    return tokenizer, item_ids, user_ids


def preprocessor(cfg, soft_tokens, sequence_length=512):
    """The preprocessor `build_phase2` makes (`soft_tokens=0`: text only,
    as `pretrain_backbone`'s, which keeps every position)."""
    import ilm_keras

    tokenizer, item_ids, user_ids = tokenizer_and_ids()
    return ilm_keras.ItemLanguageModelPreprocessor(
        tokenizer, item_ids=item_ids, user_ids=user_ids,
        sequence_length=sequence_length, max_mentions=cfg.max_history + 2,
        num_soft_tokens=soft_tokens, loss_positions=soft_tokens > 0)


def prompt_pairs(cfg, count):
    """`count` sequential-recommendation (prompt, response) pairs."""
    import numpy as np
    from ilm_keras.data import RECOMMENDATION_TASKS

    templates = RECOMMENDATION_TASKS["sequential"].seen
    rng = np.random.default_rng(cfg.seed)
    pairs = []
    for k in range(count):
        items = rng.integers(1, FLAGS.num_items + 1, cfg.max_history + 1)
        prompt = templates[k % len(templates)].format(
            user=f"user_{rng.integers(1, FLAGS.num_users + 1)}",
            history=" , ".join(f"item_{i}" for i in items[:-1]))
        pairs.append((prompt, f"item_{items[-1]}"))
    return pairs


def make_batches(cfg, path):
    """Tokenizes the pairs once for both steps; saves them to `path` (.npz).

    Pretraining: `token_ids`, `padding_mask`, `y`, `weight` `[B, S]`.
    Phase 2: the same keys prefixed `p2_`, plus `soft_token_mask`,
    `entity_ids` and `loss_positions`, with `y` / `weight` `[B, R]`.
    Returns `{"pretrain": S, "phase2": S}`."""
    import numpy as np

    rows = FLAGS.num_batches * max(cfg.llm_batch_size, cfg.phase2_batch_size)
    pairs = prompt_pairs(cfg, rows)
    prompts = {"prompts": [p for p, _ in pairs], "responses": [r for _, r in pairs]}
    arrays, widths = {}, {}
    for name, soft, prefix in (("pretrain", 0, ""),
                               ("phase2", cfg.num_query_tokens, "p2_")):
        x, y, weight = preprocessor(cfg, soft)(prompts)
        x = {k: np.asarray(v) for k, v in x.items()}
        width = -(-int(x["padding_mask"].sum(1).max()) // 16) * 16
        widths[name] = width
        if not soft:  # the decoder alone reads only these
            x = {k: x[k] for k in ("token_ids", "padding_mask")}
        for key, value in x.items():
            arrays[prefix + key] = value if key in ("entity_ids", "loss_positions") \
                else value[:, :width]
        arrays[prefix + "y"] = np.asarray(y) if soft else np.asarray(y)[:, :width]
        arrays[prefix + "weight"] = (np.asarray(weight) if soft
                                     else np.asarray(weight)[:, :width])
    arrays["vocabulary_size"] = np.asarray(tokenizer_and_ids()[0].vocabulary_size())
    np.savez(path, **arrays)
    with open(path + ".pairs.json", "w") as f:
        json.dump(pairs, f)
    return widths


def load_batches(prefix):
    """`(x, y, weight)` of the saved batches (`prefix`: "" or "p2_")."""
    import numpy as np

    data = dict(np.load(FLAGS.data))
    data.pop("vocabulary_size")
    x = {k[len(prefix):]: v for k, v in data.items()
         if k.startswith(prefix) and k[len(prefix):] not in ("y", "weight")
         and (prefix or not k.startswith("p2_"))}
    return x, data[prefix + "y"], data[prefix + "weight"]


def cycled(arrays, batch_size, steps):
    """`arrays` repeated to `steps` batches of `batch_size` rows."""
    import numpy as np

    rows = batch_size * steps
    copies = -(-rows // len(next(iter(arrays.values()))))
    return {k: np.concatenate([v] * copies)[:rows] for k, v in arrays.items()}


# ----------------------------------------------------------------------
# Ours (a child process per Keras backend).
# ----------------------------------------------------------------------
def fit_step_seconds(model, x, y, weight, batch_size, fit=None):
    """(median seconds per step after the warmup, first step seconds) of
    one `fit` over `x`; `fit(callbacks)` replaces the plain `fit`."""
    import keras

    warmup, steps = warmup_and_steps()
    marks = []

    class Clock(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            marks.append(time.perf_counter())

        def on_train_batch_end(self, batch, logs=None):
            float(keras.ops.convert_to_numpy(logs["loss"]))  # waits for the step
            marks.append(time.perf_counter())

    if fit is None:
        data = cycled({**x, "__y": y, "__w": weight}, batch_size, warmup + steps)
        y, weight = data.pop("__y"), data.pop("__w")
        keras.Model.fit(model, data, y, sample_weight=weight,
                        batch_size=batch_size, epochs=1, shuffle=False,
                        verbose=0, callbacks=[Clock()])
    else:
        fit([Clock()])
    times = sorted(b - a for a, b in zip(marks[warmup:], marks[warmup + 1:]))
    return times[len(times) // 2], marks[1] - marks[0]


def make_backbone(cfg, vocabulary_size):
    try:
        from ilm_keras.experiments.backbone_pretraining import make_llama_backbone
    except ImportError:  # before the move out of ilm_keras.llm
        from ilm_keras.llm import make_llama_backbone

    return make_llama_backbone(vocabulary_size, num_layers=cfg.llm_layers,
                               hidden_dim=cfg.llm_hidden, num_heads=cfg.llm_heads)


def time_ours_pretraining(cfg):
    """Our decoder-pretraining step: `pretrain_backbone`'s model and compile."""
    import keras

    keras.utils.set_random_seed(cfg.seed)
    tokenizer, _, _ = tokenizer_and_ids()
    backbone = make_backbone(cfg, tokenizer.vocabulary_size())
    inputs = backbone.input
    logits = backbone.token_embedding(backbone(inputs), reverse=True)
    causal_lm = keras.Model(inputs, logits)
    causal_lm.compile(
        optimizer=keras.optimizers.AdamW(LEARNING_RATE, weight_decay=WEIGHT_DECAY),
        loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction="mean_with_sample_weight"),
        weighted_metrics=[keras.metrics.SparseCategoricalAccuracy()])
    x, y, weight = load_batches("")
    seconds = fit_step_seconds(causal_lm, x, y, weight, cfg.llm_batch_size)
    return seconds, backbone.count_params()


def time_ours_pretrain_backbone(cfg):
    """The library's `pretrain_backbone` on the same pairs: tokenization and
    batching (`PromptResponseBatches` through `tf.data`) in the loop."""
    try:
        from ilm_keras.experiments.backbone_pretraining import pretrain_backbone
    except ImportError:
        from ilm_keras.llm import pretrain_backbone

    tokenizer, item_ids, user_ids = tokenizer_and_ids()
    backbone = make_backbone(cfg, tokenizer.vocabulary_size())
    with open(FLAGS.data + ".pairs.json") as f:
        pairs = [tuple(p) for p in json.load(f)]
    warmup, steps = warmup_and_steps()
    fit = lambda callbacks: pretrain_backbone(
        backbone, tokenizer, pairs, item_ids, user_ids, epochs=1,
        batch_size=cfg.llm_batch_size, learning_rate=LEARNING_RATE,
        sequence_length=512, seed=cfg.seed, callbacks=callbacks, verbose=0,
        steps_per_epoch=warmup + steps, length_bucket=cfg.length_bucket,
        length_group=cfg.length_group)
    if len(pairs) < (warmup + steps) * cfg.llm_batch_size:  # one epoch's batches
        pairs *= -(-(warmup + steps) * cfg.llm_batch_size // len(pairs))
    return fit_step_seconds(None, None, None, None, None, fit=fit)


def time_ours_phase2(cfg):
    """Our phase-2 step: `ItemLanguageModel` as `build_phase2` makes `ilm`."""
    import keras
    import numpy as np

    import ilm_keras
    from ilm_keras.experiments.pipeline import qformer_config

    keras.utils.set_random_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    item_table = rng.normal(size=(FLAGS.num_items, cfg.cf_dim)).astype("float32")
    user_table = rng.normal(size=(FLAGS.num_users, cfg.cf_dim)).astype("float32")
    tokenizer, _, _ = tokenizer_and_ids()
    model = ilm_keras.ItemLanguageModel(
        backbone=make_backbone(cfg, tokenizer.vocabulary_size()),
        preprocessor=preprocessor(cfg, cfg.num_query_tokens),
        item_encoder="ilm",
        qformer=ilm_keras.QFormer(**qformer_config(item_table, cfg)),
        item_embeddings=item_table, user_embeddings=user_table,
        user_vectors=cfg.user_vectors,
        fold_in_regularization=cfg.cf_regularization,
        fold_in_alpha=cfg.cf_alpha)
    model.compile(optimizer=keras.optimizers.AdamW(
        LEARNING_RATE, weight_decay=WEIGHT_DECAY))
    x, y, weight = load_batches("p2_")
    seconds = fit_step_seconds(model, x, y, weight, cfg.phase2_batch_size)
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    return seconds, trainable


def run_keras_part(cfg):
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
    (pre, pre_first), params = time_ours_pretraining(cfg)
    lib, lib_first = time_ours_pretrain_backbone(cfg)
    (p2, p2_first), trainable = time_ours_phase2(cfg)
    return {"pretrain": [pre, pre_first], "pretrain_backbone": [lib, lib_first],
            "phase2": [p2, p2_first], "decoder_params": params,
            "phase2_trainable": trainable,
            "versions": report.library_versions()}


# ----------------------------------------------------------------------
# HF transformers (torch), a child process.
# ----------------------------------------------------------------------
def hf_llama(cfg, vocabulary_size, max_length):
    """`LlamaForCausalLM` of the keras-hub `LlamaBackbone`'s config."""
    from transformers import LlamaConfig
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(
        vocab_size=vocabulary_size, hidden_size=cfg.llm_hidden,
        intermediate_size=4 * cfg.llm_hidden,
        num_hidden_layers=cfg.llm_layers, num_attention_heads=cfg.llm_heads,
        num_key_value_heads=cfg.llm_heads, hidden_act="silu",
        max_position_embeddings=max_length, rms_norm_eps=1e-6,
        rope_theta=10000.0, tie_word_embeddings=False,
        attention_dropout=0.0, attention_bias=False, mlp_bias=False,
        attn_implementation="sdpa"))


def weighted_loss_and_accuracy(logits, y, weight):
    """Cross-entropy averaged over weighted tokens (ours' loss) and the
    weighted token accuracy (ours' metric)."""
    import torch

    loss = torch.nn.functional.cross_entropy(
        logits.flatten(0, 1).float(), y.flatten(), reduction="none")
    loss = (loss * weight.flatten()).sum() / weight.sum()
    with torch.no_grad():
        accuracy = ((logits.argmax(-1) == y).float() * weight).sum() / weight.sum()
    return loss, accuracy


def torch_step_seconds(model, loss_fn, batches, compiled):
    """(median seconds per step after the warmup, first step seconds) of
    AdamW steps of `loss_fn(batch)` over the cycled `batches`."""
    import torch

    warmup, steps = warmup_and_steps()
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)

    def step(batch):
        optimizer.zero_grad(set_to_none=True)
        loss, accuracy = loss_fn(batch)
        loss.backward()
        optimizer.step()
        return loss, accuracy

    if compiled:
        step = torch.compile(step)
    marks = [time.perf_counter()]
    for i in range(warmup + steps):
        loss, _ = step(batches[i % len(batches)])
        loss.item()
        marks.append(time.perf_counter())
    times = sorted(b - a for a, b in zip(marks[warmup:], marks[warmup + 1:]))
    return times[len(times) // 2], marks[1] - marks[0]


def torch_batches(prefix, batch_size):
    """The saved batches as lists of torch tensor dicts."""
    import torch

    x, y, weight = load_batches(prefix)
    x = {**x, "y": y, "weight": weight}
    count = len(y) // batch_size
    as_torch = lambda a: (torch.from_numpy(a).long() if a.dtype.kind in "iu"
                          else torch.from_numpy(a))
    return [{k: as_torch(v[i * batch_size:(i + 1) * batch_size])
             for k, v in x.items()} for i in range(count)]


def time_hf_pretraining(cfg, vocabulary_size, compiled):
    import torch

    torch.manual_seed(cfg.seed)
    batches = torch_batches("", cfg.llm_batch_size)
    model = hf_llama(cfg, vocabulary_size, batches[0]["token_ids"].shape[1])
    model.train()

    def loss_fn(batch):
        logits = model(input_ids=batch["token_ids"],
                       attention_mask=batch["padding_mask"].long()).logits
        return weighted_loss_and_accuracy(logits, batch["y"], batch["weight"])

    params = sum(p.numel() for p in model.parameters())
    return torch_step_seconds(model, loss_fn, batches, compiled), params


class HFPhase2:
    """Builds the torch phase-2 peer (a `torch.nn.Module` subclass is made
    inside `make`, so that importing this script needs no torch)."""

    @staticmethod
    def make(cfg, vocabulary_size, max_length):
        import numpy as np
        import torch
        from transformers import Blip2QFormerConfig
        from transformers import Blip2QFormerModel

        h, n = cfg.qformer_hidden, cfg.num_query_tokens
        rng = np.random.default_rng(cfg.seed)
        item_table = rng.normal(size=(FLAGS.num_items, cfg.cf_dim)).astype("float32")
        user_table = rng.normal(size=(FLAGS.num_users, cfg.cf_dim)).astype("float32")
        qformer_config = Blip2QFormerConfig(
            hidden_size=h, num_hidden_layers=cfg.qformer_layers,
            num_attention_heads=cfg.qformer_heads, intermediate_size=4 * h,
            hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
            layer_norm_eps=1e-12, cross_attention_frequency=2,
            encoder_hidden_size=h, use_qformer_text_input=False)

        class Peer(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.llm = hf_llama(cfg, vocabulary_size, max_length)
                self.llm.requires_grad_(False)  # frozen, as ours
                self.register_buffer("cf_table", torch.from_numpy(
                    np.concatenate([item_table, user_table])))
                self.queries = torch.nn.Parameter(0.02 * torch.randn(1, n, h))
                self.cf_projection = torch.nn.Linear(cfg.cf_dim, cfg.num_cf_tokens * h)
                self.cf_norm = torch.nn.LayerNorm(h, eps=1e-12)
                self.qformer = Blip2QFormerModel(qformer_config)  # no text FFN
                self.adaptor = torch.nn.Linear(h, cfg.llm_hidden)

            def mention_vectors(self, entity_ids):
                """`ItemSoftTokens.mention_vectors`, with the fold-in."""
                cf = self.cf_table[entity_ids.clamp(0, len(self.cf_table) - 1)]
                if cfg.user_vectors != "fold_in":
                    return cf
                table = self.cf_table[:FLAGS.num_items]
                mentioned = torch.cumprod((entity_ids >= 0).long(), 1).bool()
                rows = torch.where(mentioned & (entity_ids < FLAGS.num_items),
                                   entity_ids, -1)
                valid = (rows >= 0).float()
                ys = table[rows.clamp(min=0)] * valid[..., None]
                same = (rows[:, :, None] == rows[:, None, :]).float()
                same = same * valid[:, :, None] * valid[:, None, :]
                counts = same.sum(-1).clamp(min=1.0)
                rhs_weight = (1.0 / counts + cfg.cf_alpha) * valid
                gram = table.T @ table + cfg.cf_regularization * torch.eye(cfg.cf_dim)
                lhs = gram[None] + cfg.cf_alpha * torch.einsum("bmk,bml->bkl", ys, ys)
                rhs = torch.einsum("bm,bmk->bk", rhs_weight, ys)
                users = torch.linalg.solve(lhs, rhs[..., None])[..., 0]
                is_user = (entity_ids >= FLAGS.num_items)[..., None]
                return torch.where(is_user, users[:, None, :], cf)

            def soft_tokens(self, cf):
                """CF vectors `[R, d]` -> `[R, N, llm_hidden]`."""
                kv = self.cf_norm(self.cf_projection(cf).view(len(cf), -1, h))
                out = self.qformer(query_embeds=self.queries.expand(len(cf), -1, -1),
                                   query_length=n, encoder_hidden_states=kv)
                return self.adaptor(out.last_hidden_state)

            def forward(self, batch):
                ids, mask = batch["token_ids"], batch["soft_token_mask"].bool()
                b = len(ids)
                cf = self.mention_vectors(batch["entity_ids"]).flatten(0, 1)
                soft = self.soft_tokens(cf).reshape(b, -1, cfg.llm_hidden)
                slot = (torch.cumsum(mask.long(), 1) - 1).clamp(0, soft.shape[1] - 1)
                gathered = torch.gather(
                    soft, 1, slot[..., None].expand(-1, -1, cfg.llm_hidden))
                text = self.llm.get_input_embeddings()(ids)
                embeddings = torch.where(mask[..., None], gathered, text)
                hidden = self.llm.model(
                    inputs_embeds=embeddings,
                    attention_mask=batch["padding_mask"].long()).last_hidden_state
                positions = batch["loss_positions"][..., None].expand(
                    -1, -1, cfg.llm_hidden)
                logits = self.llm.lm_head(torch.gather(hidden, 1, positions))
                return weighted_loss_and_accuracy(logits, batch["y"], batch["weight"])

        return Peer()


def time_hf_phase2(cfg, vocabulary_size, compiled):
    import torch

    torch.manual_seed(cfg.seed)
    batches = torch_batches("p2_", cfg.phase2_batch_size)
    model = HFPhase2.make(cfg, vocabulary_size, batches[0]["token_ids"].shape[1])
    model.train()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return torch_step_seconds(model, model, batches, compiled), trainable


def run_hf_part(cfg):
    import numpy as np
    import torch

    torch.set_num_threads(FLAGS.threads)
    vocabulary_size = int(np.load(FLAGS.data)["vocabulary_size"])
    result = {}
    modes = [False] + ([True] if FLAGS.torch_compile and not FLAGS.smoke else [])
    for compiled in modes:
        tag = "compiled" if compiled else "eager"
        try:
            (s, first), params = time_hf_pretraining(cfg, vocabulary_size, compiled)
            result[f"pretrain_{tag}"] = [s, first]
            result["decoder_params"] = params
            (s, first), trainable = time_hf_phase2(cfg, vocabulary_size, compiled)
            result[f"phase2_{tag}"] = [s, first]
            result["phase2_trainable"] = trainable
        except Exception as e:  # torch.compile may not work on this machine
            if not compiled:
                raise
            result["compile_error"] = f"{type(e).__name__}: {str(e)[:300]}"
    result["versions"] = report.library_versions()
    return result


# ----------------------------------------------------------------------
# The parent process: data, one child per measured thing, the report.
# ----------------------------------------------------------------------
def run_child(part, backend, data, folder):
    """Runs this script as `--part` on `backend`; returns its JSON."""
    result = os.path.join(folder, f"{part}_{backend}.json")
    argv = [f"--config={FLAGS.config}", *(f"--set={s}" for s in FLAGS.set),
            *(f"--{name}={FLAGS[name].value}" for name in (
                "warmup", "steps", "threads", "num_items", "num_users",
                "num_batches", "torch_compile", "smoke"))]
    command = [sys.executable, os.path.abspath(__file__), *argv,
               f"--part={part}", f"--data={data}", f"--result={result}"]
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=os.pathsep.join(
        filter(None, [report.REPO, os.environ.get("PYTHONPATH")])))
    if part == "hf" and FLAGS.omp_wait_policy:
        env["OMP_WAIT_POLICY"] = FLAGS.omp_wait_policy
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True)
    print(f"{part} ({backend}): {time.perf_counter() - start:.0f} s wall")
    with open(result) as f:
        return json.load(f)


def row(name, seconds, first, batch, references):
    """A table row; `references`: the HF s/step this row is divided by."""
    ratios = " | ".join("-" if r is None else f"{seconds / r:.2f}"
                        for r in references)
    return (f"| {name} | {1000 * seconds:.1f} | {batch / seconds:.0f} | "
            f"{ratios} | {first:.1f} |")


def write_results(cfg, widths, ours, hf, wall, load):
    header = ("| what | ms/step (median) | examples/s | s/step ÷ HF eager's "
              "(> 1: slower) | s/step ÷ HF torch.compile's | first step s "
              "(compiles) |")
    rule = "|---|---|---|---|---|---|"
    lines = report.report_header(
        "Decoder pretraining and phase-2 steps: ilm_keras beside HF "
        "transformers (CPU, same run)")
    lines[2] = (f"Command: `nice -n 19 python {' '.join(sys.argv)}` (one fresh "
                "process per Keras backend, then one for HF)")
    versions = sorted({v for r in [*ours.values(), hf] for v in
                       r["versions"].split(", ")})
    lines[4] = (f"Machine: {report.cpu_description()}, every process pinned to "
                f"{FLAGS.threads} cores; load average at the end "
                f"{', '.join(f'{x:.1f}' for x in load)} (the machine is shared: "
                f"compare ratios, not absolute times); {', '.join(versions)}; "
                f"code {report.code_revision()}; wall time {wall:.0f} s")
    warmup, steps = warmup_and_steps()
    lines += [
        f"Config `{FLAGS.config}`" + "".join(f" --set {s}" for s in FLAGS.set)
        + f": decoder {cfg.llm_layers} layers x {cfg.llm_hidden}, "
        f"{cfg.llm_heads} heads (kv {cfg.llm_heads}), FFN {4 * cfg.llm_hidden}, "
        f"vocabulary {hf['vocabulary_size']:,} (atomic `OpenP5Tokenizer`, "
        f"{FLAGS.num_items:,} items); Q-Former {cfg.qformer_layers} layers x "
        f"{cfg.qformer_hidden}, {cfg.qformer_heads} heads, {cfg.num_query_tokens}"
        f" queries, {cfg.num_cf_tokens} CF tokens; {cfg.max_history} history "
        f"items + 1 user per prompt (max_mentions {cfg.max_history + 2}), user "
        f"vectors `{cfg.user_vectors}`. Threads: torch.set_num_threads("
        f"{FLAGS.threads}), TensorFlow intra-op {FLAGS.threads}, XLA from the "
        f"{FLAGS.threads} pinned cores; HF process OMP_WAIT_POLICY="
        f"{FLAGS.omp_wait_policy or 'torch default'}. Median of {steps} steps after {warmup} "
        "warm-up steps; float32; AdamW (lr 1e-3, weight decay 0.01) on both "
        "sides.",
        "",
        f"## Decoder pretraining (text only): batch {cfg.llm_batch_size}, "
        f"sequence {widths['pretrain']}, logits at every position, loss on "
        f"response tokens; {hf['decoder_params']:,} parameters (HF) / "
        f"{next(iter(ours.values()))['decoder_params']:,} (ours)",
        "", header, rule,
    ]
    eager = hf["pretrain_eager"][0]
    compiled = hf.get("pretrain_compiled", [None])[0]
    for backend, r in ours.items():
        lines.append(row(f"ilm_keras {backend}: `pretrain_backbone`'s model, "
                         "`fit` on token ids", *r["pretrain"],
                         cfg.llm_batch_size, [eager, compiled]))
        lines.append(row(f"ilm_keras {backend}: `pretrain_backbone` itself "
                         "(tokenizing in the loop)", *r["pretrain_backbone"],
                         cfg.llm_batch_size, [eager, compiled]))
    lines.append(row("HF `LlamaForCausalLM`, eager", *hf["pretrain_eager"],
                     cfg.llm_batch_size, [None, compiled]))
    if "pretrain_compiled" in hf:
        lines.append(row("HF `LlamaForCausalLM`, `torch.compile`",
                         *hf["pretrain_compiled"], cfg.llm_batch_size, [eager, None]))
    lines += [
        "",
        f"## Phase 2 (frozen decoder, Q-Former + linear adaptor train): batch "
        f"{cfg.phase2_batch_size}, sequence {widths['phase2']} "
        f"({cfg.num_query_tokens} soft tokens per mention), logits at response "
        f"positions; {next(iter(ours.values()))['phase2_trainable']:,} "
        f"trainable (ours) / {hf['phase2_trainable']:,} (HF)",
        "", header, rule,
    ]
    eager = hf["phase2_eager"][0]
    compiled = hf.get("phase2_compiled", [None])[0]
    for backend, r in ours.items():
        lines.append(row(f"ilm_keras {backend}: `ItemLanguageModel` "
                         "(`build_phase2`'s `ilm`)", *r["phase2"],
                         cfg.phase2_batch_size, [eager, compiled]))
    lines.append(row("HF peer, eager: frozen `LlamaForCausalLM` on "
                     "`inputs_embeds` + `Blip2QFormerModel` + linear adaptor",
                     *hf["phase2_eager"], cfg.phase2_batch_size, [None, compiled]))
    if "phase2_compiled" in hf:
        lines.append(row("HF peer, `torch.compile`", *hf["phase2_compiled"],
                         cfg.phase2_batch_size, [eager, None]))
    if "compile_error" in hf:
        lines += ["", f"`torch.compile` failed: {hf['compile_error']}"]
    lines += ["", "Written by `benchmarks/decoder_step.py`; its docstring says "
              "what each side runs and why they are like for like.", ""]
    report.write_report(lines, FLAGS.output)


def main(argv):
    del argv
    if FLAGS.threads and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:FLAGS.threads])
    cfg = config()
    if FLAGS.part:
        result = run_keras_part(cfg) if FLAGS.part == "keras" else run_hf_part(cfg)
        with open(FLAGS.result, "w") as f:
            json.dump(result, f)
        return
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        data = os.path.join(folder, "batches.npz")
        widths = make_batches(cfg, data)
        print(f"sequence widths: {widths}")
        ours = {b: run_child("keras", b, data, folder) for b in FLAGS.backends}
        hf = run_child("hf", "jax", data, folder)  # Keras idle there
    hf["vocabulary_size"] = tokenizer_and_ids()[0].vocabulary_size()
    write_results(cfg, widths, ours, hf, time.perf_counter() - start,
                  os.getloadavg())


if __name__ == "__main__":
    app.run(main)
