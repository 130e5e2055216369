"""ItemLanguageModel: CF item encoder + adaptor + a frozen keras-hub LLM."""

import inspect
import math

import keras
import keras_hub
import numpy as np
from keras import ops

from ilm_keras.generation.compiled import compile_model_function
from ilm_keras.generation.constrained_beam_search import (
    constrained_beam_search,
    shared_prompt_beam_search,
)
from ilm_keras.generation.item_trie import ItemTrie
from ilm_keras.models.item_language_model_backbone import ItemLanguageModelBackbone
from ilm_keras.models.item_language_model_preprocessor import (
    ItemLanguageModelPreprocessor,
)
from ilm_keras.utils.runtime_checks import check
from ilm_keras.utils.texts import is_single_text
from ilm_keras.utils.texts import to_python_strings

# The arguments of `ItemLanguageModelBackbone` that `ItemLanguageModel`
# accepts with a bare LLM as `backbone` (a shorthand that builds one).
_BACKBONE_ARGS = tuple(
    name
    for name in inspect.signature(ItemLanguageModelBackbone.__init__).parameters
    if name not in ("self", "llm", "dtype", "kwargs")
)


@keras.saving.register_keras_serializable(package="ilm_keras")
class ItemLanguageModel(keras_hub.models.CausalLM):
    """Item-Language Model (phase 2): items as soft tokens in a frozen LLM.

    Text prompts mention items and users by name (`item_1001`, `user_12`,
    see `ItemLanguageModelPreprocessor`). Each mention's CF vector goes
    through the item encoder, and the encoder's N output vectors are placed
    in the LLM input right after the mention's text tokens (paper §4.4).
    The `ItemLanguageModelBackbone` holds the frozen LLM, the item encoder
    (Q-Former, MLP or none), the adaptor and the CF tables; this task adds
    the LLM's vocabulary head, generation and item ranking. Only the item
    encoder and the adaptor train, with one `fit` on prompt/response pairs
    (loss on response tokens only).

    A trained model is one keras-hub preset: `save_to_preset(dir)` writes
    the backbone (LLM, encoder, CF tables), the preprocessor (tokenizer,
    item and user ids, item catalogue) and their weights, and
    `ItemLanguageModel.from_preset(dir)` loads it anywhere (either backend).

    Generation: `generate()` (keras-hub's, with a KV cache; compile with a
    sampler, `"greedy"` by default) and `recommend()` (top-K catalogue items
    by trie-constrained beam search, or exactly in one forward pass when
    every item is one token; compiled). With no item or user mentioned, the
    logits are exactly the LLM's own. A prompt may end with a mention: its
    soft tokens are then the last prompt positions and generation continues
    after them.

    Training only needs the logits where the loss is counted (the response
    tokens). Inputs may carry `x["loss_positions"]` (int `[B, R]`, positions
    in `0..S-1`); the model then returns logits at those positions only,
    `[B, R, vocabulary_size]`, skipping the LLM's vocabulary projection
    everywhere else (SmolLM2's 49k-token vocabulary: a fifth of the step).
    `ItemLanguageModelPreprocessor.select_loss_positions` turns `(x, y,
    sample_weight)` into that form, and a preprocessor built with
    `loss_positions=True` returns it for prompt/response pairs, so `fit` on
    pairs of strings gets it too. With the default `compile()` loss (the
    mean over weighted tokens) loss and gradients are unchanged; a loss or
    metric that averages over all positions (Keras' default
    `"sum_over_batch_size"`, unweighted `metrics=`) would see `R` positions
    instead of `S`, padding included.

    Args:
        backbone: an `ItemLanguageModelBackbone`. As a shorthand, a bare
            keras-hub LLM backbone together with `ItemLanguageModelBackbone`
            arguments (`item_encoder=`, `qformer=`, `item_embeddings=`, ...)
            as keyword arguments builds one around it.
        preprocessor: an `ItemLanguageModelPreprocessor` or None (then the
            model takes preprocessed inputs and `recommend()` is unavailable).
        **kwargs: standard `keras.Model` arguments, or the shorthand's
            backbone arguments.

    Example:
    ```python
    preprocessor = ItemLanguageModelPreprocessor(
        tokenizer, item_ids=item_ids, user_ids=user_ids, sequence_length=128,
        loss_positions=True,  # `fit` computes logits at response tokens only
    )
    backbone = ItemLanguageModelBackbone(
        llm=llm_backbone,          # frozen keras-hub LLM, e.g. LlamaBackbone
        item_encoder="ilm",
        qformer=pretrained_qformer,
        item_embeddings=item_table,
        user_embeddings=user_table,
    )
    ilm = ItemLanguageModel(backbone=backbone, preprocessor=preprocessor)
    ilm.fit({"prompts": prompts, "responses": responses}, batch_size=32)
    items, scores = ilm.recommend(
        ["user_12 watched item_1001 , item_1009 . Next?"], k=10,
        exclude=[["1001", "1009"]],
    )
    ilm.save_to_preset("my_ilm")
    ilm = ItemLanguageModel.from_preset("my_ilm")
    ```
    """

    backbone_cls = ItemLanguageModelBackbone
    preprocessor_cls = ItemLanguageModelPreprocessor

    def __init__(self, backbone, preprocessor=None, **kwargs):
        backbone_args = {k: kwargs.pop(k) for k in _BACKBONE_ARGS if k in kwargs}
        if not isinstance(backbone, ItemLanguageModelBackbone):
            backbone = ItemLanguageModelBackbone(llm=backbone, **backbone_args)
        elif backbone_args:
            raise TypeError(
                f"Got an ItemLanguageModelBackbone and backbone arguments "
                f"{sorted(backbone_args)}: set those on the backbone."
            )
        if preprocessor is not None and not isinstance(
            preprocessor, ItemLanguageModelPreprocessor
        ):
            raise TypeError(
                "`preprocessor` must be an ItemLanguageModelPreprocessor (or "
                f"None), got {type(preprocessor).__name__}."
            )
        if preprocessor is not None:
            self._check_preprocessor(backbone, preprocessor)

        # === Layers ===
        self.backbone = backbone
        self.preprocessor = preprocessor

        # === Functional Model ===
        inputs = backbone.input
        hidden = backbone(inputs)
        logits = backbone.logits(hidden)
        super().__init__(inputs=inputs, outputs=logits, **kwargs)

        # Not tracked by Keras: plain Python state.
        object.__setattr__(self, "_tries", {})
        object.__setattr__(self, "_recommend_functions", {})
        # Llama backbones decode beams against one shared prompt cache; set
        # False to use the generic per-beam cache (benchmarks compare both).
        object.__setattr__(self, "_shared_prompt_decoding", True)

    @staticmethod
    def _check_preprocessor(backbone, preprocessor):
        """The preprocessor and the backbone must agree on the tables,
        the soft tokens and the length."""
        backbone.check_length(
            preprocessor.sequence_length,
            f"The preprocessor's sequence_length ({preprocessor.sequence_length})",
        )
        if backbone.item_encoder != "none":
            if preprocessor.num_items != backbone.num_items:
                raise ValueError(
                    f"The item CF table has {backbone.num_items} rows but the "
                    f"preprocessor knows {preprocessor.num_items} items "
                    "(`item_ids`)."
                )
            if preprocessor.num_users != backbone.num_users:
                if backbone.num_users == 0:
                    raise ValueError(
                        f"The preprocessor knows {preprocessor.num_users} users "
                        "but the user CF table is missing: pass "
                        "`user_embeddings`."
                    )
                raise ValueError(
                    f"The user CF table has {backbone.num_users} rows but the "
                    f"preprocessor knows {preprocessor.num_users} users "
                    "(`user_ids`)."
                )
        num_soft_tokens = backbone.num_soft_tokens
        if preprocessor.num_soft_tokens is None:
            preprocessor.num_soft_tokens = num_soft_tokens
        elif preprocessor.num_soft_tokens != num_soft_tokens:
            raise ValueError(
                f"The preprocessor lays out {preprocessor.num_soft_tokens} "
                f"soft tokens per mention but the `{backbone.item_encoder}` "
                f"item encoder produces {num_soft_tokens}."
            )

    # The backbone's parts, for convenience.
    @property
    def item_encoder(self):
        """`"ilm"`, `"ilm_rand"`, `"mlp"` or `"none"` (the backbone's)."""
        return self.backbone.item_encoder

    @property
    def num_soft_tokens(self):
        """Soft tokens per mention (the backbone's)."""
        return self.backbone.num_soft_tokens

    @property
    def item_soft_tokens(self):
        """The backbone's `ItemSoftTokens` (None for `none`)."""
        return self.backbone.item_soft_tokens

    @property
    def qformer(self):
        """The Q-Former item encoder (None for `mlp` and `none`)."""
        return self.backbone.qformer

    @property
    def adaptor(self):
        """The adaptor (`LinearAdaptor` or `MLPAdaptor`; None for `none`)."""
        return self.backbone.adaptor

    @property
    def cf_table(self):
        """The CF table variable (items then users; None for `none`)."""
        return self.backbone.cf_table

    def set_cf_tables(self, item_embeddings, user_embeddings=None):
        """Replace the CF tables; see `ItemLanguageModelBackbone.set_cf_tables`."""
        self.backbone.set_cf_tables(item_embeddings, user_embeddings)

    # ------------------------------------------------------------------
    # Forward pass.
    # ------------------------------------------------------------------
    def call(self, inputs, training=None, mask=None, **kwargs):
        """Logits `[B, S, V]`, or `[B, R, V]` at `inputs["loss_positions"]`."""
        if not (isinstance(inputs, dict) and "loss_positions" in inputs):
            return super().call(inputs, training=training, mask=mask, **kwargs)
        inputs = dict(inputs)
        positions = ops.cast(inputs.pop("loss_positions"), "int32")
        hidden = self.backbone(inputs, training=training)
        length = ops.shape(hidden)[1]
        check(
            ops.logical_and(
                ops.all(positions >= 0), ops.all(positions < length)
            ),
            "`loss_positions` must lie in 0..sequence_length-1.",
        )
        hidden = ops.take_along_axis(
            hidden, ops.expand_dims(positions, -1), axis=1
        )
        return self.backbone.logits(hidden)

    def compute_output_spec(self, inputs, training=None, mask=None, **kwargs):
        # The functional graph knows no `loss_positions`: drop them, then
        # take the positions' shape.
        if not (isinstance(inputs, dict) and "loss_positions" in inputs):
            return super().compute_output_spec(
                inputs, training=training, mask=mask, **kwargs
            )
        inputs = dict(inputs)
        positions = inputs.pop("loss_positions")
        logits = super().compute_output_spec(
            inputs, training=training, mask=mask, **kwargs
        )
        return keras.KerasTensor(
            tuple(positions.shape) + (logits.shape[-1],), dtype=logits.dtype
        )

    def input_embeddings(self, inputs, training=None):
        """LLM input embeddings `[B, S, H]` with soft tokens scattered in."""
        return self.backbone.input_embeddings(inputs, training=training)

    def compile(
        self,
        optimizer="auto",
        loss="auto",
        *,
        weighted_metrics="auto",
        sampler="greedy",
        **kwargs,
    ):
        """Like `CausalLM.compile`; the default loss averages over response
        tokens only (`reduction="mean_with_sample_weight"`) and the default
        sampler is greedy."""
        if loss == "auto":
            loss = keras.losses.SparseCategoricalCrossentropy(
                from_logits=True, reduction="mean_with_sample_weight"
            )
        super().compile(
            optimizer=optimizer,
            loss=loss,
            weighted_metrics=weighted_metrics,
            sampler=sampler,
            **kwargs,
        )

    # ------------------------------------------------------------------
    # Generation with a KV cache (keras-hub `generate()`).
    # ------------------------------------------------------------------
    def _next_embeddings(self, prompt_embeddings, padding_mask, tokens, pos):
        """Inputs at position `pos`: the prompt's own (soft tokens
        included) inside the prompt, else the embedding of `tokens`."""
        batch_size = ops.shape(tokens)[0]
        hidden_dim = ops.shape(prompt_embeddings)[-1]
        from_prompt = ops.slice(
            prompt_embeddings, [0, pos, 0], [batch_size, 1, hidden_dim]
        )
        in_prompt = ops.slice(padding_mask, [0, pos], [batch_size, 1])
        from_tokens = self.backbone.decoder.embed_tokens(ops.expand_dims(tokens, 1))
        return ops.where(
            ops.expand_dims(ops.cast(in_prompt, "bool"), -1),
            from_prompt,
            from_tokens,
        )

    def generate_step(self, inputs, stop_token_ids=None):
        """One compiled generation batch (see `keras_hub.models.CausalLM`)."""
        token_ids = inputs["token_ids"]
        if token_ids.shape[1] is not None:
            self.backbone.check_length(
                token_ids.shape[1],
                f"`max_length` ({token_ids.shape[1]}; without a preprocessor, "
                "the width of `token_ids`)",
            )
        padding_mask = ops.cast(inputs["padding_mask"], "bool")
        embeddings = self.input_embeddings(inputs, training=False)
        batch_size, max_length = ops.shape(token_ids)[0], ops.shape(token_ids)[1]
        decoder = self.backbone.decoder
        cache = decoder.init_cache(batch_size, max_length)
        hidden, cache = decoder.call_with_cache(embeddings, cache, 0)
        row_lengths = ops.sum(ops.cast(padding_mask, "int32"), axis=-1)
        index = ops.min(row_lengths)

        def next(prompt, cache, index):
            pos = index - 1
            tokens = ops.slice(prompt, [0, pos], [batch_size, 1])[:, 0]
            x = self._next_embeddings(embeddings, padding_mask, tokens, pos)
            hidden, cache = decoder.call_with_cache(x, cache, pos)
            logits = self.backbone.logits(hidden)
            return logits[:, 0, :], hidden[:, 0, :], cache

        if stop_token_ids is not None:
            # The sampler stops once every row holds a stop token after its
            # prompt, and the positions not yet decoded hold the pad token:
            # where that is also an end token (GPT-2), nothing would be
            # decoded. -1 is no token; each position is decoded before it is
            # read, and one left undecoded follows a stop (masked below).
            token_ids = ops.where(padding_mask, token_ids, -1)
        token_ids = self.sampler(
            next=next,
            prompt=token_ids,
            cache=cache,
            index=index,
            mask=padding_mask,
            stop_token_ids=stop_token_ids,
            hidden_states=hidden,
            model=self,
        )
        if stop_token_ids is not None:
            stop = ops.zeros_like(token_ids, dtype="bool")
            for stop_id in stop_token_ids:
                stop = ops.logical_or(stop, token_ids == stop_id)
            end_locations = ops.cast(
                ops.logical_and(stop, ops.logical_not(padding_mask)), "int32"
            )
            overflow = ops.cumsum(end_locations, axis=-1) - end_locations
            output_mask = ops.logical_not(ops.cast(overflow, "bool"))
        else:
            output_mask = ops.ones_like(token_ids, dtype="bool")
        return {
            "token_ids": token_ids,
            "padding_mask": output_mask,
            "soft_token_mask": ops.cast(
                inputs.get("soft_token_mask", ops.zeros_like(padding_mask)),
                "bool",
            ),
        }

    # ------------------------------------------------------------------
    # Constrained top-K recommendation.
    # ------------------------------------------------------------------
    def item_trie(self, response_prefix=""):
        """The `ItemTrie` of `response_prefix + item_<id>` (+ end token).

        Item strings are tokenized exactly as a training response is: on
        their own, followed by the end token when the preprocessor adds one.
        """
        if self.preprocessor is None:
            raise ValueError("`recommend()` needs a preprocessor.")
        key = (id(self.preprocessor), response_prefix)
        trie = self._tries.get(key)
        if trie is None:
            prep = self.preprocessor
            names = [response_prefix + prep.item_name(i) for i in range(prep.num_items)]
            trie = ItemTrie(prep.response_token_ids(names), names=names)
            self._tries[key] = trie
        return trie

    def _recommend_function(self, num_beams, max_item_length, widths=None):
        """The compiled search; `widths` (from the trie) selects the
        shared-prompt-cache path, available for Llama backbones."""
        key = (num_beams, max_item_length, widths)
        fn = self._recommend_functions.get(key)
        if fn is not None:
            return fn
        decoder = self.backbone.decoder
        if widths is not None:
            fn = compile_model_function(
                self, self._shared_prompt_recommend_step(num_beams, widths)
            )
            self._recommend_functions[key] = fn
            return fn

        def recommend_step(inputs):
            padding_mask = ops.cast(inputs["padding_mask"], "bool")
            embeddings = self.input_embeddings(inputs, training=False)
            batch_size = ops.shape(padding_mask)[0]
            length = ops.shape(padding_mask)[1]
            lengths = ops.sum(ops.cast(padding_mask, "int32"), axis=1)
            cache = decoder.init_cache(batch_size, length + max_item_length)
            _, cache = decoder.call_with_cache(embeddings, cache, 0)
            # Pad to the cache length so that positions past the prompt
            # width read "not in prompt" (slices must stay in bounds).
            embeddings = ops.pad(embeddings, [[0, 0], [0, max_item_length], [0, 0]])
            padding_mask = ops.pad(
                padding_mask,
                [[0, 0], [0, max_item_length]],
                constant_values=False,
            )
            beam_embeddings = ops.repeat(embeddings, num_beams, axis=0)
            beam_mask = ops.repeat(padding_mask, num_beams, axis=0)

            def step_fn(cache, index, tokens):
                pos = index - 1
                x = self._next_embeddings(beam_embeddings, beam_mask, tokens, pos)
                hidden, cache = decoder.call_with_cache(x, cache, pos)
                logits = ops.cast(self.backbone.logits(hidden)[:, 0, :], "float32")
                return ops.log_softmax(logits, axis=-1), cache

            return constrained_beam_search(
                step_fn,
                cache,
                lengths,
                inputs["transitions"],
                inputs["alphabet"],
                inputs["leaf_item"],
                inputs["alive"],
                num_beams=num_beams,
                max_item_length=max_item_length,
            )

        fn = compile_model_function(self, recommend_step)
        self._recommend_functions[key] = fn
        return fn

    def _exact_recommend_function(self, k):
        """The compiled one-step ranking of single-token items (atomic ids):
        `log p(item token | prompt)` for every item, excluded items at
        `-inf`, top `k`."""
        key = ("exact", k)
        fn = self._recommend_functions.get(key)
        if fn is not None:
            return fn
        decoder = self.backbone.decoder

        def exact_step(inputs):
            padding_mask = ops.cast(inputs["padding_mask"], "bool")
            embeddings = self.input_embeddings(inputs, training=False)
            hidden = decoder.hidden_states(embeddings, padding_mask)
            lengths = ops.sum(ops.cast(padding_mask, "int32"), axis=1)
            last = ops.take_along_axis(
                hidden, ops.reshape(lengths - 1, (-1, 1, 1)), axis=1
            )
            logits = ops.cast(self.backbone.logits(last)[:, 0, :], "float32")
            log_probs = ops.log_softmax(logits, axis=-1)
            scores = ops.take(log_probs, inputs["item_tokens"], axis=1)
            scores = ops.where(inputs["alive_items"], scores, -np.inf)
            top_scores, top_items = ops.top_k(scores, k)
            return top_items, top_scores

        fn = compile_model_function(self, exact_step)
        self._recommend_functions[key] = fn
        return fn

    def _shared_prompt_recommend_step(self, num_beams, widths):
        decoder = self.backbone.decoder

        def recommend_step(inputs):
            padding_mask = ops.cast(inputs["padding_mask"], "bool")
            embeddings = self.input_embeddings(inputs, training=False)
            batch_size = ops.shape(padding_mask)[0]
            lengths = ops.sum(ops.cast(padding_mask, "int32"), axis=1)
            # One prompt pass per prompt (not per beam). Right padding is
            # harmless: causal attention keeps it out of real positions, and
            # decoding masks it.
            last, prompt_cache = decoder.prompt_pass(embeddings, lengths)
            first = ops.cast(self.backbone.logits(last)[:, 0, :], "float32")
            first_log_probs = ops.log_softmax(first, axis=-1)

            def step_fn(t, tokens, parent, beam_cache):
                if beam_cache is not None:
                    beams = ops.shape(beam_cache[0][0])[1]
                    rows = ops.reshape(
                        ops.expand_dims(
                            ops.arange(batch_size, dtype="int32") * beams, 1
                        )
                        + parent,
                        (-1,),
                    )

                    def reorder(c):
                        flat = ops.reshape(c, (-1,) + tuple(ops.shape(c)[2:]))
                        flat = ops.take(flat, rows, axis=0)
                        return ops.reshape(
                            flat, (batch_size, -1) + tuple(ops.shape(c)[2:])
                        )

                    beam_cache = keras.tree.map_structure(reorder, beam_cache)
                x = decoder.embed_tokens(tokens)
                hidden, beam_cache = decoder.beam_decode_step(
                    x, lengths + t, prompt_cache, padding_mask, beam_cache
                )
                logits = ops.cast(self.backbone.logits(hidden), "float32")
                return ops.log_softmax(logits, axis=-1), beam_cache

            return shared_prompt_beam_search(
                first_log_probs,
                step_fn,
                inputs["transitions"],
                inputs["alphabet"],
                inputs["leaf_item"],
                inputs["alive"],
                widths=widths,
                num_beams=num_beams,
            )

        return recommend_step

    def _exclusions(self, exclude, num_prompts):
        if exclude is None:
            return [[] for _ in range(num_prompts)]
        if len(exclude) != num_prompts:
            raise ValueError(
                f"`exclude` has {len(exclude)} entries for {num_prompts} "
                "prompts (one list of items per prompt)."
            )
        out = []
        for b, items in enumerate(exclude):
            if isinstance(items, (str, bytes)):
                raise TypeError(
                    f"`exclude[{b}]` is the string {items!r}; it must be a "
                    f"list of item ids, e.g. [{items!r}]."
                )
            rows = []
            for item in items if items is not None else []:
                try:
                    rows.append(self.preprocessor.item_index(item))
                except ValueError as e:
                    raise ValueError(f"`exclude[{b}]`: {e}") from None
            out.append(rows)
        return out

    def recommend(
        self,
        prompts,
        k=10,
        exclude=None,
        num_beams=None,
        response_prefix="",
        batch_size=32,
        length_bucket=16,
    ):
        """Top-`k` catalogue items for each prompt, by constrained beam search.

        Decoding is restricted to the catalogue's item strings (a trie over
        `response_prefix + item_<id>` plus the end token, see `item_trie`), so
        every result is a valid, distinct item. Items are ranked by sequence
        log-likelihood under the model (sum of the token log-probabilities,
        end token included). The search runs as one compiled program per
        batch shape; prompts are sorted by length, batched, and padded to a
        multiple of `length_bucket` tokens to keep the number of shapes small.

        Each prompt is run through the LLM once (not once per beam). With a
        Llama backbone (`LlamaBackbone`, `Llama3Backbone`) the beams of a
        prompt then decode against that one prompt cache, and each step
        carries only as many beams as the trie has candidates at that depth
        (`ItemTrie.beam_widths`); other backbones tile the prompt cache to
        the beams. Both run the same search and are identical in exact
        arithmetic (in float32 on CPU they agree, as the tests check); under
        low precision their rounding differs and near-tied items may swap
        places (bfloat16 on an H200: the same top-10 list for 37.5% of
        prompts, `benchmarks/results/recommend_throughput_gpu_h200.md`).

        When every item is a single token (atomic item indexing, see
        `ItemTrie.single_tokens`), there is nothing to search: the items are
        ranked exactly by `log p(item token | prompt)` in one forward pass
        (the end token that follows carries no choice and is not scored),
        and `num_beams` is ignored.

        Args:
            prompts: a string or a list of strings (`bytes` are read as
                UTF-8 text); an empty or whitespace-only prompt raises.
            k: int, items to return per prompt.
            exclude: optional list with one list of item ids (`1001` or
                `"item_1001"`) per prompt never to return, e.g. the user's
                history; for a single string prompt, one list of item ids. A
                string in place of a list raises a `TypeError`.
            num_beams: int >= k, the beam width. Defaults to `k`. With
                `num_beams` >= the catalogue size the result is exact.
            response_prefix: text the training responses put before the item
                name (default: responses are just `item_<id>`).
            batch_size: prompts per compiled batch.
            length_bucket: prompt lengths are padded up to a multiple of this.

        Returns:
            `(items, scores)`: numpy arrays `[num_prompts, k]`: item ids
            (strings, as in `preprocessor.item_ids`), best first, and their
            log-likelihoods (float32). For a single string prompt, `[k]`.
        """
        if self.preprocessor is None:
            raise ValueError("`recommend()` needs a preprocessor.")
        prep = self.preprocessor
        single = is_single_text(prompts)  # str or bytes: one prompt
        prompts = to_python_strings(prompts, "prompts", allow_blank=False)
        num_beams = int(num_beams or k)
        if k < 1 or num_beams < k:
            raise ValueError(
                f"Need 1 <= k <= num_beams, got k={k}, num_beams={num_beams}."
            )
        trie = self.item_trie(response_prefix)
        if (
            single
            and exclude is not None
            and (len(exclude) == 0 or not isinstance(exclude[0], (list, tuple)))
        ):
            exclude = [exclude]
        excluded = self._exclusions(exclude, len(prompts))
        alive = trie.alive_mask(excluded)
        for b, rows in enumerate(excluded):
            left = trie.num_items - len(set(rows))
            if left < k:
                raise ValueError(
                    f"Prompt {b}: only {left} items remain after excluding "
                    f"{len(set(rows))}, fewer than k={k}."
                )
        x = prep.recommend_preprocess(prompts, length_multiple=length_bucket)
        lengths = x.pop("lengths")

        order = np.argsort(lengths, kind="stable")
        chunk = min(int(batch_size), len(prompts))
        items_out = np.full((len(prompts), k), -1, dtype="int64")
        scores_out = np.full((len(prompts), k), -np.inf, dtype="float32")
        item_tokens = trie.single_tokens()
        if item_tokens is not None:
            fn = self._exact_recommend_function(int(k))
            alive_items = np.ones((len(prompts), trie.num_items), dtype=bool)
            for b, rows in enumerate(excluded):
                alive_items[b, rows] = False
        else:
            widths = None
            if (
                self._shared_prompt_decoding
                and self.backbone.decoder.supports_shared_prompt_decoding
            ):
                widths = tuple(trie.beam_widths(num_beams))
            fn = self._recommend_function(num_beams, trie.max_length, widths)
        for start in range(0, len(prompts), chunk):
            idx = order[start : start + chunk]
            real = len(idx)
            idx = np.concatenate([idx, np.repeat(idx[:1], chunk - real)])
            width = int(math.ceil(lengths[idx].max() / length_bucket) * length_bucket)
            self.backbone.check_length(
                width + trie.max_length,
                f"The search length {width + trie.max_length} (prompts of up "
                f"to {lengths[idx].max()} tokens, padded to {width}, plus "
                f"items of up to {trie.max_length} tokens)",
            )
            # Rows of this batch; `entity_ids` are per mention, not per
            # position, so only their rows are taken.
            inputs = {
                key: value[idx] if key == "entity_ids" else value[idx, :width]
                for key, value in x.items()
            }
            if item_tokens is not None:
                inputs["item_tokens"] = item_tokens
                inputs["alive_items"] = alive_items[idx]
            else:
                inputs.update(
                    alive=alive[idx],
                    transitions=trie.transitions,
                    alphabet=trie.alphabet,
                    leaf_item=trie.leaf_item,
                )
            items, scores = fn(inputs)
            items = ops.convert_to_numpy(items)[:real, :k]
            scores = ops.convert_to_numpy(scores)[:real, :k]
            items_out[idx[:real]] = items
            scores_out[idx[:real]] = scores
        if (items_out < 0).any():
            b = int(np.nonzero((items_out < 0).any(axis=1))[0][0])
            raise ValueError(
                f"Beam search returned fewer than k={k} items for prompt {b} "
                "(non-finite model outputs?)."
            )
        ids = np.array(prep.item_ids, dtype=object)[items_out]
        if single:
            return ids[0], scores_out[0]
        return ids, scores_out
