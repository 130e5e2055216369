"""Scaling out with Keras' own distribution APIs.

Public API:
    layout_map(model, device_mesh, model_parallel_dim_name="model",
        data_parallel_dim_name="batch", backbone_layout_map=None)
        -> keras.distribution.LayoutMap: the frozen backbone's keras-hub
        layout map composed with the Q-Former, adaptor and CF table layouts,
        for `keras.distribution.ModelParallel` (JAX).

    process_shard(dataset, num_processes=None, process_id=None)
        -> tf.data.Dataset: this process's rows of every batch, for a
        multi-process `DataParallel(auto_shard_dataset=False)` run.

Data parallelism in one process needs nothing of ours:
`keras.distribution.DataParallel` on JAX, a `tf.distribute` strategy's
`scope()` on TensorFlow (see the README's "Distribution" section for what
is tested).

Example:
```python
mesh = keras.distribution.DeviceMesh(
    (2, 4), ("batch", "model"), keras.distribution.list_devices()
)
layouts = ilm_keras.distribution.layout_map(keras_hub.models.LlamaBackbone, mesh)
keras.distribution.set_distribution(
    keras.distribution.ModelParallel(layout_map=layouts, batch_dim_name="batch")
)
```
"""

from ilm_keras.distribution.layout_map import layout_map
from ilm_keras.distribution.process_shard import process_shard

__all__ = ["layout_map", "process_shard"]
