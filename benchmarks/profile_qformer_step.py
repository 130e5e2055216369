"""Where a Q-Former training step spends its time, ours beside HF's.

Times the forward pass, forward + backward, and the optimizer update of our
`QFormer` (JAX, `jax.jit`) and of HF transformers' `Blip2QFormerModel`
(torch eager) at the shape of `benchmarks/throughput.py`, then profiles our
forward + backward with `jax.profiler` and sums the XLA kernels' time by
pass (forward / backward), by kind (matmul / other) and by Q-Former
sub-layer. Last, single kernels at the step's shapes (the main projections'
forward, weight-gradient and input-gradient matmuls; the attention core) are
timed in JAX and torch side by side, to show which kernels carry the gap.
Writes a markdown report with the command.

On a GPU (`--device cuda`, JAX on its GPU), kernels are the device's
(attributed to XLA ops by the trace's `hlo_op`), the report adds how busy
the device was and the MFU given `--peak_tflops`, and torch syncs before
every clock read.

    KERAS_BACKEND=jax python benchmarks/profile_qformer_step.py --torch_threads 2
    KERAS_BACKEND=jax python benchmarks/profile_qformer_step.py --device cuda \
      --dtype bfloat16 --batch_size 256 --hidden_dim 768 --num_layers 8 \
      --num_heads 12 --peak_tflops 989
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

import report  # noqa: E402
import throughput  # noqa: E402  (shape flags and the HF peer model)

FLAGS = flags.FLAGS
flags.DEFINE_integer("profile_steps", 5, "Profiled forward + backward steps.")
flags.DEFINE_integer("timing_steps", 20, "Timed steps per measurement.")
flags.DEFINE_integer("top", 12, "Sub-layers listed.")
flags.FLAGS.set_default("output", "benchmarks/results/profile_qformer_step.md")


def _sync():
    """Waits for torch's queued GPU work (no-op on the CPU)."""
    if FLAGS.device != "cpu":
        import torch

        torch.cuda.synchronize()


def _seconds(fn, steps):
    fn()
    _sync()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync()
    return (time.perf_counter() - start) / steps


def _check_jax_device():
    """JAX must run where torch runs, or the comparison means nothing."""
    import jax

    platform_ = jax.default_backend()
    wanted = "cpu" if FLAGS.device == "cpu" else "gpu"
    if platform_ != wanted:
        raise SystemExit(f"--device {FLAGS.device} but JAX runs on "
                         f"{platform_}; install a JAX that sees the device.")
    return jax.devices()[0].device_kind


def ours():
    import jax
    import keras
    import numpy as np

    # bf16: float32 master weights, bf16 compute (throughput.py's default).
    keras.config.set_dtype_policy(
        "mixed_bfloat16" if FLAGS.dtype == "bfloat16" else "float32")
    qformer = throughput.make_qformer(cross_attention_frequency=1, dropout=0.0)
    batch = throughput._data(np)
    qformer(batch, mode="matching")
    trainable = [v.value for v in qformer.trainable_variables]
    fixed = [v.value for v in qformer.non_trainable_variables]

    def loss(trainable, fixed, batch):
        out, _ = qformer.stateless_call(
            trainable, fixed, batch, mode="matching", training=True)
        q = out["query_outputs"].astype("float32")
        t = out["text_outputs"].astype("float32")
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
    keras.config.set_dtype_policy("float32")
    return timings, kernel_breakdown(hlo, trace_dir, FLAGS.device != "cpu")


