"""Convert a Gemma 3 (text) GGUF file into keras-hub's `Gemma3Backbone`."""

import numpy as np
from keras_hub.models import Gemma3Backbone
from keras_hub.tokenizers import Gemma3Tokenizer

# keras-hub's Gemma3Backbone fixes these (every 6th layer is global; local
# layers use rope base 1e4, global ones 1e6); a file that disagrees cannot
# be represented.
_GLOBAL_ROPE_BASE = 1_000_000.0
_SLIDING_WINDOW_PATTERN = 6

# `tokenizer.ggml.token_type` and SentencePiece's piece types share the
# numbering: 1 normal, 2 unknown, 3 control, 4 user defined, 5 unused,
# 6 byte.
_SP_UNKNOWN = 2
_VISION_TOKENS = ("<img>", "<start_of_image>", "<end_of_image>")

# llama.cpp's Gemma converters store RMSNorm weights as `1 + w`; keras-hub's
# `RMSNormalization` multiplies by `1 + scale`, so it needs `w` back.
_NORM_SHIFT = 1.0


def sentencepiece_proto_from_gguf(gguf_file):
    """Rebuild a serialized SentencePiece BPE model from GGUF metadata.

    GGUF files of SentencePiece models (`tokenizer.ggml.model == "llama"`)
    keep every piece with its score and type; SentencePiece's BPE encoder
    merges by those scores, as llama.cpp's does. The normalizer settings
    are Gemma's (no dummy prefix unless `tokenizer.ggml.add_space_prefix`,
    spaces escaped to `▁`, no whitespace folding, byte fallback).

    Args:
        gguf_file: an open `ilm_keras.llm.gguf_file.GGUFFile`.

    Returns:
        bytes, a serialized `sentencepiece.ModelProto`.
    """
    from sentencepiece import sentencepiece_model_pb2

    path = gguf_file.path
    model = gguf_file.metadata("tokenizer.ggml.model")
    if model != "llama":
        raise NotImplementedError(
            f"GGUF file '{path}' has a '{model}' tokenizer "
            "(`tokenizer.ggml.model`); a SentencePiece ('llama') vocabulary "
            "is needed here."
        )
    tokens = gguf_file.metadata("tokenizer.ggml.tokens")
    scores = gguf_file.metadata("tokenizer.ggml.scores")
    types = gguf_file.metadata("tokenizer.ggml.token_type")
    if not len(tokens) == len(scores) == len(types):
        raise ValueError(
            f"GGUF file '{path}': {len(tokens)} tokens but {len(scores)} "
            f"scores and {len(types)} token types."
        )
    unk_id = gguf_file.metadata("tokenizer.ggml.unknown_token_id")
    proto = sentencepiece_model_pb2.ModelProto()
    for i, (piece, score, kind) in enumerate(zip(tokens, scores, types)):
        if not 1 <= kind <= 6:
            raise ValueError(
                f"GGUF file '{path}': token {i} ({piece!r}) has unknown "
                f"token type {kind}."
            )
        entry = proto.pieces.add()
        entry.piece = piece
        entry.score = float(score)
        entry.type = _SP_UNKNOWN if i == unk_id else kind
    spec = proto.trainer_spec
    spec.model_type = sentencepiece_model_pb2.TrainerSpec.BPE
    spec.vocab_size = len(tokens)
    spec.byte_fallback = True
    spec.unk_id = unk_id
    spec.bos_id = gguf_file.metadata("tokenizer.ggml.bos_token_id")
    spec.eos_id = gguf_file.metadata("tokenizer.ggml.eos_token_id")
    spec.pad_id = gguf_file.metadata("tokenizer.ggml.padding_token_id", -1)
    normalizer = proto.normalizer_spec
    normalizer.name = "identity"
    normalizer.add_dummy_prefix = bool(
        gguf_file.metadata("tokenizer.ggml.add_space_prefix", False)
    )
    normalizer.remove_extra_whitespaces = False
    normalizer.escape_whitespaces = True
    return proto.SerializeToString()


