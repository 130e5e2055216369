"""Run a frozen keras-hub decoder from input embeddings (soft tokens in)."""

import keras
from keras import ops

from ilm_keras.layers.backbone_adapters import adapter_for

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

    What differs between keras-hub families (how a block is called, the
    cache layout, Gemma's embedding scale, GPT-2's positions) lives in one
    adapter per family (`ilm_keras.layers.backbone_adapters`), the only code
    that reads keras-hub private attributes; the constructor checks that the
    installed keras-hub still has what the adapter uses.

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
        adapter = adapter_for(backbone)
        if adapter is None:
            raise ValueError(
                "SoftTokenDecoder does not know how to run "
                f"`{type(backbone).__name__}` from embeddings. Supported "
                f"backbones: {SUPPORTED_BACKBONES}."
            )
        adapter.check()
        self.backbone = backbone
        self.family = adapter.family
        # Everything that depends on how keras-hub builds this family
        # (block call arguments, cache layout, private sublayers) goes
        # through the adapter (`ilm_keras.layers.backbone_adapters`).
        self._adapter = adapter

    @property
    def hidden_dim(self):
        return self.backbone.hidden_dim

    @property
    def num_layers(self):
        return len(self._adapter.blocks)

    @property
    def max_sequence_length(self):
        """The longest sequence the backbone accepts (`None`: no limit)."""
        return getattr(self.backbone, "max_sequence_length", None)

    def embed_tokens(self, token_ids):
        """Token embeddings as the backbone computes them, `[B, S, H]`."""
        return self._adapter.embed_tokens(token_ids)

    def hidden_states(self, embeddings, padding_mask):
        """The final hidden states for a full sequence, no cache.

        Args:
            embeddings: float tensor `[B, S, H]`.
            padding_mask: int/bool tensor `[B, S]`, 1 for real positions.

        Returns:
            float tensor `[B, S, H]` (after the final norm).
        """
        adapter = self._adapter
        x = adapter.add_positions(embeddings)
        for layer in adapter.blocks:
            x = adapter.block(layer, x, padding_mask)
        return adapter.final_norm(x)

    def logits(self, hidden_states):
        """Vocabulary logits from hidden states, `[..., vocabulary_size]`."""
        return self._adapter.logits(hidden_states)

    def init_cache(self, batch_size, max_length, dtype=None):
        """An all-zero key/value cache for `max_length` positions.

        The structure is the one the backbone's blocks expect: a tensor
        `[B, num_layers, 2, max_length, kv_heads, head_dim]`, or for Gemma3 a
        tuple with one `(key, value)` pair of `[B, max_length, kv_heads,
        head_dim]` tensors per layer.
        """
        dtype = dtype or self.backbone.compute_dtype
        return self._adapter.init_cache(batch_size, max_length, dtype)

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
        adapter = self._adapter
        x = adapter.add_positions(embeddings, start_index=cache_update_index)
        caches = []
        for i, layer in enumerate(adapter.blocks):
            x, layer_cache = adapter.block_with_cache(
                layer, x, adapter.layer_cache(cache, i), cache_update_index
            )
            caches.append(layer_cache)
        return adapter.final_norm(x), adapter.join_caches(caches)

    # ------------------------------------------------------------------
    # Beam decoding over a shared prompt cache (Llama blocks).
    # ------------------------------------------------------------------
    @property
    def supports_shared_prompt_decoding(self):
        """Whether `beam_decode_step` can run this backbone.

        True for `LlamaBackbone` / `Llama3Backbone` (blocks of exactly
        `LlamaTransformerDecoder`, full causal attention) while keras-hub
        keeps their sublayers where `LlamaAdapter.block_parts` reads them.
        Other families decode with a per-beam cache (`call_with_cache`).
        """
        return self._adapter.supports_shared_prompt_decoding

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
        adapter = self._adapter
        layers = adapter.blocks
        cache = self.init_cache(batch_size, width)
        x = embeddings
        caches = []
        for i, layer in enumerate(layers[:-1]):
            x, layer_cache = adapter.block_with_cache(
                layer, x, adapter.layer_cache(cache, i), 0
            )
            caches.append(layer_cache)
        parts = adapter.block_parts(layers[-1])
        h = parts.attention_norm(x)
        key = parts.rotary_embedding(parts.key_dense(h), start_index=0)
        value = parts.value_dense(h)
        caches.append(ops.stack([key, value], axis=1))
        prompt_cache = ops.stack(caches, axis=1)
        last = ops.take_along_axis(x, ops.reshape(lengths - 1, (-1, 1, 1)), axis=1)
        prompt_mask = ops.expand_dims(ops.arange(width), 0) < ops.expand_dims(
            lengths, 1
        )
        rope_positions = ops.cast(ops.reshape(lengths - 1, (-1, 1)), "float32")
        x, _ = self._beam_decode_layer(
            parts,
            last,
            rope_positions,
            key,
            value,
            prompt_mask,
            None,
            append=False,
        )
        return adapter.final_norm(x), prompt_cache

    def _beam_decode_layer(
        self,
        parts,
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
        `parts` are the block's sublayers (`LlamaAdapter.block_parts`).
        Returns `(x, (key, value))`.
        """
        batch_size, num_beams = ops.shape(x)[0], ops.shape(x)[1]
        residual = x
        h = parts.attention_norm(x)
        rope = parts.rotary_embedding
        query = rope(parts.query_dense(h), positions=rope_positions)
        kv_heads, head_dim = ops.shape(prompt_key)[2], ops.shape(prompt_key)[3]
        groups = parts.num_key_value_groups
        query = ops.reshape(query, (batch_size, num_beams, kv_heads, groups, head_dim))
        scale = ops.cast(parts.inv_norm_factor, query.dtype)
        scores = ops.einsum("bwkgd,bpkd->bwkgp", query, prompt_key)
        keep = ops.cast(prompt_mask, "bool")
        key = value = None
        if append:
            key = rope(parts.key_dense(h), positions=rope_positions)
            value = parts.value_dense(h)
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
        x = parts.output_dense(out) + residual
        residual = x
        h = parts.feedforward_norm(x)
        gate = ops.cast(parts.feedforward_gate_dense(h), "float32")
        gate = ops.cast(parts.activation(gate), parts.compute_dtype)
        h = parts.feedforward_intermediate_dense(h)
        x = parts.feedforward_output_dense(ops.multiply(h, gate)) + residual
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
        adapter = self._adapter
        new_cache = []
        for i, layer in enumerate(adapter.blocks):
            x, kv = self._beam_decode_layer(
                adapter.block_parts(layer),
                x,
                rope_positions,
                prompt_cache[:, i, 0],
                prompt_cache[:, i, 1],
                prompt_mask,
                None if beam_cache is None else beam_cache[i],
            )
            new_cache.append(kv)
        return adapter.final_norm(x), tuple(new_cache)


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