def kernel_breakdown(hlo, trace_dir, on_gpu=False):
    """Sums the trace's XLA kernel durations per pass, kind and sub-layer.

    On the CPU, kernel events are named after the HLO instruction; on a GPU
    they are the device's kernels (in a `/device:GPU` process), tied to the
    HLO instruction by their `hlo_op` argument. Also returns the busy time
    (the union of the kernels' intervals per profiled step) and a note, set
    when a GPU trace holds no device kernels (then nothing is counted rather
    than host-side launch events).
    """
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
    device_pids = {
        e["pid"] for e in events
        if e.get("ph") == "M" and e.get("name") == "process_name"
        and "/device:GPU" in str(e.get("args", {}).get("name", ""))
    }
    # Kernels run on "Stream" threads; the device process may also hold
    # derived per-op / per-module lines that would count them twice.
    stream_threads = {
        (e["pid"], e["tid"]) for e in events
        if e.get("ph") == "M" and e.get("name") == "thread_name"
        and e.get("pid") in device_pids
        and str(e.get("args", {}).get("name", "")).startswith("Stream")
    }
    by_kind = collections.Counter()
    by_layer = collections.Counter()
    intervals = []
    if on_gpu and not device_pids:
        names = sorted({str(e.get("args", {}).get("name")) for e in events
                        if e.get("name") == "process_name"})
        return by_kind, by_layer, 0.0, (
            "No `/device:GPU` process in the trace, so no device kernels were "
            f"counted; its processes: {', '.join(names)}.")
    for event in events:
        if event.get("ph") != "X":
            continue
        if device_pids:
            if (event.get("pid"), event.get("tid")) not in stream_threads:
                continue
            # Busy time counts every device kernel, attributed or not.
            intervals.append((event["ts"], event["ts"] + event["dur"]))
            op = str(event.get("args", {}).get("hlo_op", ""))
        else:
            op = event["name"]
        if op not in ops:
            continue
        if not device_pids:
            intervals.append((event["ts"], event["ts"] + event["dur"]))
        op_name, line = ops[op]
        seconds = event["dur"] / 1e6 / FLAGS.profile_steps
        where = "backward" if "transpose(" in op_name else "forward"
        kind = "matmul" if (
            "ynn" in op or " dot(" in line or "gemm" in line
            or "gemm" in event["name"].lower()) else "other"
        by_kind[(where, kind)] += seconds
        layer = re.sub(r"qformer_layer_\d+", "layer", op_name)
        layer = re.sub(r"jit\(\w+\)/|jvp\(|transpose\(|\)", "", layer)
        by_layer[(where, "/".join(layer.split("/")[:2]))] += seconds
    busy, end = 0.0, float("-inf")
    for start, stop in sorted(intervals):
        busy += max(0.0, stop - max(start, end))
        end = max(end, stop)
    note = None
    if on_gpu and not by_kind:
        note = (f"{len(intervals)} device kernels on {len(stream_threads)} "
                "stream threads, none tied to an HLO instruction by an "
                "`hlo_op` argument, so the tables below are empty.")
    return by_kind, by_layer, busy / 1e6 / FLAGS.profile_steps, note


def _matmul_shapes():
    """`(rows, in, out)` of the step's projections, largest first."""
    cfg = throughput.shape()  # the model shapes (--config, --set)
    b, h = FLAGS.batch_size, cfg.qformer_hidden
    n, t, k = cfg.num_query_tokens, cfg.qformer_text_length, cfg.num_cf_tokens
    return [
        ("self-attention QKV", b * (n + t), h, 3 * h),
        ("query FFN in", b * n, h, 4 * h),
        ("query FFN out", b * n, 4 * h, h),
        ("self-attention output", b * (n + t), h, h),
        ("cross-attention KV", b * k, h, 2 * h),
    ]


