"""Run a frozen keras-hub decoder from input embeddings (soft tokens in)."""

import keras
import keras_hub
from keras import ops

# Backbones whose decoder blocks take `decoder_padding_mask`,
# `self_attention_cache` and `self_attention_cache_update_index`, and whose
# functional graph is `token_embedding -> blocks -> layer_norm`.
_LLAMA_STYLE = (
    keras_hub.models.LlamaBackbone,  # Also Llama3Backbone (a subclass).
    keras_hub.models.MistralBackbone,
    keras_hub.models.QwenBackbone,
    keras_hub.models.Qwen3Backbone,
)


def _family(backbone):
    # Order matters: test the most specific classes first.
    if isinstance(backbone, keras_hub.models.Gemma3Backbone):
        return "gemma3"
    if isinstance(backbone, keras_hub.models.GemmaBackbone):
        return "gemma"
    if isinstance(backbone, keras_hub.models.GPT2Backbone):
        return "gpt2"
    if isinstance(backbone, _LLAMA_STYLE):
        return "llama"
    return None


SUPPORTED_BACKBONES = (
    "GemmaBackbone (Gemma 1 and 2), Gemma3Backbone (text only), "
    "GPT2Backbone, LlamaBackbone, Llama3Backbone, MistralBackbone, "
    "QwenBackbone, Qwen3Backbone"
)


