"""How each keras-hub backbone family is run piece by piece.

keras-hub (up to 0.33.0.dev) has no public way to feed input embeddings to a
causal LM backbone: its functional graph starts at `token_ids`. Its own
`CausalLM.call_with_cache` methods (and PaliGemma and BLIP-2) re-compose
the backbone from its attributes `token_embedding`, `transformer_layers`
and `layer_norm`, calling each block with keyword arguments that differ per
family. `SoftTokenDecoder` does the same, through one adapter per family
defined here; this module is the only place in `ilm_keras` that knows what
a family's blocks are called with, and the only one that reads keras-hub
private (underscore) attributes.

Each adapter lists what it relies on:

- `BACKBONE_ATTRIBUTES`: attributes of the backbone it reads;
- `BLOCK_CALL_ARGUMENTS`: keyword arguments of every block's `call` (the
  blocks of Llama, Gemma, Mistral and Qwen are classes keras-hub does not
  export, so their call signatures are not a public API);
- `PRIVATE_ATTRIBUTES`: underscore-named attributes, per owning class
  (only `LlamaAdapter`, for the shared-prompt beam search).

`BackboneAdapter.missing_names()` checks them all on a given backbone, so a
keras-hub release that renames one fails with the name in the message
(`tests/layers/test_backbone_adapters.py`) instead of deep in a traced
function.
"""

import collections
import inspect

import keras_hub
from keras import ops


