"""One seed, one result: the seeding every pipeline phase starts with.

What reproduces (measured on the quickstart, `examples/quickstart.py`, and
its test-sized version, `tests/experiments/test_experiments_determinism.py`):

- The same code, seed, libraries and machine give bit-identical results on
  TensorFlow and on JAX: CF tables, weights after phase 1, LLM pretraining
  and phase 2, loss curves, metrics, generated text; in one process or in
  two running side by side.
- Another machine may not, because float results depend on the CPU:
  - its instruction set: TensorFlow's oneDNN picks its matmul and softmax
    kernels for the CPU (capping it with `ONEDNN_MAX_CPU_ISA=AVX2` on an
    AVX-512 machine changes the bits of a `[32, 4096] x [4096, 300]`
    weight-gradient matmul and of a softmax, and the Q-Former's weights
    after phase 1), and XLA:CPU compiles JAX's fused ops for it
    (`--xla_cpu_max_isa=AVX2` changes the phase-1 weights);
  - its number of cores: work is split by thread, which changes the order
    of float sums. On JAX, `ops.sum(x, axis=0)` over 4096 rows already
    differs between 1 and 2 cores (`taskset -c 0`), and so do the weights
    after phase 1; `--xla_cpu_multi_thread_eigen=false` does not change
    that. On TensorFlow the phase-1 weights match at 1 and 2 cores and the
    first difference is in LLM pretraining (no single op of its backward
    pass differed when run alone).
  The differences start at about 1e-7 and grow with training; a small
  model's HR@10 after a few hundred steps then moves by as much as between
  seeds (the quickstart's ILM row read 0.283 here and 0.210 on another
  machine). Neither backend offers a portable mode, so a results file holds
  for the CPU it names (`benchmarks/report.py`'s `cpu_description`).
"""

import os
import warnings

import keras


def seed_everything(seed):
    """Seeds every random source and asks for deterministic kernels.

    `run_synthetic` calls it once, before anything is drawn;
    `run_openp5_cell` also at the start of every phase, so that what a phase
    draws does not depend on which earlier phases ran in this process and
    which were loaded from disk (a resumed or second cell).

    - Python's `random`, NumPy's global generator and the backend's global
      seed (`keras.utils.set_random_seed`): weight initialisation, dropout,
      `keras.random` calls without their own `SeedGenerator`.
    - TensorFlow: `tf.config.experimental.enable_op_determinism()`: an op
      with no deterministic kernel raises instead of running (on a GPU:
      scatter, segment reductions, cuDNN backward passes), and `tf.data`
      keeps its element order. It stays on for the rest of the process.
      On a CPU it also swaps the kernels of `BiasAddGrad` and of the
      gather (embedding) gradient, so TensorFlow's numbers differ in the
      last bits from a run without it. While it is on, Keras compiles
      TensorFlow models without XLA whatever `jit_compile` asks
      (`keras.src.trainers.trainer.model_supports_jit`): the pipelines
      trade TensorFlow's XLA speed-up for reproducibility.
    - JAX: XLA:CPU is deterministic as it is. On a GPU, XLA's
      nondeterministic ops (atomics in reductions and scatters) are
      excluded only when `XLA_FLAGS` holds
      `--xla_gpu_deterministic_ops=true` before JAX starts; without it,
      this warns.

    Args:
        seed: int.
    """
    keras.utils.set_random_seed(seed)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    elif backend == "jax":
        import jax

        flags = os.environ.get("XLA_FLAGS", "")
        if (
            jax.default_backend() == "gpu"
            and "--xla_gpu_deterministic_ops=true" not in flags
        ):
            warnings.warn(
                "JAX runs on a GPU without XLA_FLAGS="
                "--xla_gpu_deterministic_ops=true, so reductions and "
                "scatters may sum in a different order on each run; set it "
                "before JAX starts for run-to-run identical results.",
                stacklevel=2,
            )
