"""ilm_keras: the Item-Language Model in Keras 3 (JAX and TensorFlow).

Phase 0 makes CF embeddings (`ilm_keras.cf`), phase 1 pretrains a `QFormer`
item encoder with `QFormerPretrainer`, phase 2 trains an `ItemLanguageModel`
over a frozen keras-hub causal LM. Data loaders, splits and prompts live in
`ilm_keras.data`, metrics in `ilm_keras.metrics`.
"""

from ilm_keras import data
from ilm_keras import llm
from ilm_keras.data.phase1_batches import make_phase1_dataset
from ilm_keras.generation.item_trie import ItemTrie
from ilm_keras.layers.item_adaptor import LinearAdaptor
from ilm_keras.layers.item_adaptor import MLPAdaptor
from ilm_keras.models.item_language_model import ItemLanguageModel
from ilm_keras.models.item_language_model_preprocessor import (
    ItemLanguageModelPreprocessor,
)
from ilm_keras.models.qformer import QFormer
from ilm_keras.models.qformer_pretrainer import QFormerPretrainer
from ilm_keras.models.qformer_tokenizer import QFormerTokenizer
from ilm_keras.version import __version__