class BackboneAdapter:
    """Runs one keras-hub causal LM backbone family piece by piece.

    A subclass per family says how to embed tokens, add positions, call a
    block with and without a key/value cache, and lay out that cache; every
    computation is the backbone's own (its layers, called the way its
    functional graph and its `CausalLM.call_with_cache` call them), so the
    results equal `backbone(...)`'s.

    This is a plain Python object: it holds the backbone without tracking it.

    Args:
        backbone: a backbone of one of the classes in `backbone_classes()`.

    Example:
    ```python
    backbone = keras_hub.models.LlamaBackbone(
        vocabulary_size=100, num_layers=2, num_query_heads=2,
        num_key_value_heads=1, hidden_dim=16, intermediate_dim=32,
    )
    adapter = adapter_for(backbone)
    x = adapter.embed_tokens(np.array([[1, 5, 7]]))
    for block in adapter.blocks:
        x = adapter.block(block, x, np.array([[1, 1, 1]]))
    logits = adapter.logits(adapter.final_norm(x))
    ```
    """

    family = None
    BACKBONE_ATTRIBUTES = ("token_embedding", "transformer_layers", "layer_norm")
    # The keywords `block` / `block_with_cache` pass (checked by `check`).
    BLOCK_CALL_ARGUMENTS = (
        "decoder_padding_mask",
        "self_attention_cache",
        "self_attention_cache_update_index",
    )
    PRIVATE_ATTRIBUTES = {}

    def __init__(self, backbone):
        self.backbone = backbone

    @staticmethod
    def backbone_classes():
        """The keras-hub backbone classes this adapter runs (subclasses too)."""
        return ()

    # ------------------------------------------------------------------
    # What the adapter relies on.
    # ------------------------------------------------------------------
    def _private_owners(self):
        """`{class name: [objects]}` whose `PRIVATE_ATTRIBUTES` are read."""
        return {}

    def missing_names(self, include_private=True):
        """Everything this adapter relies on that `self.backbone` lacks.

        Args:
            include_private: also check `PRIVATE_ATTRIBUTES`.

        Returns:
            A list of strings such as `"LlamaBackbone.layer_norm"`,
            `"LlamaTransformerDecoder.call(self_attention_cache=...)"` or
            `"LlamaAttention._key_dense"`; empty when all are there.
        """
        backbone = self.backbone
        missing = [
            f"{type(backbone).__name__}.{name}"
            for name in self.BACKBONE_ATTRIBUTES
            if not hasattr(backbone, name)
        ]
        for block in getattr(backbone, "transformer_layers", []):
            parameters = inspect.signature(block.call).parameters
            missing += [
                f"{type(block).__name__}.call({name}=...)"
                for name in self.BLOCK_CALL_ARGUMENTS
                if name not in parameters
            ]
        if include_private:
            for owner, objects in self._private_owners().items():
                for name in self.PRIVATE_ATTRIBUTES.get(owner, ()):
                    if any(not hasattr(obj, name) for obj in objects):
                        missing.append(f"{owner}.{name}")
        return list(dict.fromkeys(missing))  # unique, in order

    @property
    def supports_shared_prompt_decoding(self):
        """Whether `SoftTokenDecoder.beam_decode_step` can run these blocks
        (only `LlamaAdapter`'s can)."""
        return False

    def check(self):
        """Raises if keras-hub no longer has what this adapter uses.

        Only `BACKBONE_ATTRIBUTES` and `BLOCK_CALL_ARGUMENTS` are required:
        the private attributes serve an optional fast path whose absence
        turns it off (`LlamaAdapter.supports_shared_prompt_decoding`).

        Raises:
            RuntimeError: naming every missing attribute or argument.
        """
        missing = self.missing_names(include_private=False)
        if missing:
            raise RuntimeError(
                f"keras-hub {keras_hub.__version__} changed the "
                f"{type(self.backbone).__name__} that ilm_keras runs from "
                f"embeddings ({type(self).__name__}): missing {missing}. "
                "Install the keras-hub version setup.cfg pins."
            )

    # ------------------------------------------------------------------
    # The pieces, in the order the backbone runs them.
    # ------------------------------------------------------------------
    @property
    def blocks(self):
        """The backbone's transformer blocks, in order."""
        return self.backbone.transformer_layers

    def embed_tokens(self, token_ids):
        """Token embeddings as the backbone computes them, `[B, S, H]`."""
        return self.backbone.token_embedding(token_ids)

    def add_positions(self, x, start_index=0):
        """What the backbone does between the embedding and the first block."""
        return x

    def block(self, layer, x, padding_mask):
        """One block over a full sequence, no cache, dropout off.

        keras-hub's `TransformerDecoder` keywords (GPT-2, the Llama family);
        families whose blocks take others override this."""
        return layer(x, decoder_padding_mask=padding_mask, training=False)

    def block_with_cache(self, layer, x, layer_cache, cache_update_index):
        """One block at positions `cache_update_index...`; `(x, layer_cache)`.

        `TransformerDecoder` keywords, as `block`."""
        return layer(
            x,
            self_attention_cache=layer_cache,
            self_attention_cache_update_index=cache_update_index,
            training=False,
        )

    def final_norm(self, x):
        """The backbone's final normalization."""
        return self.backbone.layer_norm(x)

    def logits(self, hidden_states):
        """Vocabulary logits (the tied/untied output projection)."""
        return self.backbone.token_embedding(hidden_states, reverse=True)

    # ------------------------------------------------------------------
    # The key/value cache: `[B, num_layers, 2, S, kv_heads, head_dim]`.
    # ------------------------------------------------------------------
    @property
    def cache_heads(self):
        """`(kv_heads, head_dim)` of one block's key/value cache."""
        raise NotImplementedError

    def init_cache(self, batch_size, max_length, dtype):
        """An all-zero cache for `max_length` positions."""
        num_heads, head_dim = self.cache_heads
        shape = [batch_size, len(self.blocks), 2, max_length, num_heads]
        return ops.zeros(shape + [head_dim], dtype=dtype)

    def layer_cache(self, cache, index):
        """Block `index`'s part of `cache`."""
        return cache[:, index, ...]

    def join_caches(self, caches):
        """The cache made of the blocks' updated parts."""
        return ops.stack(caches, axis=1)


class GPT2Adapter(BackboneAdapter):
    """`GPT2Backbone`: learned positions after the token embedding; the
    blocks are keras-hub's public `TransformerDecoder`.

    Args:
        backbone: a `keras_hub.models.GPT2Backbone`.
    """

    family = "gpt2"
    BACKBONE_ATTRIBUTES = BackboneAdapter.BACKBONE_ATTRIBUTES + (
        "position_embedding",
        "embeddings_add",
        "embeddings_dropout",
        "num_heads",
        "hidden_dim",
    )

    @staticmethod
    def backbone_classes():
        return (keras_hub.models.GPT2Backbone,)

    def add_positions(self, x, start_index=0):
        backbone = self.backbone
        positions = backbone.position_embedding(x, start_index=start_index)
        x = backbone.embeddings_add((x, positions))
        return backbone.embeddings_dropout(x, training=False)

    @property
    def cache_heads(self):
        backbone = self.backbone
        return backbone.num_heads, backbone.hidden_dim // backbone.num_heads