def kernels():
    """JAX vs torch seconds of single kernels at the step's shapes."""
    cfg = throughput.shape()  # the model shapes (--config, --set)
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    device, dtype = torch.device(FLAGS.device), throughput.torch_dtype()
    jdtype = jnp.bfloat16 if FLAGS.dtype == "bfloat16" else jnp.float32
    rng = np.random.default_rng(0)

    def pair(*shapes):
        arrays = [rng.standard_normal(s).astype("float32") for s in shapes]
        return ([jnp.asarray(a, jdtype) for a in arrays],
                [torch.tensor(a, device=device, dtype=dtype) for a in arrays])

    rows = []
    for name, m, k, n in _matmul_shapes():
        (jx, jdy, jw), (tx, tdy, tw) = pair((m, k), (m, n), (k, n))
        cases = {
            "forward x @ W": (jax.jit(lambda x, w: x @ w), (jx, jw),
                              lambda: tx @ tw),
            "weight grad xᵀ @ dy": (jax.jit(lambda x, d: x.T @ d), (jx, jdy),
                                    lambda: tx.T @ tdy),
            "input grad dy @ Wᵀ": (jax.jit(lambda d, w: d @ w.T), (jdy, jw),
                                   lambda: tdy @ tw.T),
        }
        for part, (fn, args, peer) in cases.items():
            ours_s = _seconds(lambda: fn(*args).block_until_ready(),
                              FLAGS.timing_steps)
            rows.append((f"{name} [{m}x{k}]x[{k}x{n}]", part, ours_s,
                         _seconds(peer, FLAGS.timing_steps), 2 * m * k * n))
    # The attention core of `QFormerAttention` (scores, mask, float32
    # softmax, weighted sum), forward + backward, against the same in torch.
    b, heads = FLAGS.batch_size, cfg.qformer_heads
    t, d = cfg.num_query_tokens + cfg.qformer_text_length, cfg.qformer_hidden // heads
    (jq, jk, jv), (tq, tk, tv) = pair(*[(b, t, heads, d)] * 3)
    mask = np.ones((b, t, t), bool)

    def attention(q, k, v, mask):
        scores = jnp.einsum("btnh,bsnh->bnts", q, k).astype(jnp.float32)
        scores = jnp.where(mask[:, None], scores, -1e9)
        probabilities = jax.nn.softmax(scores, -1).astype(v.dtype)
        return jnp.einsum("bnts,bsnh->btnh", probabilities, v)

    grad = jax.jit(jax.grad(
        lambda *a: jnp.sum(attention(*a).astype(jnp.float32) ** 2),
        argnums=(0, 1, 2)))
    args = (jq, jk, jv, jnp.asarray(mask))
    tq, tk, tv = (a.transpose(1, 2).contiguous().requires_grad_()
                  for a in (tq, tk, tv))
    tmask = torch.tensor(mask, device=device)[:, None]

    def peer():
        scores = (tq @ tk.transpose(-1, -2)).float().masked_fill(~tmask, -1e9)
        out = torch.softmax(scores, -1).to(dtype) @ tv
        out.float().pow(2).sum().backward()

    rows.append((f"attention core [{b}, {t}, {heads}, {d}]", "forward + backward",
                 _seconds(lambda: jax.block_until_ready(grad(*args)),
                          FLAGS.timing_steps),
                 _seconds(peer, FLAGS.timing_steps), 3 * 4 * b * heads * t * t * d))
    return rows