def gemma3_config_from_gguf(gguf_file):
    """Read `Gemma3Backbone` constructor arguments from GGUF metadata.

    Args:
        gguf_file: an open `ilm_keras.llm.gguf_file.GGUFFile` whose
            `general.architecture` is `"gemma3"`.

    Returns:
        dict of `keras_hub.models.Gemma3Backbone` arguments.
    """
    path = gguf_file.path

    def meta(key, *default):
        return gguf_file.metadata(f"gemma3.{key}", *default)

    num_layers = int(meta("block_count"))
    hidden_dim = int(meta("embedding_length"))
    head_dim = int(meta("attention.key_length"))
    value_dim = int(meta("attention.value_length", head_dim))
    if value_dim != head_dim:
        raise NotImplementedError(
            f"GGUF file '{path}': key length {head_dim} and value length "
            f"{value_dim} differ; keras-hub's Gemma3Backbone needs them equal."
        )
    if num_layers == 62:
        # llama.cpp scales Gemma 3 27B's queries by hidden/heads instead of
        # head_dim; keras-hub's Gemma3 decoder block always uses head_dim.
        raise NotImplementedError(
            f"GGUF file '{path}' looks like Gemma 3 27B (62 layers), whose "
            "query scaling keras-hub's Gemma3Backbone does not implement."
        )
    rope_base = float(meta("rope.freq_base", _GLOBAL_ROPE_BASE))
    if rope_base != _GLOBAL_ROPE_BASE:
        raise NotImplementedError(
            f"GGUF file '{path}': `gemma3.rope.freq_base` is {rope_base}; "
            f"keras-hub's Gemma3Backbone fixes it to {_GLOBAL_ROPE_BASE}."
        )
    scaling = meta("rope.scaling.type", "none")
    global_scaling = 1.0
    if scaling == "linear":
        global_scaling = float(meta("rope.scaling.factor"))
    elif scaling != "none":
        raise NotImplementedError(
            f"GGUF file '{path}': rope scaling type '{scaling}' is not "
            "supported; only 'none' and 'linear' are."
        )
    sliding_window = int(meta("attention.sliding_window", 0))
    vocabulary_size = meta("vocab_size", None)
    if vocabulary_size is None:
        vocabulary_size = len(gguf_file.metadata("tokenizer.ggml.tokens"))
    return {
        "vocabulary_size": int(vocabulary_size),
        "image_size": None,
        "num_layers": num_layers,
        "num_query_heads": int(meta("attention.head_count")),
        "num_key_value_heads": int(meta("attention.head_count_kv")),
        "hidden_dim": hidden_dim,
        "intermediate_dim": int(meta("feed_forward_length")),
        "head_dim": head_dim,
        "query_head_dim_normalize": True,
        "use_query_key_norm": True,
        "use_post_ffw_norm": True,
        "use_post_attention_norm": True,
        "attention_logit_soft_cap": meta("attn_logit_softcapping", None),
        "final_logit_soft_cap": meta("final_logit_softcapping", None),
        "use_sliding_window_attention": sliding_window > 0,
        "sliding_window_size": sliding_window if sliding_window > 0 else 1024,
        "local_rope_scaling_factor": 1.0,
        "global_rope_scaling_factor": global_scaling,
        "layer_norm_epsilon": float(meta("attention.layer_norm_rms_epsilon")),
        "vision_encoder": None,
    }


def _assign(variable, array, tensor_name):
    if tuple(variable.shape) != array.shape:
        raise ValueError(
            f"Tensor '{tensor_name}' converts to shape {array.shape}, but the "
            f"keras-hub variable '{variable.path}' has shape "
            f"{tuple(variable.shape)}."
        )
    variable.assign(array)


