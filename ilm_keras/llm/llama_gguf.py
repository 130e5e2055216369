"""Convert a Llama-architecture GGUF file into a keras-hub `LlamaBackbone`."""

import numpy as np
from keras_hub.models import LlamaBackbone

from ilm_keras.llm.gguf_tokenizer import bpe_tokenizer_from_gguf

_MISSING = object()


def unpermute_rope_rows(weight, num_heads):
    """Undo llama.cpp's row permutation of a Llama q or k projection.

    llama.cpp applies rotary embeddings to adjacent pairs `(2i, 2i + 1)` of
    each head ("interleaved"), so its converter permutes the rows of the
    q/k weights of models trained with the rotate-half convention (pairs
    `(i, i + head_dim / 2)`), which keras-hub uses. This is the inverse.

    Args:
        weight: array of shape `(num_heads * head_dim, in_features)`.
        num_heads: int. Heads in this projection (key/value heads for k).

    Returns:
        The array with rows in rotate-half order, same shape.
    """
    rows, cols = weight.shape
    return (
        weight.reshape(num_heads, rows // num_heads // 2, 2, cols)
        .swapaxes(1, 2)
        .reshape(rows, cols)
    )


def llama_config_from_gguf(gguf_file):
    """Read `LlamaBackbone` constructor arguments from GGUF metadata.

    Args:
        gguf_file: an open `ilm_keras.llm.gguf_file.GGUFFile` whose
            `general.architecture` is `"llama"`.

    Returns:
        dict of `keras_hub.models.LlamaBackbone` arguments.
    """
    arch = gguf_file.architecture
    path = gguf_file.path

    def meta(key, default=_MISSING):
        if default is _MISSING:
            return gguf_file.metadata(f"{arch}.{key}")
        return gguf_file.metadata(f"{arch}.{key}", default)

    if meta("expert_count", 0):
        raise NotImplementedError(
            f"GGUF file '{path}' is a mixture-of-experts model "
            f"(`{arch}.expert_count` = {meta('expert_count')}); only dense "
            "Llama models are supported."
        )
    hidden_dim = int(meta("embedding_length"))
    num_heads = int(meta("attention.head_count"))
    num_kv_heads = int(meta("attention.head_count_kv", num_heads))
    if hidden_dim % num_heads or num_heads % num_kv_heads:
        raise ValueError(
            f"GGUF file '{path}': hidden size {hidden_dim}, {num_heads} query "
            f"heads and {num_kv_heads} key/value heads are inconsistent."
        )
    head_dim = hidden_dim // num_heads
    for key in ("attention.key_length", "attention.value_length"):
        value = meta(key, head_dim)
        if value != head_dim:
            raise NotImplementedError(
                f"GGUF file '{path}': `{arch}.{key}` = {value} differs from "
                f"hidden size / heads = {head_dim}; keras-hub's LlamaBackbone "
                "needs head_dim = hidden_dim / num_query_heads."
            )
    rope_dim = meta("rope.dimension_count", head_dim)
    if rope_dim != head_dim:
        raise NotImplementedError(
            f"GGUF file '{path}': rotary embedding covers {rope_dim} of "
            f"{head_dim} head dimensions (`{arch}.rope.dimension_count`); "
            "keras-hub's LlamaBackbone rotates the whole head."
        )
    scaling = meta("rope.scaling.type", "none")
    scaling_factor = 1.0
    if scaling == "linear":
        scaling_factor = float(meta("rope.scaling.factor"))
    elif scaling != "none":
        raise NotImplementedError(
            f"GGUF file '{path}': rope scaling type '{scaling}' "
            f"(`{arch}.rope.scaling.type`) is not supported; only 'none' and "
            "'linear' are."
        )
    vocabulary_size = meta("vocab_size", None)
    if vocabulary_size is None:
        vocabulary_size = len(gguf_file.metadata("tokenizer.ggml.tokens"))
    return {
        "vocabulary_size": int(vocabulary_size),
        "num_layers": int(meta("block_count")),
        "num_query_heads": num_heads,
        "hidden_dim": hidden_dim,
        "intermediate_dim": int(meta("feed_forward_length")),
        "num_key_value_heads": num_kv_heads,
        "rope_max_wavelength": float(meta("rope.freq_base", 10000.0)),
        "rope_position_scaling_factor": scaling_factor,
        "layer_norm_epsilon": float(meta("attention.layer_norm_rms_epsilon")),
    }


def _assign(variable, array, tensor_name):
    if tuple(variable.shape) != array.shape:
        raise ValueError(
            f"Tensor '{tensor_name}' converts to shape {array.shape}, but the "
            f"keras-hub variable '{variable.path}' has shape "
            f"{tuple(variable.shape)}."
        )
    variable.assign(array)


def llama_backbone_from_gguf(gguf_file, dtype="float32"):
    """Build a `keras_hub.models.LlamaBackbone` holding a GGUF file's weights.

    Quantized tensors are dequantized to float32, then cast to `dtype`. The
    returned backbone never ties its input and output embeddings: for a
    tied model (no `output.weight` tensor) the output projection is a copy
    of the token embedding. Outputs are the same; the copy is there because
    keras-hub 0.32's `LlamaBackbone.get_config()` omits
    `tie_word_embeddings`, so a tied backbone cannot be reloaded from a
    `.keras` file or a preset.

    Args:
        gguf_file: an open `ilm_keras.llm.gguf_file.GGUFFile` whose
            `general.architecture` is `"llama"`.
        dtype: str. The backbone's dtype policy, e.g. `"float32"` or
            `"bfloat16"`.

    Returns:
        A `keras_hub.models.LlamaBackbone` with dropout 0.
    """
    config = llama_config_from_gguf(gguf_file)
    vocab = config["vocabulary_size"]
    hidden = config["hidden_dim"]
    ffn = config["intermediate_dim"]
    heads = config["num_query_heads"]
    kv_heads = config["num_key_value_heads"]
    head_dim = hidden // heads

    backbone = LlamaBackbone(**config, tie_word_embeddings=False, dtype=dtype)

    embedding = gguf_file.tensor("token_embd.weight", (vocab, hidden))
    if gguf_file.has_tensor("output.weight"):
        output = gguf_file.tensor("output.weight", (vocab, hidden))
    else:
        output = embedding
    _assign(backbone.token_embedding.embeddings, embedding, "token_embd.weight")
    _assign(
        backbone.token_embedding.reverse_embeddings,
        np.ascontiguousarray(output.T),
        "output.weight",
    )
    del embedding, output

    for i, layer in enumerate(backbone.transformer_layers):
        p = f"blk.{i}."

        def read(name, shape):
            return gguf_file.tensor(p + name, shape)

        attention = layer._self_attention_layer
        _assign(
            layer._self_attention_layernorm.scale,
            read("attn_norm.weight", (hidden,)),
            p + "attn_norm.weight",
        )
        q = unpermute_rope_rows(read("attn_q.weight", (hidden, hidden)), heads)
        _assign(
            attention._query_dense.kernel,
            q.T.reshape(hidden, heads, head_dim),
            p + "attn_q.weight",
        )
        kv_rows = kv_heads * head_dim
        k = unpermute_rope_rows(
            read("attn_k.weight", (kv_rows, hidden)), kv_heads
        )
        _assign(
            attention._key_dense.kernel,
            k.T.reshape(hidden, kv_heads, head_dim),
            p + "attn_k.weight",
        )
        v = read("attn_v.weight", (kv_rows, hidden))
        _assign(
            attention._value_dense.kernel,
            v.T.reshape(hidden, kv_heads, head_dim),
            p + "attn_v.weight",
        )
        o = read("attn_output.weight", (hidden, hidden))
        _assign(
            attention._output_dense.kernel,
            o.T.reshape(heads, head_dim, hidden),
            p + "attn_output.weight",
        )
        _assign(
            layer._feedforward_layernorm.scale,
            read("ffn_norm.weight", (hidden,)),
            p + "ffn_norm.weight",
        )
        _assign(
            layer._feedforward_gate_dense.kernel,
            read("ffn_gate.weight", (ffn, hidden)).T,
            p + "ffn_gate.weight",
        )
        _assign(
            layer._feedforward_intermediate_dense.kernel,
            read("ffn_up.weight", (ffn, hidden)).T,
            p + "ffn_up.weight",
        )
        _assign(
            layer._feedforward_output_dense.kernel,
            read("ffn_down.weight", (hidden, ffn)).T,
            p + "ffn_down.weight",
        )
    _assign(
        backbone.layer_norm.scale,
        gguf_file.tensor("output_norm.weight", (hidden,)),
        "output_norm.weight",
    )
    gguf_file.check_all_tensors_used()
    return backbone


def llama_from_gguf(gguf_file, dtype="float32"):
    """Convert a Llama GGUF file to `(LlamaBackbone, GGUFBytePairTokenizer)`.

    Args:
        gguf_file: an open `ilm_keras.llm.gguf_file.GGUFFile`.
        dtype: str. The backbone's dtype policy.

    Returns:
        Tuple `(backbone, tokenizer)`.
    """
    tokenizer = bpe_tokenizer_from_gguf(gguf_file)
    backbone = llama_backbone_from_gguf(gguf_file, dtype=dtype)
    if tokenizer.vocabulary_size() != backbone.vocabulary_size:
        raise ValueError(
            f"GGUF file '{gguf_file.path}': the tokenizer has "
            f"{tokenizer.vocabulary_size()} tokens but the embedding has "
            f"{backbone.vocabulary_size} rows."
        )
    return backbone, tokenizer