class SoftTokenDecoder:
    """Runs a keras-hub causal LM backbone from input embeddings.

    keras-hub backbones take token ids; an Item-Language Model has to feed the
    decoder a mix of token embeddings and *soft tokens* (projected item
    vectors). This helper re-composes a backbone's own pieces the way the
    backbone's functional graph and its `CausalLM.call_with_cache` do, with the
    embedding lookup split out:

    1. `embed_tokens(token_ids)`: the backbone's token embedding, including any
       architecture-specific scaling (Gemma multiplies by `sqrt(hidden_dim)`).
       Soft tokens are *not* scaled: they replace the output of this step.
    2. `hidden_states(embeddings, padding_mask)` (no cache) or
       `call_with_cache(embeddings, cache, cache_update_index)`: position
       embeddings (GPT-2), the transformer blocks and the final norm.
    3. `logits(hidden_states)`: the tied/untied output projection.

    With embeddings from `embed_tokens`, `logits(hidden_states(...))` runs
    exactly the operations of `backbone.token_embedding(backbone(x),
    reverse=True)`, so the results are identical.

    Every block is called with `training=False`: the LLM is frozen, so its
    dropout stays off even while the item encoder trains.

    This is a plain Python object, not a Keras layer, on purpose: it holds a
    reference to the backbone without being tracked, so a model that owns the
    backbone saves its weights exactly once.

    Args:
        backbone: a `keras_hub.models.Backbone` of one of the supported
            architectures (see `SUPPORTED_BACKBONES`).

    Example:
    ```python
    backbone = keras_hub.models.LlamaBackbone(
        vocabulary_size=100, num_layers=2, num_query_heads=2,
        num_key_value_heads=1, hidden_dim=16, intermediate_dim=32,
    )
    decoder = SoftTokenDecoder(backbone)
    token_ids = np.array([[1, 5, 7, 0]])
    padding_mask = np.array([[1, 1, 1, 0]])
    x = decoder.embed_tokens(token_ids)
    logits = decoder.logits(decoder.hidden_states(x, padding_mask))
    ```
    """

    def __init__(self, backbone):
        family = _family(backbone)
        if family is None:
            raise ValueError(
                "SoftTokenDecoder does not know how to run "
                f"`{type(backbone).__name__}` from embeddings. Supported "
                f"backbones: {SUPPORTED_BACKBONES}."
            )
        self.backbone = backbone
        self.family = family

    @property
    def hidden_dim(self):
        return self.backbone.hidden_dim

    @property
    def num_layers(self):
        return len(self.backbone.transformer_layers)

    @property
    def max_sequence_length(self):
        """The longest sequence the backbone accepts (`None`: no limit)."""
        return getattr(self.backbone, "max_sequence_length", None)

    def embed_tokens(self, token_ids):
        """Token embeddings as the backbone computes them, `[B, S, H]`."""
        x = self.backbone.token_embedding(token_ids)
        if self.family in ("gemma", "gemma3"):
            x = x * ops.cast(ops.sqrt(self.backbone.hidden_dim), x.dtype)
        return x

    def _add_positions(self, x, start_index=0):
        if self.family != "gpt2":
            return x
        positions = self.backbone.position_embedding(x, start_index=start_index)
        x = self.backbone.embeddings_add((x, positions))
        return self.backbone.embeddings_dropout(x, training=False)

    def hidden_states(self, embeddings, padding_mask):
        """The final hidden states for a full sequence, no cache.

        Args:
            embeddings: float tensor `[B, S, H]`.
            padding_mask: int/bool tensor `[B, S]`, 1 for real positions.

        Returns:
            float tensor `[B, S, H]` (after the final norm).
        """
        x = self._add_positions(embeddings)
        for layer in self.backbone.transformer_layers:
            if self.family == "gemma":
                x = layer(x, padding_mask=padding_mask, training=False)
            elif self.family == "gemma3":
                x = layer(
                    x,
                    padding_mask=padding_mask,
                    vision_mask=None,
                    training=False,
                )
            else:
                x = layer(x, decoder_padding_mask=padding_mask, training=False)
        return self.backbone.layer_norm(x)

    def logits(self, hidden_states):
        """Vocabulary logits from hidden states, `[..., vocabulary_size]`."""
        return self.backbone.token_embedding(hidden_states, reverse=True)

    def init_cache(self, batch_size, max_length, dtype=None):
        """An all-zero key/value cache for `max_length` positions.

        The structure is the one the backbone's blocks expect: a tensor
        `[B, num_layers, 2, max_length, kv_heads, head_dim]`, or for Gemma3 a
        tuple with one `(key, value)` pair of `[B, max_length, kv_heads,
        head_dim]` tensors per layer.
        """
        dtype = dtype or self.backbone.compute_dtype
        backbone = self.backbone
        if self.family == "gpt2":
            num_heads = backbone.num_heads
            head_dim = backbone.hidden_dim // backbone.num_heads
        elif self.family in ("gemma", "gemma3"):
            num_heads = backbone.num_key_value_heads
            head_dim = backbone.head_dim
        else:
            num_heads = backbone.num_key_value_heads
            # Mistral and Qwen3 may set `head_dim`; Llama and Qwen derive it.
            head_dim = getattr(backbone, "head_dim", None) or (
                backbone.hidden_dim // backbone.num_query_heads
            )
        if self.family == "gemma3":
            shape = [batch_size, max_length, num_heads, head_dim]
            return tuple(
                (ops.zeros(shape, dtype=dtype), ops.zeros(shape, dtype=dtype))
                for _ in range(self.num_layers)
            )
        shape = [batch_size, self.num_layers, 2, max_length, num_heads]
        return ops.zeros(shape + [head_dim], dtype=dtype)

    def call_with_cache(self, embeddings, cache, cache_update_index):
        """Run `embeddings` at positions `cache_update_index...` with a cache.

        Args:
            embeddings: float tensor `[B, T, H]` for positions
                `cache_update_index .. cache_update_index + T - 1`.
            cache: the structure returned by `init_cache`.
            cache_update_index: int or scalar int tensor.

        Returns:
            `(hidden_states [B, T, H], updated cache)`.
        """
        x = self._add_positions(embeddings, start_index=cache_update_index)
        caches = []
        for i, layer in enumerate(self.backbone.transformer_layers):
            if self.family == "gemma3":
                x, layer_cache = layer(
                    x,
                    cache=cache[i],
                    cache_update_index=cache_update_index,
                    training=False,
                )
            elif self.family == "gemma":
                x, layer_cache = layer(
                    x,
                    cache=cache[:, i, ...],
                    cache_update_index=cache_update_index,
                    training=False,
                )
            else:
                x, layer_cache = layer(
                    x,
                    self_attention_cache=cache[:, i, ...],
                    self_attention_cache_update_index=cache_update_index,
                    training=False,
                )
            caches.append(layer_cache)
        if self.family == "gemma3":
            cache = tuple(caches)
        else:
            cache = ops.stack(caches, axis=1)
        return self.backbone.layer_norm(x), cache

    # ------------------------------------------------------------------
    # Beam decoding over a shared prompt cache (Llama blocks).
    # ------------------------------------------------------------------
    @property
    def supports_shared_prompt_decoding(self):
        """Whether `beam_decode_step` can run this backbone.

        True for `LlamaBackbone` / `Llama3Backbone` (blocks of exactly
        `LlamaTransformerDecoder`, full causal attention). Other families
        decode with a per-beam cache (`call_with_cache`).
        """
        from keras_hub.src.models.llama.llama_decoder import (
            LlamaTransformerDecoder,
        )

        return self.family == "llama" and all(
            type(layer) is LlamaTransformerDecoder
            for layer in self.backbone.transformer_layers
        )

    def prompt_pass(self, embeddings, lengths):
        """The prompt pass for `beam_decode_step`: cache and last hidden state.

        Runs the blocks over the right-padded prompts with keras-hub's cached
        call, except the last block, of which only the keys and values are
        needed at every position: its attention output and feed-forward run
        at each prompt's last position only (a quarter of a 4-layer
        decoder's prompt compute).

        Args:
            embeddings: float `[B, P, H]`, right-padded prompt embeddings.
            lengths: int `[B]`, real prompt lengths (>= 1).

        Returns:
            `(hidden [B, 1, H]` after the final norm at position
            `lengths - 1`, `prompt_cache [B, num_layers, 2, P, kv_heads,
            head_dim])`.
        """
        batch_size, width = ops.shape(embeddings)[0], ops.shape(embeddings)[1]
        layers = self.backbone.transformer_layers
        cache = self.init_cache(batch_size, width)
        x = embeddings
        caches = []
        for i, layer in enumerate(layers[:-1]):
            x, layer_cache = layer(
                x,
                self_attention_cache=cache[:, i, ...],
                self_attention_cache_update_index=0,
                training=False,
            )
            caches.append(layer_cache)
        layer = layers[-1]
        attention = layer._self_attention_layer
        h = layer._self_attention_layernorm(x)
        key = attention.rotary_embedding_layer(attention._key_dense(h), start_index=0)
        value = attention._value_dense(h)
        caches.append(ops.stack([key, value], axis=1))
        prompt_cache = ops.stack(caches, axis=1)
        last = ops.take_along_axis(x, ops.reshape(lengths - 1, (-1, 1, 1)), axis=1)
        prompt_mask = ops.expand_dims(ops.arange(width), 0) < ops.expand_dims(
            lengths, 1
        )
        rope_positions = ops.cast(ops.reshape(lengths - 1, (-1, 1)), "float32")
        x, _ = self._beam_decode_layer(
            layer,
            last,
            rope_positions,
            key,
            value,
            prompt_mask,
            None,
            append=False,
        )
        return self.backbone.layer_norm(x), prompt_cache

    def _beam_decode_layer(
        self,
        layer,
        x,
        rope_positions,
        prompt_key,
        prompt_value,
        prompt_mask,
        beam_kv,
        append=True,
    ):
        """One `LlamaTransformerDecoder` block for `[B, W, H]` beam tokens.

        Attends to the shared prompt keys/values `[B, P, kv, d]` (masked by
        `prompt_mask`) and, if `append`, to the beams' own keys/values
        (`beam_kv`, `[B, W, t, kv, d]` or None) with this token's appended.
        Returns `(x, (key, value))`.
        """
        attention = layer._self_attention_layer
        batch_size, num_beams = ops.shape(x)[0], ops.shape(x)[1]
        residual = x
        h = layer._self_attention_layernorm(x)
        rope = attention.rotary_embedding_layer
        query = rope(attention._query_dense(h), positions=rope_positions)
        kv_heads, head_dim = ops.shape(prompt_key)[2], ops.shape(prompt_key)[3]
        groups = attention.num_key_value_groups
        query = ops.reshape(query, (batch_size, num_beams, kv_heads, groups, head_dim))
        scale = ops.cast(attention._inv_norm_factor, query.dtype)
        scores = ops.einsum("bwkgd,bpkd->bwkgp", query, prompt_key)
        keep = ops.cast(prompt_mask, "bool")
        key = value = None
        if append:
            key = rope(attention._key_dense(h), positions=rope_positions)
            value = attention._value_dense(h)
            key, value = key[:, :, None], value[:, :, None]  # [B, W, 1, kv, d]
            if beam_kv is not None:
                key = ops.concatenate([beam_kv[0], key], axis=2)
                value = ops.concatenate([beam_kv[1], value], axis=2)
            scores = ops.concatenate(
                [scores, ops.einsum("bwkgd,bwtkd->bwkgt", query, key)], axis=-1
            )
            keep = ops.concatenate(
                [keep, ops.ones((batch_size, ops.shape(key)[2]), "bool")], axis=1
            )
        scores = ops.cast(scores * scale, "float32")
        scores = ops.where(keep[:, None, None, None, :], scores, -1e9)
        probs = ops.cast(ops.softmax(scores, axis=-1), query.dtype)
        num_prompt = ops.shape(prompt_key)[1]
        out = ops.einsum("bwkgp,bpkd->bwkgd", probs[..., :num_prompt], prompt_value)
        if append:
            out = out + ops.einsum("bwkgt,bwtkd->bwkgd", probs[..., num_prompt:], value)
        out = ops.reshape(out, (batch_size, num_beams, kv_heads * groups, head_dim))
        x = attention._output_dense(out) + residual
        residual = x
        h = layer._feedforward_layernorm(x)
        gate = ops.cast(layer._feedforward_gate_dense(h), "float32")
        gate = ops.cast(layer.activation(gate), layer.compute_dtype)
        h = layer._feedforward_intermediate_dense(h)
        x = layer._feedforward_output_dense(ops.multiply(h, gate)) + residual
        return x, (key, value)

    def beam_decode_step(self, x, positions, prompt_cache, prompt_mask, beam_cache):
        """One decoding step for `W` beams per prompt, prompt cache shared.

        Beam search over a long prompt does not need `W` copies of the
        prompt's keys and values: every beam of a prompt attends to the same
        prompt cache `[B, ...]` (computed once, never tiled or reordered) plus
        its own few generated positions (`beam_cache`, `[B, W, t, ...]`, tiny).
        Each prompt has its own length, so rotary positions are per row and
        right padding in the prompt cache is masked out; there is no
        re-feeding of prompt positions. The arithmetic is the block's own
        (`LlamaTransformerDecoder` and `LlamaAttention`, weights shared),
        only the attention reads two caches.

        Args:
            x: float `[B, W, H]`, the embeddings of each beam's last token.
            positions: int `[B]`, the sequence position of that token (the
                same for all beams of a prompt).
            prompt_cache: the cache of `prompt_pass` (or `call_with_cache`),
                `[B, num_layers, 2, P, kv_heads, head_dim]`.
            prompt_mask: bool `[B, P]`, True at real prompt positions.
            beam_cache: None (first step) or a tuple, one `(key, value)` pair
                per layer of `[B, W, t, kv_heads, head_dim]` tensors for the
                beams' earlier generated tokens.

        Returns:
            `(hidden [B, W, H], beam_cache)` with this token's keys and
            values appended (`t + 1` positions).
        """
        batch_size, num_beams = ops.shape(x)[0], ops.shape(x)[1]
        rope_positions = ops.broadcast_to(
            ops.expand_dims(ops.cast(positions, "float32"), 1),
            (batch_size, num_beams),
        )
        new_cache = []
        for i, layer in enumerate(self.backbone.transformer_layers):
            x, kv = self._beam_decode_layer(
                layer,
                x,
                rope_positions,
                prompt_cache[:, i, 0],
                prompt_cache[:, i, 1],
                prompt_mask,
                None if beam_cache is None else beam_cache[i],
            )
            new_cache.append(kv)
        return self.backbone.layer_norm(x), tuple(new_cache)


