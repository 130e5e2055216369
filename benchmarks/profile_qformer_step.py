"""Where a Q-Former training step spends its time, ours beside HF's.

Times the forward pass, forward + backward, and the optimizer update of our
`QFormer` (JAX, `jax.jit`) and of HF transformers' `Blip2QFormerModel`
(torch eager) at the shape of `benchmarks/throughput.py`, then profiles our
forward + backward with `jax.profiler` and sums the XLA kernels' time by
pass (forward / backward), by kind (matmul / other) and by Q-Former
sub-layer. Last, single kernels at the step's shapes (each projection's
forward, weight-gradient and input-gradient matmul; the attention core) are
timed in JAX and torch side by side, to show which kernels carry the gap.
Writes a markdown report with the command.

    KERAS_BACKEND=jax python benchmarks/profile_qformer_step.py --torch_threads 2
"""

import collections
import glob
import gzip
import json
import os
import platform
import re
import sys
import tempfile
import time

from absl import app
from absl import flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

import throughput  # noqa: E402  (shape flags and the HF peer model)

FLAGS = flags.FLAGS
flags.DEFINE_integer("profile_steps", 5, "Profiled forward + backward steps.")
flags.DEFINE_integer("timing_steps", 20, "Timed steps per measurement.")
flags.DEFINE_integer("top", 12, "Sub-layers listed.")
flags.FLAGS.set_default("output", "benchmarks/results/profile_qformer_step.md")


def _seconds(fn, steps):
    fn()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - start) / steps


def ours():
    import jax
    import keras
    import numpy as np

    qformer = throughput.make_qformer(cross_attention_frequency=1, dropout=0.0)
    batch = throughput._data(np)
    qformer(batch, mode="matching")
    trainable = [v.value for v in qformer.trainable_variables]
    fixed = [v.value for v in qformer.non_trainable_variables]

    def loss(trainable, fixed, batch):
        out, _ = qformer.stateless_call(
            trainable, fixed, batch, mode="matching", training=True)
        q, t = out["query_outputs"], out["text_outputs"]
        return (q * q).mean() + (t * t).mean()

    forward = jax.jit(loss)
    backward = jax.jit(jax.grad(loss))
    optimizer = keras.optimizers.AdamW(1e-4)
    optimizer.build(qformer.trainable_variables)
    opt_vars = [v.value for v in optimizer.variables]
    update = jax.jit(optimizer.stateless_apply)
    grads = backward(trainable, fixed, batch)
    timings = {
        "forward": _seconds(lambda: jax.block_until_ready(
            forward(trainable, fixed, batch)), FLAGS.timing_steps),
        "forward + backward": _seconds(lambda: jax.block_until_ready(
            backward(trainable, fixed, batch)), FLAGS.timing_steps),
        "optimizer update": _seconds(lambda: jax.block_until_ready(
            update(opt_vars, grads, trainable)), FLAGS.timing_steps),
    }
    hlo = backward.lower(trainable, fixed, batch).compile().as_text()
    trace_dir = tempfile.mkdtemp(prefix="qformer_trace_")
    jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
    for _ in range(FLAGS.profile_steps):
        jax.block_until_ready(backward(trainable, fixed, batch))
    jax.profiler.stop_trace()
    return timings, kernel_breakdown(hlo, trace_dir)


def kernel_breakdown(hlo, trace_dir):
    """Sums the trace's XLA kernel durations per pass, kind and sub-layer."""
    ops = {}
    for line in hlo.splitlines():
        match = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = (\S+) ", line)
        if match:
            name = re.search(r'op_name="([^"]*)"', line)
            ops[match.group(1)] = (name.group(1) if name else "?", line)
    path = sorted(glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"),
                            recursive=True))[-1]
    with gzip.open(path) as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    by_kind = collections.Counter()
    by_layer = collections.Counter()
    for event in events:
        if event.get("ph") != "X" or event["name"] not in ops:
            continue
        op_name, line = ops[event["name"]]
        seconds = event["dur"] / 1e6 / FLAGS.profile_steps
        where = "backward" if "transpose(" in op_name else "forward"
        kind = "matmul" if ("ynn" in event["name"] or " dot(" in line) else "other"
        by_kind[(where, kind)] += seconds
        layer = re.sub(r"qformer_layer_\d+", "layer", op_name)
        layer = re.sub(r"jit\(\w+\)/|jvp\(|transpose\(|\)", "", layer)
        by_layer[(where, "/".join(layer.split("/")[:2]))] += seconds
    return by_kind, by_layer


