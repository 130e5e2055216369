"""Where a Q-Former training step spends its time, ours beside HF's.

Times the forward pass, forward + backward, and the optimizer update of our
`QFormer` (JAX, `jax.jit`) and of HF transformers' `Blip2QFormerModel`
(torch eager) at the shape of `benchmarks/throughput.py`, then profiles our
forward + backward with `jax.profiler` and sums the XLA kernels' time by
pass (forward / backward), by kind (matmul / other) and by Q-Former
sub-layer. Writes a markdown report with the command.

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
        f"Kernel time / wall time of forward + backward: {busy:.2f}, i.e. XLA "
        f"kept {busy:.2f} of the {os.cpu_count()} cores busy on average (torch "
        "splits each matmul over its threads).",
    ]
    lines += ["", "Largest sub-layers (all layers summed):", "",
              "| pass | sub-layer | ms |", "|---|---|---|"]
    for (where, layer), seconds in by_layer.most_common(FLAGS.top):
        lines.append(f"| {where} | {layer} | {1e3 * seconds:.1f} |")
    throughput.write_report(lines, FLAGS.output)


if __name__ == "__main__":
    app.run(main)
