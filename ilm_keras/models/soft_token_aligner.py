"""Soft tokens aligned with the LLM's own embeddings of item text (beyond
the paper).

The paper's phase 1 aligns the Q-Former's outputs with text through the
Q-Former's own text tower; phase 2 then has to teach the adaptor, through
the whole frozen LLM, where in the LLM's input space an item's soft tokens
should land. `SoftTokenAligner` gives phase 2 a start: it trains the item
encoder and adaptor of an `ItemLanguageModelBackbone`, without running the
LLM, so that an item's `N` soft tokens match the LLM's input embeddings of
the first `N` tokens of a short text about the item (its genres, say). A
step costs an encoder forward pass, not an LLM one.
"""

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="ilm_keras")
class SoftTokenAligner(keras.Model):
    """Trains an item encoder + adaptor towards target input embeddings.

    Wraps an `ItemSoftTokens` layer (`backbone.item_soft_tokens`, shared,
    not copied: fitting the aligner trains the backbone's encoder in place).
    Inputs are item rows of the layer's CF table (int `[B]`); outputs are
    their soft tokens `[B, N, output_dim]`. Targets come from
    `soft_token_targets`; fit with a regression loss (e.g. `"mse"`).

    Args:
        soft_tokens: an `ItemSoftTokens` layer (`encoder` "qformer" or
            "mlp").

    Example:
    ```python
    aligner = SoftTokenAligner(backbone.item_soft_tokens)
    targets = soft_token_targets(backbone, tokenizer, genre_texts,
                                 aligner.num_soft_tokens)
    aligner.compile(optimizer="adam", loss="mse")
    aligner.fit(np.asarray(seen_items), targets, batch_size=64, epochs=10)
    ```
    """

    def __init__(self, soft_tokens, **kwargs):
        super().__init__(**kwargs)
        self.soft_tokens = soft_tokens

    @property
    def num_soft_tokens(self):
        return self.soft_tokens.num_soft_tokens

    def call(self, item_rows, training=None):
        rows = ops.cast(ops.reshape(item_rows, (-1, 1)), "int32")
        cf = self.soft_tokens.mention_vectors(rows)[:, 0, :]
        return self.soft_tokens.encode(cf, training=training)

    def get_config(self):
        config = super().get_config()
        config["soft_tokens"] = keras.layers.serialize(self.soft_tokens)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["soft_tokens"] = keras.layers.deserialize(config["soft_tokens"])
        return cls(**config)


def soft_token_targets(backbone, tokenizer, texts, num_soft_tokens):
    """The LLM input embeddings a `SoftTokenAligner` fits: per text, the
    embeddings of its first `num_soft_tokens` tokens (a shorter text
    repeats its last token).

    Args:
        backbone: the `ItemLanguageModelBackbone` (its LLM embeds tokens).
        tokenizer: the LLM's tokenizer (`tokenizer(text)` -> token ids).
        texts: one non-empty string per item.
        num_soft_tokens: `N`.

    Returns:
        float32 array `[len(texts), N, hidden_dim]`.
    """
    ids = np.zeros((len(texts), num_soft_tokens), np.int32)
    for row, text in enumerate(texts):
        tokens = [int(t) for t in np.asarray(tokenizer(text)).reshape(-1)]
        if not tokens:
            raise ValueError(f"Text {row} ({text!r}) has no tokens.")
        tokens = tokens[:num_soft_tokens]
        ids[row] = tokens + [tokens[-1]] * (num_soft_tokens - len(tokens))
    return np.asarray(ops.convert_to_numpy(backbone.decoder.embed_tokens(ids)),
                      np.float32)


def soft_token_bag_targets(backbone, tokenizer, text_lists, num_soft_tokens):
    """Order-free targets for a `SoftTokenAligner`: per item, the mean over
    its texts (its genres, say) of each text's mean token embedding, the
    same vector in every one of the `num_soft_tokens` slots.

    `soft_token_targets` of a list (" Comedy, Drama") puts the list's first
    token in the first slot, a choice an item's CF vector can barely
    predict; the bag's mean is a linear function of which texts an item
    has, what a linear read of a CF vector can give.

    Args:
        backbone: the `ItemLanguageModelBackbone` (its LLM embeds tokens).
        tokenizer: the LLM's tokenizer (`tokenizer(text)` -> token ids).
        text_lists: one non-empty list of non-empty strings per item.
        num_soft_tokens: `N`.

    Returns:
        float32 array `[len(text_lists), N, hidden_dim]`.

    Example:
    ```python
    targets = soft_token_bag_targets(backbone, tokenizer,
                                     [[" Comedy", " Drama"], [" Horror"]], 4)
    ```
    """
    vocabulary = {}  # text -> mean token embedding
    rows = []
    for row, texts in enumerate(text_lists):
        if isinstance(texts, str) or not len(texts):
            raise ValueError(f"Item {row} needs a non-empty list of texts, got "
                             f"{texts!r}.")
        for text in texts:
            if text not in vocabulary:
                tokens = np.asarray(tokenizer(text), np.int32).reshape(-1)
                if not tokens.size:
                    raise ValueError(f"Text {text!r} of item {row} has no tokens.")
                vocabulary[text] = np.asarray(ops.convert_to_numpy(
                    backbone.decoder.embed_tokens(tokens[None])), np.float32)[0].mean(0)
        rows.append(np.mean([vocabulary[t] for t in texts], axis=0))
    bag = np.stack(rows).astype(np.float32)
    return np.repeat(bag[:, None, :], num_soft_tokens, axis=1)


def mean_target_mse(targets, mean=None):
    """The MSE of predicting every item's soft tokens by one per-slot mean.

    The floor an alignment loss is read against: `SoftTokenAligner`'s MSE
    below it means the soft tokens depend on the item, not only on the slot.

    Args:
        targets: `[items, N, hidden_dim]` (`soft_token_targets`).
        mean: `[N, hidden_dim]` per-slot mean; default: `targets`' own
            (pass the training items' mean to score held-out items).

    Returns:
        A float.
    """
    targets = np.asarray(targets, np.float32)
    if targets.ndim != 3:
        raise ValueError(f"targets must be [items, N, dim], got {targets.shape}.")
    mean = targets.mean(axis=0) if mean is None else np.asarray(mean, np.float32)
    return float(np.mean((targets - mean[None]) ** 2))


def soft_token_spread(soft_tokens):
    """How much of a set of soft tokens is the item's own.

    An LLM reads a soft token after normalising it, so what it can tell
    apart is the between-item part relative to the whole: a token that is
    a large constant plus a small item-dependent wiggle carries little of
    its item to the LLM however well the wiggle encodes it.

    Args:
        soft_tokens: `[items, N, hidden_dim]`, one row of soft tokens (or of
            `soft_token_targets`) per item.

    Returns:
        `{"rms": ..., "item_rms": ..., "item_share": ...}`: the root mean
        square of all entries, of the entries' deviations from their
        slot's mean over items, and the second over the first.
    """
    soft_tokens = np.asarray(soft_tokens, np.float64)
    if soft_tokens.ndim != 3 or len(soft_tokens) < 2:
        raise ValueError("soft_tokens must be [items >= 2, N, dim], got "
                         f"{soft_tokens.shape}.")
    rms = float(np.sqrt(np.mean(soft_tokens ** 2)))
    item_rms = float(np.sqrt(np.mean(soft_tokens.var(axis=0))))
    return {"rms": rms, "item_rms": item_rms,
            "item_share": item_rms / rms if rms > 0 else 0.0}