def _matmul_shapes():
    """`(rows, in, out)` of the step's projections, largest first."""
    b, h = FLAGS.batch_size, FLAGS.hidden_dim
    n, t, k = FLAGS.num_query_tokens, FLAGS.text_length, FLAGS.num_cf_tokens
    return [
        ("self-attention QKV", b * (n + t), h, 3 * h),
        ("query FFN in", b * n, h, 4 * h),
        ("query FFN out", b * n, 4 * h, h),
        ("self-attention output", b * (n + t), h, h),
        ("cross-attention KV", b * k, h, 2 * h),
    ]


def kernels():
    """JAX vs torch seconds of single kernels at the step's shapes."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    rng = np.random.default_rng(0)
    rows = []
    for name, m, k, n in _matmul_shapes():
        x, dy = rng.standard_normal((m, k)), rng.standard_normal((m, n))
        w = rng.standard_normal((k, n))
        x, dy, w = (a.astype("float32") for a in (x, dy, w))
        jx, jdy, jw = (jnp.asarray(a) for a in (x, dy, w))
        tx, tdy, tw = (torch.tensor(a) for a in (x, dy, w))
        pairs = {
            "forward x @ W": (jax.jit(lambda x, w: x @ w), (jx, jw),
                              lambda: tx @ tw),
            "weight grad xᵀ @ dy": (jax.jit(lambda x, d: x.T @ d), (jx, jdy),
                                    lambda: tx.T @ tdy),
            "input grad dy @ Wᵀ": (jax.jit(lambda d, w: d @ w.T), (jdy, jw),
                                   lambda: tdy @ tw.T),
        }
        for part, (fn, args, peer) in pairs.items():
            ours_s = _seconds(lambda: fn(*args).block_until_ready(),
                              FLAGS.timing_steps)
            rows.append((f"{name} [{m}x{k}]x[{k}x{n}]", part, ours_s,
                         _seconds(peer, FLAGS.timing_steps), 2 * m * k * n))
    # The attention core of `QFormerAttention` (scores, mask, float32
    # softmax, weighted sum), forward + backward, against the same in torch.
    b, heads = FLAGS.batch_size, FLAGS.num_heads
    t, d = FLAGS.num_query_tokens + FLAGS.text_length, FLAGS.hidden_dim // heads
    q, k, v = (rng.standard_normal((b, t, heads, d)).astype("float32")
               for _ in range(3))
    mask = np.ones((b, t, t), bool)

    def attention(q, k, v, mask):
        scores = jnp.einsum("btnh,bsnh->bnts", q, k)
        scores = jnp.where(mask[:, None], scores, -1e9)
        return jnp.einsum("bnts,bsnh->btnh", jax.nn.softmax(scores, -1), v)

    grad = jax.jit(jax.grad(lambda *a: jnp.sum(attention(*a) ** 2),
                            argnums=(0, 1, 2)))
    args = tuple(jnp.asarray(a) for a in (q, k, v, mask))
    tq, tk, tv = (torch.tensor(a).transpose(1, 2).contiguous().requires_grad_()
                  for a in (q, k, v))
    tmask = torch.tensor(mask)[:, None]

    def peer():
        scores = (tq @ tk.transpose(-1, -2)).masked_fill(~tmask, -1e9)
        (torch.softmax(scores, -1) @ tv).pow(2).sum().backward()

    rows.append((f"attention core [{b}, {t}, {heads}, {d}]", "forward + backward",
                 _seconds(lambda: jax.block_until_ready(grad(*args)),
                          FLAGS.timing_steps),
                 _seconds(peer, FLAGS.timing_steps), 3 * 4 * b * heads * t * t * d))
    return rows


def hf():
    import numpy as np
    import torch

    if FLAGS.torch_threads:
        torch.set_num_threads(FLAGS.torch_threads)
    model = throughput.hf_peer_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    data = throughput._data(np)
    cf = torch.tensor(data["cf_embedding"])
    ids = torch.tensor(data["token_ids"], dtype=torch.long)

    def forward():
        with torch.no_grad():
            model(cf, ids)

    def backward():
        model.zero_grad(set_to_none=True)
        model(cf, ids).backward()

    backward()
    return {
        "forward": _seconds(forward, FLAGS.timing_steps),
        "forward + backward": _seconds(backward, FLAGS.timing_steps),
        "optimizer update": _seconds(optimizer.step, FLAGS.timing_steps),
    }


def main(argv):
    del argv
    import keras

    if keras.backend.backend() != "jax":
        raise SystemExit("The kernel profile reads jax.profiler traces: "
                         "run with KERAS_BACKEND=jax.")
    load_start = os.getloadavg()
    our_times, (by_kind, by_layer) = ours()
    hf_times = hf()
    kernel_rows = kernels()
    b = FLAGS.batch_size
    lines = [
        "# Q-Former training step: where the time goes",
        "",
        "Command: `KERAS_BACKEND=jax python " + " ".join(sys.argv) + "`",
        "",
        f"Machine: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average at start "
        f"{', '.join(f'{x:.1f}' for x in load_start)}. Shape: hidden "
        f"{FLAGS.hidden_dim}, {FLAGS.num_layers} layers, {FLAGS.num_query_tokens} "
        f"queries + {FLAGS.text_length} text tokens, batch {b}, float32.",
        "",
        "| part | ilm_keras (JAX, ms) | HF torch eager (ms) | HF / ours |",
        "|---|---|---|---|",
    ]
    for part in our_times:
        ours_ms, hf_ms = 1e3 * our_times[part], 1e3 * hf_times[part]
        lines.append(f"| {part} | {ours_ms:.1f} | {hf_ms:.1f} | {hf_ms / ours_ms:.2f}x |")
    lines += [
        "",
        f"XLA kernel time per step, summed over kernels (the two CPU threads run "
        f"kernels side by side, so sums can exceed wall time); "
        f"{FLAGS.profile_steps} profiled steps:",
        "",
        "| pass | kind | ms |",
        "|---|---|---|",
    ]
    for (where, kind), seconds in sorted(by_kind.items()):
        lines.append(f"| {where} | {kind} | {1e3 * seconds:.1f} |")
    busy = sum(by_kind.values()) / our_times["forward + backward"]
    lines += [
        "",
        f"Kernel time / wall time of forward + backward: {busy:.2f}: XLA runs "
        "the step's kernels essentially one after another; a large matmul "
        "kernel is itself split over the cores (see its GFLOP/s below).",
    ]
    lines += ["", "Largest sub-layers (all layers summed):", "",
              "| pass | sub-layer | ms |", "|---|---|---|"]
    for (where, layer), seconds in by_layer.most_common(FLAGS.top):
        lines.append(f"| {where} | {layer} | {1e3 * seconds:.1f} |")
    lines += [
        "",
        "Single kernels at the step's shapes, JAX (`jax.jit`, XLA:CPU) and "
        f"torch eager ({FLAGS.torch_threads or 'default'} threads), same run; "
        "ratio > 1: the JAX kernel is faster. The attention core FLOPs count "
        "forward + backward.",
        "",
        "| kernel | part | JAX µs | torch µs | torch / JAX | JAX GFLOP/s |",
        "|---|---|---|---|---|---|",
    ]
    for name, part, ours_s, peer_s, flops in kernel_rows:
        lines.append(
            f"| {name} | {part} | {1e6 * ours_s:.0f} | {1e6 * peer_s:.0f} | "
            f"{peer_s / ours_s:.2f}x | {flops / ours_s / 1e9:.0f} |")
    throughput.write_report(lines, FLAGS.output)


if __name__ == "__main__":
    app.run(main)
