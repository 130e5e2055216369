"""End-to-end experiments: CF -> phase 1 -> LLM pretraining -> phase 2 -> test.

- `PipelineConfig`: sizes and schedules of every phase.
- `pipeline`: one function per step (`prepare_split`, `train_cf`,
  `pretrain_qformer`, `pretrain_llm`, `build_phase2`, `train_phase2`,
  `recommendation_metrics`, `test_metrics`, `cf_retrieval_metrics`).
- `run_synthetic`: all steps on the built-in synthetic data (the quickstart).
- `run_openp5_cell`: one cell of the paper's Tables 3-4 on an OpenP5 dataset,
  resumable, writing JSON + markdown.
"""

from ilm_keras.experiments.pipeline import VARIANT_NAMES
from ilm_keras.experiments.pipeline import VARIANTS
from ilm_keras.experiments.pipeline import PipelineConfig
from ilm_keras.experiments.synthetic import quickstart_config
from ilm_keras.experiments.synthetic import run_synthetic

__all__ = [
    "VARIANTS",
    "VARIANT_NAMES",
    "PipelineConfig",
    "quickstart_config",
    "run_synthetic",
]