# The fields of `LlamaAdapter.block_parts`.
LlamaBlockParts = collections.namedtuple(
    "LlamaBlockParts",
    [
        "attention_norm",  # RMS norm before attention
        "query_dense",
        "key_dense",
        "value_dense",
        "output_dense",
        "rotary_embedding",  # RotaryEmbedding; call with `positions=`
        "inv_norm_factor",  # 1 / sqrt(head_dim)
        "num_key_value_groups",  # query heads per key/value head
        "feedforward_norm",
        "feedforward_gate_dense",
        "feedforward_intermediate_dense",
        "feedforward_output_dense",
        "activation",  # of the gate (run in float32)
        "compute_dtype",
    ],
)


class LlamaAdapter(BackboneAdapter):
    """Llama-style backbones: `LlamaBackbone`, `Llama3Backbone`,
    `MistralBackbone`, `QwenBackbone`, `Qwen3Backbone` (blocks called with
    `decoder_padding_mask` / `self_attention_cache` /
    `self_attention_cache_update_index`, graph `token_embedding -> blocks ->
    layer_norm`).

    For the shared-prompt beam search (`SoftTokenDecoder.beam_decode_step`)
    it also hands out the sublayers of a `LlamaTransformerDecoder` block
    (`block_parts`), which keras-hub keeps in private attributes.

    Args:
        backbone: one of the backbones above.
    """

    family = "llama"
    BACKBONE_ATTRIBUTES = BackboneAdapter.BACKBONE_ATTRIBUTES + (
        "num_key_value_heads",
        "num_query_heads",
        "hidden_dim",
    )
    PRIVATE_ATTRIBUTES = {
        "LlamaTransformerDecoder": (
            "_self_attention_layer",
            "_self_attention_layernorm",
            "_feedforward_layernorm",
            "_feedforward_gate_dense",
            "_feedforward_intermediate_dense",
            "_feedforward_output_dense",
            "activation",
        ),
        "LlamaAttention": (
            "_query_dense",
            "_key_dense",
            "_value_dense",
            "_output_dense",
            "_inv_norm_factor",
            "rotary_embedding_layer",
            "num_key_value_groups",
        ),
    }

    @staticmethod
    def backbone_classes():
        return (
            keras_hub.models.LlamaBackbone,  # Also Llama3Backbone (a subclass).
            keras_hub.models.MistralBackbone,
            keras_hub.models.QwenBackbone,
            keras_hub.models.Qwen3Backbone,
        )

    @property
    def cache_heads(self):
        backbone = self.backbone
        # Mistral and Qwen3 may set `head_dim`; Llama and Qwen derive it.
        head_dim = getattr(backbone, "head_dim", None) or (
            backbone.hidden_dim // backbone.num_query_heads
        )
        return backbone.num_key_value_heads, head_dim

    # ------------------------------------------------------------------
    # The shared-prompt beam search (Llama blocks only).
    # ------------------------------------------------------------------
    def _llama_blocks(self):
        """Whether every block is exactly `LlamaTransformerDecoder`."""
        from keras_hub.src.models.llama.llama_decoder import (
            LlamaTransformerDecoder,
        )

        return all(type(layer) is LlamaTransformerDecoder for layer in self.blocks)

    def _private_owners(self):
        if not self._llama_blocks():
            return {}
        return {
            "LlamaTransformerDecoder": list(self.blocks),
            "LlamaAttention": [
                getattr(layer, "_self_attention_layer", None) for layer in self.blocks
            ],
        }

    @property
    def supports_shared_prompt_decoding(self):
        """True when every block is exactly `LlamaTransformerDecoder` (full
        causal attention) and its private sublayers are where this adapter
        reads them; otherwise decoding uses the per-beam cache."""
        return self._llama_blocks() and not self.missing_names()

    def block_parts(self, layer):
        """The sublayers and constants of one `LlamaTransformerDecoder`.

        Args:
            layer: a block of the backbone.

        Returns:
            A `LlamaBlockParts`.
        """
        attention = layer._self_attention_layer
        return LlamaBlockParts(
            attention_norm=layer._self_attention_layernorm,
            query_dense=attention._query_dense,
            key_dense=attention._key_dense,
            value_dense=attention._value_dense,
            output_dense=attention._output_dense,
            rotary_embedding=attention.rotary_embedding_layer,
            inv_norm_factor=attention._inv_norm_factor,
            num_key_value_groups=attention.num_key_value_groups,
            feedforward_norm=layer._feedforward_layernorm,
            feedforward_gate_dense=layer._feedforward_gate_dense,
            feedforward_intermediate_dense=layer._feedforward_intermediate_dense,
            feedforward_output_dense=layer._feedforward_output_dense,
            activation=layer.activation,
            compute_dtype=layer.compute_dtype,
        )


