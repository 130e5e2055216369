"""End-to-end experiments: CF -> phase 1 -> LLM pretraining -> phase 2 -> test.

- `PipelineConfig`: sizes and schedules of every phase.
- `pipeline`: one function per step (`prepare_split`, `train_cf`,
  `pretrain_qformer`, `pretrain_llm`, `build_phase2`, `train_phase2`,
  `recommendation_metrics`, `test_metrics`, `cf_retrieval_metrics`).
- `run_synthetic`: all steps on the built-in synthetic data (the quickstart).
- `run_openp5_cell`: one cell of the paper's Tables 3-4 on an OpenP5 dataset,
  resumable, writing JSON + markdown.
- `python -m ilm_keras.experiments`: the command line over the named configs
  (`configs`, `run`).

The names below are imported on first use (PEP 562), so that
`python -m ilm_keras.experiments` can quiet the backends' start-up logs
before Keras, TensorFlow or JAX is imported.
"""

import importlib

# Public name -> the module that defines it.
_EXPORTS = {
    "VARIANTS": "ilm_keras.experiments.pipeline",
    "VARIANT_NAMES": "ilm_keras.experiments.pipeline",
    "PipelineConfig": "ilm_keras.experiments.pipeline",
    "quickstart_config": "ilm_keras.experiments.synthetic",
    "run_synthetic": "ilm_keras.experiments.synthetic",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(
            f"module 'ilm_keras.experiments' has no attribute {name!r}"
        )
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # Later look-ups skip this function.
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
