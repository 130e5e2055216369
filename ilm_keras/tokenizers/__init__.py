"""Tokenizers of ilm_keras's own models (keras-hub `WordPieceTokenizer`s).

Public API:
    QFormerTokenizer: the Q-Former's text tokenizer (phase 1), with the
        BLIP-2 special tokens (`[DEC]` for item-grounded generation, ...).
    OpenP5Tokenizer: words and digits for OpenP5-style prompts, with item
        ids spelled digit by digit (`item_indexing="random"`) or one token
        per item (`"atomic"`), for the small decoder the OpenP5 experiments
        pretrain.

Both save and load with their models (`.keras` files and keras-hub presets).

Example:
```python
from ilm_keras.tokenizers import OpenP5Tokenizer

tokenizer = OpenP5Tokenizer.from_texts(["a film about ..."], item_ids=["1", "2"])
tokenizer("user_1 watched item_2")
```
"""

from ilm_keras.tokenizers.openp5_tokenizer import OpenP5Tokenizer
from ilm_keras.tokenizers.qformer_tokenizer import QFormerTokenizer

__all__ = ["OpenP5Tokenizer", "QFormerTokenizer"]