def hf():
    import torch

    model, optimizer, cf, ids = throughput.hf_peer_setup()

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
    cfg = throughput.shape()  # the model shapes (--config, --set)
    del argv
    import keras

    if keras.backend.backend() != "jax":
        raise SystemExit("The kernel profile reads jax.profiler traces: "
                         "run with KERAS_BACKEND=jax.")
    device_kind = _check_jax_device()
    on_gpu = FLAGS.device != "cpu"
    load_start = os.getloadavg()
    our_times, (by_kind, by_layer, busy_seconds, trace_note) = ours()
    hf_times = hf()
    kernel_rows = kernels()
    b = FLAGS.batch_size
    where = (f"{device_kind} (JAX), {os.cpu_count()} host CPUs" if on_gpu
             else f"{platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} CPUs")
    policy = "mixed_bfloat16" if FLAGS.dtype == "bfloat16" else "float32"
    lines = [
        "# Q-Former training step: where the time goes",
        "",
        f"Command: `{report.command_line()}`",
        "",
        f"Machine: {where}; {report.library_versions()}; code "
        f"{report.code_revision()}; load average at start "
        f"{', '.join(f'{x:.1f}' for x in load_start)}. Shape: hidden "
        f"{cfg.qformer_hidden}, {cfg.qformer_layers} layers, {cfg.num_query_tokens} "
        f"queries + {cfg.qformer_text_length} text tokens, batch {b}; ours "
        f"{policy}, torch {FLAGS.dtype}.",
        "",
        "| part | ilm_keras (JAX, ms) | HF torch eager (ms) | HF / ours |",
        "|---|---|---|---|",
    ]
    for part in our_times:
        ours_ms, hf_ms = 1e3 * our_times[part], 1e3 * hf_times[part]
        lines.append(f"| {part} | {ours_ms:.1f} | {hf_ms:.1f} | {hf_ms / ours_ms:.2f}x |")
    flops = b * throughput.qformer_flops_per_example(
        cfg.qformer_hidden, cfg.qformer_layers, cfg.num_query_tokens,
        cfg.qformer_text_length, cfg.num_cf_tokens, 4 * cfg.qformer_hidden)
    achieved = flops / our_times["forward + backward"] / 1e12
    lines += [
        "",
        f"Forward + backward: {achieved:.2f} TFLOP/s"
        + (f", MFU {100 * achieved / FLAGS.peak_tflops:.1f}% of "
           f"{FLAGS.peak_tflops:g} TFLOP/s" if FLAGS.peak_tflops else "")
        + " (ours).",
        "",
        f"XLA kernel time per step, summed over kernels; "
        f"{FLAGS.profile_steps} profiled steps:",
        "",
        "| pass | kind | ms |",
        "|---|---|---|",
    ]
    for (pass_, kind), seconds in sorted(by_kind.items()):
        lines.append(f"| {pass_} | {kind} | {1e3 * seconds:.1f} |")
    wall = our_times["forward + backward"]
    ratio = sum(by_kind.values()) / wall
    if trace_note:
        lines += ["", trace_note]
    if on_gpu and busy_seconds:
        lines += ["", f"The GPU ran kernels {1e3 * busy_seconds:.1f} ms of a "
                  f"{1e3 * wall:.1f} ms step ({100 * busy_seconds / wall:.0f}% "
                  "busy); the rest is launch gaps and host work."]
    elif not on_gpu:
        lines += ["", f"Kernel time / wall time of forward + backward: "
                  f"{ratio:.2f}: XLA runs the step's kernels essentially one "
                  "after another; a large matmul kernel is itself split over "
                  "the cores (see its GFLOP/s below)."]
    lines += ["", "Largest sub-layers (all layers summed):", "",
              "| pass | sub-layer | ms |", "|---|---|---|"]
    for (pass_, layer), seconds in by_layer.most_common(FLAGS.top):
        lines.append(f"| {pass_} | {layer} | {1e3 * seconds:.1f} |")
    peer = ("torch eager on the GPU" if on_gpu else
            f"torch eager ({FLAGS.torch_threads or 'default'} threads)")
    lines += [
        "",
        f"Single kernels at the step's shapes, JAX (`jax.jit`, XLA) and "
        f"{peer}, {FLAGS.dtype}, same run; ratio > 1: the JAX kernel is "
        "faster. The attention core FLOPs count forward + backward.",
        "",
        "| kernel | part | JAX µs | torch µs | torch / JAX | JAX GFLOP/s |",
        "|---|---|---|---|---|---|",
    ]
    for name, part, ours_s, peer_s, flops in kernel_rows:
        lines.append(
            f"| {name} | {part} | {1e6 * ours_s:.0f} | {1e6 * peer_s:.0f} | "
            f"{peer_s / ours_s:.2f}x | {flops / ours_s / 1e9:.0f} |")
    report.write_report(lines, FLAGS.output)


if __name__ == "__main__":
    app.run(main)
