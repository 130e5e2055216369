"""Pretrain a small keras-hub decoder on text-only OpenP5 prompts (paper §4.4).

The ILM paper's OpenP5 LLM is an 8-layer transformer decoder pretrained on the
text-only OpenP5 data (random item indexing) so that it generates `item_<id>`
strings; it is then frozen for phase 2. `make_llama_backbone` builds such a
decoder (keras-hub `LlamaBackbone`, any size) and `pretrain_backbone` trains it
with one `fit` on (prompt, response) pairs, the loss on response tokens only.
Tokenization is done by `ItemLanguageModelPreprocessor` with no soft tokens:
exactly the token ids the frozen model later sees in phase 2.
"""

import keras
import keras_hub

from ilm_keras.models.item_language_model_preprocessor import (
    ItemLanguageModelPreprocessor,
)
from ilm_keras.models.prompt_response_batches import PromptResponseBatches
from ilm_keras.utils import resume
from ilm_keras.utils.quiet import fit_verbosity
from ilm_keras.utils.schedules import warmup_cosine


def make_llama_backbone(
    vocabulary_size,
    num_layers=2,
    hidden_dim=64,
    num_heads=4,
    num_key_value_heads=None,
    intermediate_dim=None,
    dtype=None,
):
    """A randomly initialized keras-hub `LlamaBackbone` (dropout 0).

    Args:
        vocabulary_size: int, the tokenizer's vocabulary size.
        num_layers: int, decoder blocks (the paper: 8).
        hidden_dim: int, model width.
        num_heads: int, query heads.
        num_key_value_heads: int, key/value heads (default: `num_heads`).
        intermediate_dim: int, FFN width (default: `4 * hidden_dim`).
        dtype: optional dtype policy.

    Returns:
        A `keras_hub.models.LlamaBackbone`.

    Example:
    ```python
    backbone = make_llama_backbone(tokenizer.vocabulary_size(), num_layers=8,
                                   hidden_dim=512, num_heads=8)
    ```
    """
    if hidden_dim % num_heads:
        raise ValueError(
            f"hidden_dim={hidden_dim} must be a multiple of num_heads={num_heads}."
        )
    return keras_hub.models.LlamaBackbone(
        vocabulary_size=int(vocabulary_size),
        num_layers=int(num_layers),
        num_query_heads=int(num_heads),
        hidden_dim=int(hidden_dim),
        intermediate_dim=int(intermediate_dim or 4 * hidden_dim),
        num_key_value_heads=int(num_key_value_heads or num_heads),
        dropout=0.0,
        dtype=dtype,
    )


def pretraining_batches(
    tokenizer,
    pairs_for_epoch,
    item_ids,
    user_ids=None,
    batch_size=32,
    seed=0,
    sequence_length=256,
    length_bucket=16,
    length_group=50,
):
    """The batches `pretrain_backbone` trains on (same arguments).

    `PromptResponseBatches` over a text-only `ItemLanguageModelPreprocessor`
    (no soft tokens): to look at what pretraining will see, e.g. how much of
    each batch is padding.

    Returns:
        A `PromptResponseBatches`.

    Example:
    ```python
    batches = pretraining_batches(tokenizer, pairs, item_ids=data.item_index)
    x, y, sample_weight = batches[0]
    ```
    """
    preprocessor = ItemLanguageModelPreprocessor(
        tokenizer,
        item_ids=[str(i) for i in item_ids],
        user_ids=None if user_ids is None else [str(u) for u in user_ids],
        sequence_length=sequence_length,
        num_soft_tokens=0,
    )
    return PromptResponseBatches(
        preprocessor, pairs_for_epoch, batch_size, seed, length_bucket,
        length_group,
    )


def pretrain_backbone(
    backbone,
    tokenizer,
    pairs_for_epoch,
    item_ids,
    user_ids=None,
    epochs=1,
    batch_size=32,
    learning_rate=1e-3,
    sequence_length=256,
    seed=0,
    callbacks=None,
    verbose="auto",
    steps_per_epoch=None,
    length_bucket=16,
    length_group=50,
    warmup_steps=0,
    backup=None,
):
    """Trains `backbone` as a causal LM on (prompt, response) pairs, in place.

    A frozen backbone is trained too; its `trainable` flag is restored
    afterwards.

    One `fit` of `backbone` followed by its tied/untied output projection
    (`token_embedding(x, reverse=True)`, as keras-hub's causal LMs do), with
    AdamW, `warmup_steps` of linear warmup then a cosine decay to 0
    (`ilm_keras.utils.schedules.warmup_cosine`), and cross-entropy on
    response tokens and the end token only.

    Args:
        backbone: a keras-hub causal LM backbone (e.g. `make_llama_backbone`).
        tokenizer: its tokenizer (e.g. `OpenP5Tokenizer`), with start, end
            and pad tokens.
        pairs_for_epoch: callable `epoch -> list of (prompt, response)`
            (e.g. `lambda e: training_prompts(split, epoch=e, seed=0)`), or a
            fixed list.
        item_ids: the catalogue's item ids (`data.item_index`): prompts may
            only mention these (`item_<id>`); an unknown mention raises.
        user_ids: the user ids (`data.user_index`) prompts may mention.
        epochs: int.
        batch_size: int.
        learning_rate: float, peak AdamW learning rate.
        sequence_length: int, the longest example allowed (longer raises).
        seed: int, the shuffle seed.
        callbacks: extra Keras callbacks.
        verbose: `fit` verbosity (progress bar by default).
        steps_per_epoch: optional int, caps the batches per epoch.
        length_bucket: batch widths are multiples of this (fewer shapes,
            fewer recompilations; more padding).
        length_group: batches per length-sorted group (`PromptResponseBatches`;
            1: plain shuffled batches).
        warmup_steps: int, steps of linear learning-rate warmup.
        backup: optional `ilm_keras.utils.resume.TrainingBackup`: the fit
            saves its state there and a rerun resumes it exactly
            (`resumable_fit`).

    Returns:
        The Keras `History`.

    Example:
    ```python
    tokenizer = OpenP5Tokenizer.from_texts()
    backbone = make_llama_backbone(tokenizer.vocabulary_size())
    pretrain_backbone(backbone, tokenizer,
                      lambda e: training_prompts(split, epoch=e),
                      item_ids=data.item_index, user_ids=data.user_index,
                      epochs=3)
    ```
    """
    batches = pretraining_batches(
        tokenizer, pairs_for_epoch, item_ids, user_ids, batch_size, seed,
        sequence_length, length_bucket, length_group,
    )
    steps = len(batches) if steps_per_epoch is None else min(steps_per_epoch, len(batches))
    inputs = backbone.input
    logits = backbone.token_embedding(backbone(inputs), reverse=True)
    causal_lm = keras.Model(inputs, logits, name="backbone_pretraining")
    schedule = warmup_cosine(learning_rate, max(1, steps * epochs), warmup_steps)
    causal_lm.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction="mean_with_sample_weight"
        ),
        weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    # Train even a frozen backbone (e.g. one shared with an
    # `ItemLanguageModel`), then leave its `trainable` as it was.
    was_trainable = backbone.trainable
    backbone.trainable = True
    try:
        return resume.resumable_fit(
            causal_lm,
            lambda start: batches.fit_input(steps_per_epoch, start),
            epochs=epochs,
            backup=backup,
            callbacks=callbacks,
            verbose=fit_verbosity(verbose),
        )
    finally:
        backbone.trainable = was_trainable
