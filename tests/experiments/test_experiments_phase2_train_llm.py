"""`phase2_train_llm` (beyond the paper): the decoder trains in phase 2, in
every variant, each on its own copy. (Without it the LLM stays frozen and
shared: `tests/models/test_item_language_model.py`.)"""

import dataclasses

import numpy as np

from ilm_keras.experiments import quickstart_config
from ilm_keras.experiments import run_synthetic
from ilm_keras.experiments.synthetic import SMALL_DATA


def test_every_variant_trains_its_own_copy_of_the_decoder():
    config = dataclasses.replace(
        quickstart_config(small=True), phase1_steps_per_epoch=2, llm_epochs=1,
        llm_steps_per_epoch=4, phase2_steps_per_epoch=3, max_eval_users=4,
        phase2_train_llm=True,
    )
    results = run_synthetic(config, log=lambda *a: None, **SMALL_DATA)
    pretrained = results["backbone"].get_weights()
    for variant in ("none", "ilm"):
        backbone = results["models"][variant].backbone.llm
        assert backbone is not results["backbone"]
        assert backbone.trainable
        changed = [not np.array_equal(a, b)
                   for a, b in zip(pretrained, backbone.get_weights())]
        assert len(changed) == len(pretrained) and any(changed), variant
    # The two copies trained differently (other inputs: soft tokens or not).
    none, ilm = (results["models"][v].backbone.llm.get_weights()
                 for v in ("none", "ilm"))
    assert any(not np.array_equal(a, b) for a, b in zip(none, ilm))