class GemmaAdapter(BackboneAdapter):
    """`GemmaBackbone` (Gemma 1 and 2): token embeddings scaled by
    `sqrt(hidden_dim)`; blocks called with `padding_mask` / `cache` /
    `cache_update_index`.

    Args:
        backbone: a `keras_hub.models.GemmaBackbone`.
    """

    family = "gemma"
    BACKBONE_ATTRIBUTES = BackboneAdapter.BACKBONE_ATTRIBUTES + (
        "hidden_dim",
        "num_key_value_heads",
        "head_dim",
    )
    BLOCK_CALL_ARGUMENTS = ("padding_mask", "cache", "cache_update_index")

    @staticmethod
    def backbone_classes():
        return (keras_hub.models.GemmaBackbone,)

    def embed_tokens(self, token_ids):
        x = self.backbone.token_embedding(token_ids)
        return x * ops.cast(ops.sqrt(self.backbone.hidden_dim), x.dtype)

    def block(self, layer, x, padding_mask):
        return layer(x, padding_mask=padding_mask, training=False)

    def block_with_cache(self, layer, x, layer_cache, cache_update_index):
        return layer(
            x,
            cache=layer_cache,
            cache_update_index=cache_update_index,
            training=False,
        )

    @property
    def cache_heads(self):
        return self.backbone.num_key_value_heads, self.backbone.head_dim


class Gemma3Adapter(GemmaAdapter):
    """`Gemma3Backbone`, text only: as Gemma, blocks also take
    `vision_mask` (None), and the cache is a tuple with one `(key, value)`
    pair of `[B, S, kv_heads, head_dim]` tensors per block.

    Args:
        backbone: a `keras_hub.models.Gemma3Backbone`.
    """

    family = "gemma3"
    BLOCK_CALL_ARGUMENTS = GemmaAdapter.BLOCK_CALL_ARGUMENTS + ("vision_mask",)

    @staticmethod
    def backbone_classes():
        return (keras_hub.models.Gemma3Backbone,)

    def block(self, layer, x, padding_mask):
        return layer(x, padding_mask=padding_mask, vision_mask=None, training=False)

    def init_cache(self, batch_size, max_length, dtype):
        num_heads, head_dim = self.cache_heads
        shape = [batch_size, max_length, num_heads, head_dim]
        return tuple(
            (ops.zeros(shape, dtype=dtype), ops.zeros(shape, dtype=dtype))
            for _ in range(len(self.blocks))
        )

    def layer_cache(self, cache, index):
        return cache[index]

    def join_caches(self, caches):
        return tuple(caches)


# Most specific first: Gemma3Backbone is tested before GemmaBackbone.
ADAPTERS = (Gemma3Adapter, GemmaAdapter, GPT2Adapter, LlamaAdapter)


def adapter_for(backbone):
    """The adapter of `backbone`'s family, or None if none runs it.

    Args:
        backbone: a `keras_hub.models.Backbone`.

    Returns:
        A `BackboneAdapter` around `backbone`, or None.

    Example:
    ```python
    adapter = adapter_for(keras_hub.models.GPT2Backbone(
        vocabulary_size=50, num_layers=1, num_heads=2, hidden_dim=8,
        intermediate_dim=16, max_sequence_length=32))
    adapter.family  # "gpt2"
    ```
    """
    for adapter in ADAPTERS:
        if isinstance(backbone, adapter.backbone_classes()):
            return adapter(backbone)
    return None
