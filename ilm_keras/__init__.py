"""ilm_keras: the Item-Language Model in Keras 3 (JAX and TensorFlow).

Phase 0 makes CF embeddings (`ilm_keras.cf`), phase 1 pretrains a `QFormer`
item encoder with `QFormerPretrainer`, phase 2 trains an `ItemLanguageModel`
over a frozen keras-hub causal LM. Data loaders, splits and prompts live in
`ilm_keras.data`, metrics in `ilm_keras.metrics`.

The names below are imported on first use (PEP 562), so that the parts that
need no deep-learning backend stay light: `import ilm_keras.data` (and
`python -m ilm_keras.data stats PATH`) imports neither Keras nor TensorFlow
nor JAX. `from ilm_keras import ItemLanguageModel` and `ilm_keras.QFormer`
work as usual. A Keras class of ours is registered for
`keras.saving.load_model` when its module is imported, so name the class
before loading a saved file: `from ilm_keras import QFormer`, then
`keras.saving.load_model("qformer.keras")` (a bare `import ilm_keras` no
longer imports, and so registers, every class).

Example:
```python
import ilm_keras

qformer = ilm_keras.QFormer(vocabulary_size=400, cf_dim=32, num_layers=2,
                            hidden_dim=64, num_heads=4, intermediate_dim=256,
                            num_query_tokens=8, max_text_length=16)
```
"""

import importlib

from ilm_keras.version import __version__

# Public name -> the module that defines it.
_EXPORTS = {
    "make_phase1_dataset": "ilm_keras.models.phase1_batches",
    "ItemTrie": "ilm_keras.generation.item_trie",
    "CFItemOutputHead": "ilm_keras.layers.cf_item_output_head",
    "LinearAdaptor": "ilm_keras.layers.item_adaptor",
    "MLPAdaptor": "ilm_keras.layers.item_adaptor",
    "ItemLanguageModel": "ilm_keras.models.item_language_model",
    "ItemLanguageModelBackbone": "ilm_keras.models.item_language_model_backbone",
    "ItemLanguageModelPreprocessor": (
        "ilm_keras.models.item_language_model_preprocessor"
    ),
    "QFormer": "ilm_keras.models.qformer",
    "QFormerPretrainer": "ilm_keras.models.qformer_pretrainer",
    "QFormerTokenizer": "ilm_keras.tokenizers.qformer_tokenizer",
}
_SUBPACKAGES = (
    "cf", "chat", "data", "distribution", "experiments", "generation", "layers",
    "llm", "metrics", "models", "serve", "tokenizers", "utils",
)

__all__ = sorted(_EXPORTS) + list(_SUBPACKAGES) + ["__version__"]


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBPACKAGES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module 'ilm_keras' has no attribute {name!r}")
    globals()[name] = value  # Later look-ups skip this function.
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