def gemma3_backbone_from_gguf(gguf_file, dtype="float32"):
    """Build a `keras_hub.models.Gemma3Backbone` from a Gemma 3 GGUF file.

    Norm weights are shifted back by 1 (llama.cpp stores `1 + w`). The q/k
    projections need no reordering (llama.cpp runs Gemma with the same
    rotate-half rotary embedding as keras-hub).

    Args:
        gguf_file: an open `ilm_keras.llm.gguf_file.GGUFFile` whose
            `general.architecture` is `"gemma3"`.
        dtype: str. The backbone's dtype policy.

    Returns:
        A text-only `keras_hub.models.Gemma3Backbone` with dropout 0.
    """
    config = gemma3_config_from_gguf(gguf_file)
    vocab = config["vocabulary_size"]
    hidden = config["hidden_dim"]
    ffn = config["intermediate_dim"]
    heads = config["num_query_heads"]
    kv_heads = config["num_key_value_heads"]
    head_dim = config["head_dim"]
    backbone = Gemma3Backbone(**config, dtype=dtype)

    def norm(name, dim):
        return gguf_file.tensor(name, (dim,)) - _NORM_SHIFT

    _assign(
        backbone.token_embedding.embeddings,
        gguf_file.tensor("token_embd.weight", (vocab, hidden)),
        "token_embd.weight",
    )
    for i, layer in enumerate(backbone.transformer_layers):
        p = f"blk.{i}."
        norms = {
            "attn_norm.weight": layer.pre_attention_norm,
            "post_attention_norm.weight": layer.post_attention_norm,
            "ffn_norm.weight": layer.pre_ffw_norm,
            "post_ffw_norm.weight": layer.post_ffw_norm,
        }
        for name, norm_layer in norms.items():
            _assign(norm_layer.scale, norm(p + name, hidden), p + name)
        attention = layer.attention
        _assign(
            attention.query_norm.scale,
            norm(p + "attn_q_norm.weight", head_dim),
            p + "attn_q_norm.weight",
        )
        _assign(
            attention.key_norm.scale,
            norm(p + "attn_k_norm.weight", head_dim),
            p + "attn_k_norm.weight",
        )
        # (heads * head_dim, hidden) -> (heads, hidden, head_dim).
        for name, dense, n in (
            ("attn_q.weight", attention.query_dense, heads),
            ("attn_k.weight", attention.key_dense, kv_heads),
            ("attn_v.weight", attention.value_dense, kv_heads),
        ):
            w = gguf_file.tensor(p + name, (n * head_dim, hidden))
            kernel = w.reshape(n, head_dim, hidden).transpose(0, 2, 1)
            _assign(dense.kernel, kernel, p + name)
        # (hidden, heads * head_dim) -> (heads, head_dim, hidden).
        w = gguf_file.tensor(
            p + "attn_output.weight", (hidden, heads * head_dim)
        )
        _assign(
            attention.output_dense.kernel,
            w.reshape(hidden, heads, head_dim).transpose(1, 2, 0),
            p + "attn_output.weight",
        )
        for name, dense, shape in (
            ("ffn_gate.weight", layer.gating_ffw, (ffn, hidden)),
            ("ffn_up.weight", layer.gating_ffw_2, (ffn, hidden)),
            ("ffn_down.weight", layer.ffw_linear, (hidden, ffn)),
        ):
            w = gguf_file.tensor(p + name, shape)
            _assign(dense.kernel, np.ascontiguousarray(w.T), p + name)
    _assign(
        backbone.layer_norm.scale,
        norm("output_norm.weight", hidden),
        "output_norm.weight",
    )
    gguf_file.check_all_tensors_used()
    return backbone


def gemma3_from_gguf(gguf_file, dtype="float32"):
    """Convert a Gemma 3 GGUF file to `(Gemma3Backbone, Gemma3Tokenizer)`.

    Args:
        gguf_file: an open `ilm_keras.llm.gguf_file.GGUFFile`.
        dtype: str. The backbone's dtype policy.

    Returns:
        Tuple `(backbone, tokenizer)`.
    """
    tokens = gguf_file.metadata("tokenizer.ggml.tokens")
    expected = {
        "tokenizer.ggml.bos_token_id": "<bos>",
        "tokenizer.ggml.eos_token_id": "<eos>",
        "tokenizer.ggml.padding_token_id": "<pad>",
    }
    for key, piece in expected.items():
        index = gguf_file.metadata(key)
        if tokens[index] != piece:
            raise ValueError(
                f"GGUF file '{gguf_file.path}': `{key}` points at "
                f"{tokens[index]!r}; keras-hub's Gemma3Tokenizer needs "
                f"{piece!r}."
            )
    present = set(tokens)
    tokenizer = Gemma3Tokenizer(
        proto=sentencepiece_proto_from_gguf(gguf_file),
        has_vision_tokens=all(t in present for t in _VISION_TOKENS),
    )
    backbone = gemma3_backbone_from_gguf(gguf_file, dtype=dtype)
    return backbone, tokenizer