class _FrozenDecoderLayer(keras.layers.Layer):
    """`SoftTokenDecoder.hidden_states` as a layer of a functional model.

    An internal helper of `ItemLanguageModel`, whose constructor builds it;
    hence no `get_config` and no serialization registration. It is never
    saved on its own: a saved `ItemLanguageModel` is rebuilt from its own
    config, and its constructor makes a new layer around the restored
    backbone (the `decoder` argument, a plain Python object, has no config).

    Calling the backbone's blocks as nodes of a functional model would let
    the model's `training` flag reach them (a functional model passes it to
    every layer whose `call` takes one), turning the frozen LLM's dropout on
    during `fit`. This layer has no `training` argument and calls the blocks
    with `training=False` itself. It holds no weights of its own: the
    backbone's variables are tracked (once) by the model that owns the
    backbone.

    Args:
        decoder: a `SoftTokenDecoder`.
        **kwargs: standard `keras.layers.Layer` arguments.
    """

    def __init__(self, decoder, **kwargs):
        super().__init__(**kwargs)
        object.__setattr__(self, "_decoder", decoder)
        self.built = True

    def call(self, embeddings, padding_mask):
        return self._decoder.hidden_states(embeddings, padding_mask)

    def compute_output_shape(self, embeddings_shape, padding_mask_shape):
        return embeddings_shape
