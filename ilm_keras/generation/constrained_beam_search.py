"""Beam search restricted to a catalogue's item strings (compilable)."""

import keras
from keras import ops


def constrained_beam_search(
    step_fn,
    cache,
    prompt_lengths,
    transitions,
    alphabet,
    leaf_item,
    alive,
    num_beams,
    max_item_length,
):
    """Top-`num_beams` catalogue items by sequence log-likelihood.

    Written with `keras.ops` only, with a fixed-shape `ops.while_loop`, so
    the whole search compiles into one XLA program (jit on JAX, tf.function
    on TF): no Python callback and no host round-trip per step. The trie
    comes in as dense tables (see `ItemTrie`).

    Prompts are right-padded and may differ in length. Like keras-hub's
    samplers, the loop starts at the shortest prompt's end; a row whose
    prompt has not ended yet re-feeds its own prompt positions (its beams
    stay put) and starts expanding at its own end. Every row then runs at
    least `max_item_length` expansion steps, enough for its longest item.

    Each step, every unfinished beam is extended by every token that leads to
    a trie node with a remaining (non-excluded) item, scored by the full
    vocabulary log-softmax (the true model probability, not renormalized over
    the allowed tokens). A beam that reached a leaf keeps its score and
    competes as is. Live beams are always at distinct trie nodes, so the
    finished beams are distinct items. With `num_beams` at least the number
    of (non-excluded) items, no prefix is ever pruned and the result is the
    exact top list of the exhaustive ranking.

    Args:
        step_fn: `step_fn(cache, index, tokens) -> (log_probs, cache)`. It feeds
            position `index - 1` of every row (`[batch * num_beams]` rows,
            beams of a prompt adjacent): the prompt's own input there if
            `index - 1` is inside the prompt, else `tokens` (the beam's last
            token), and returns float32 `[batch * num_beams, vocab]` log
            probabilities for position `index`.
        cache: the decoder cache after the prompt pass, batch `[batch, ...]`
            (any nested structure); rows are repeated `num_beams` times here.
        prompt_lengths: int32 `[batch]`, real (unpadded) prompt lengths.
        transitions: int32 `[T, A]` (`ItemTrie.transitions`).
        alphabet: int32 `[A]` (`ItemTrie.alphabet`).
        leaf_item: int32 `[T]` (`ItemTrie.leaf_item`).
        alive: bool `[batch, T]`, nodes leading to a non-excluded item
            (`ItemTrie.alive_mask`).
        num_beams: int, the beam width (static).
        max_item_length: int, the longest item sequence (static).

    Returns:
        `(items, scores)`: int32 `[batch, num_beams]` item indices, best
        first, -1 where fewer items exist; float32 `[batch, num_beams]`
        sequence log-likelihoods, `-inf` where the item is -1.
    """
    num_beams = int(num_beams)
    prompt_lengths = ops.cast(prompt_lengths, "int32")
    transitions = ops.cast(transitions, "int32")
    alphabet = ops.cast(alphabet, "int32")
    leaf_item = ops.cast(leaf_item, "int32")
    alive = ops.cast(alive, "bool")
    batch_size = ops.shape(prompt_lengths)[0]
    alphabet_size = ops.shape(alphabet)[0]
    neg_inf = ops.convert_to_tensor(float("-inf"), "float32")

    cache = keras.tree.map_structure(lambda c: ops.repeat(c, num_beams, axis=0), cache)
    beam_range = ops.arange(num_beams, dtype="int32")
    # Only beam 0 is live at the start; the others are -inf placeholders.
    score = ops.where(
        ops.expand_dims(beam_range, 0) == 0,
        ops.zeros((batch_size, num_beams), "float32"),
        ops.full((batch_size, num_beams), float("-inf"), "float32"),
    )
    node = ops.zeros((batch_size, num_beams), "int32")
    last_token = ops.zeros((batch_size, num_beams), "int32")
    start = ops.min(prompt_lengths)
    stop = ops.max(prompt_lengths) + max_item_length
    row_offsets = ops.expand_dims(ops.arange(batch_size, dtype="int32") * num_beams, 1)

    def cond(index, cache, node, score, last_token):
        return index < stop

    def body(index, cache, node, score, last_token):
        log_probs, cache = step_fn(cache, index, ops.reshape(last_token, (-1,)))
        log_probs = ops.cast(log_probs, "float32")
        token_log_probs = ops.reshape(
            ops.take(log_probs, alphabet, axis=1),
            (batch_size, num_beams, alphabet_size),
        )
        children = ops.take(transitions, node, axis=0)  # [B, W, A]
        has_child = children >= 0
        safe_children = ops.maximum(children, 0)
        flat_children = ops.reshape(
            safe_children, (batch_size, num_beams * alphabet_size)
        )
        child_alive = ops.reshape(
            ops.take_along_axis(alive, flat_children, axis=1),
            (batch_size, num_beams, alphabet_size),
        )
        finished = ops.take(leaf_item, node, axis=0) >= 0  # [B, W]
        can_extend = ops.logical_and(
            ops.logical_and(has_child, child_alive),
            ops.logical_not(ops.expand_dims(finished, -1)),
        )
        extend_scores = ops.where(
            can_extend, ops.expand_dims(score, -1) + token_log_probs, neg_inf
        )
        stay_scores = ops.expand_dims(ops.where(finished, score, neg_inf), -1)
        candidates = ops.reshape(
            ops.concatenate([extend_scores, stay_scores], axis=-1),
            (batch_size, num_beams * (alphabet_size + 1)),
        )
        new_score, flat_index = ops.top_k(candidates, k=num_beams)
        flat_index = ops.cast(flat_index, "int32")
        parent = flat_index // (alphabet_size + 1)
        choice = flat_index % (alphabet_size + 1)
        stays = choice == alphabet_size
        choice = ops.minimum(choice, alphabet_size - 1)
        parent_node = ops.take_along_axis(node, parent, axis=1)
        child = ops.take_along_axis(
            flat_children, parent * alphabet_size + choice, axis=1
        )
        new_node = ops.where(stays, parent_node, child)
        new_token = ops.where(stays, 0, ops.take(alphabet, choice, axis=0))

        # Rows still inside their prompt keep their beams as they are.
        active = ops.expand_dims(index >= prompt_lengths, 1)
        node = ops.where(active, new_node, node)
        score = ops.where(active, new_score, score)
        last_token = ops.where(active, new_token, last_token)
        parent = ops.where(active, parent, ops.expand_dims(beam_range, 0))
        rows = ops.reshape(row_offsets + parent, (-1,))
        cache = keras.tree.map_structure(lambda c: ops.take(c, rows, axis=0), cache)
        return index + 1, cache, node, score, last_token

    _, _, node, score, _ = ops.while_loop(
        cond, body, (start, cache, node, score, last_token)
    )
    items = ops.take(leaf_item, node, axis=0)
    valid = ops.logical_and(items >= 0, score > neg_inf)
    items = ops.where(valid, items, -1)
    score = ops.where(valid, score, neg_inf)
    return items, score


def _expand(log_probs, node, score, transitions, alphabet, leaf_item, alive, width):
    """One beam step: the best `width` of all trie-valid extensions.

    `log_probs` float32 `[B, w, V]`, `node`/`score` `[B, w]`. A finished beam
    (at a leaf) competes with its own score. Returns `(node, score, token,
    parent)`, each `[B, width]`.
    """
    batch_size, beams = ops.shape(node)[0], ops.shape(node)[1]
    alphabet_size = ops.shape(alphabet)[0]
    neg_inf = ops.convert_to_tensor(float("-inf"), "float32")
    token_log_probs = ops.take(log_probs, alphabet, axis=2)  # [B, w, A]
    children = ops.take(transitions, node, axis=0)  # [B, w, A]
    flat_children = ops.reshape(ops.maximum(children, 0), (batch_size, -1))
    child_alive = ops.reshape(
        ops.take_along_axis(alive, flat_children, axis=1),
        (batch_size, beams, alphabet_size),
    )
    finished = ops.take(leaf_item, node, axis=0) >= 0
    can_extend = ops.logical_and(
        ops.logical_and(children >= 0, child_alive),
        ops.logical_not(ops.expand_dims(finished, -1)),
    )
    extend = ops.where(
        can_extend, ops.expand_dims(score, -1) + token_log_probs, neg_inf
    )
    stay = ops.expand_dims(ops.where(finished, score, neg_inf), -1)
    candidates = ops.reshape(ops.concatenate([extend, stay], axis=-1), (batch_size, -1))
    new_score, flat_index = ops.top_k(candidates, k=width)
    flat_index = ops.cast(flat_index, "int32")
    parent = flat_index // (alphabet_size + 1)
    choice = flat_index % (alphabet_size + 1)
    stays = choice == alphabet_size
    choice = ops.minimum(choice, alphabet_size - 1)
    child = ops.take_along_axis(flat_children, parent * alphabet_size + choice, axis=1)
    new_node = ops.where(stays, ops.take_along_axis(node, parent, axis=1), child)
    new_token = ops.where(stays, 0, ops.take(alphabet, choice, axis=0))
    return new_node, new_score, new_token, parent


def shared_prompt_beam_search(
    first_log_probs,
    step_fn,
    transitions,
    alphabet,
    leaf_item,
    alive,
    widths,
    num_beams,
):
    """`constrained_beam_search` with a shared prompt cache and exact widths.

    The same search, organised for speed: identical to
    `constrained_beam_search` in exact arithmetic (in float32 on CPU the two
    agree, as the tests check), while under low precision (e.g. bfloat16)
    the two round differently and near-tied items may swap places. What
    changes:

    - the first expansion reads the log-probabilities the prompt pass already
      computed at each prompt's last position (`first_log_probs`), so no
      prompt position is ever fed again, whatever the prompts' lengths;
    - the loop over the (few) item positions is unrolled at trace time, and
      step `t` carries exactly `widths[t]` beams: no more than the trie has
      candidates at that depth (e.g. 1 beam while every item string shares
      its first tokens), instead of `num_beams` placeholders;
    - `step_fn` decodes all beams of a prompt against one copy of the
      prompt cache (see `SoftTokenDecoder.beam_decode_step`): only the
      beams' own generated keys/values are reordered each step.

    Args:
        first_log_probs: float32 `[batch, vocab]`, log-probabilities of the
            first item token (the prompt pass's last position).
        step_fn: `step_fn(t, tokens, parent, state) -> (log_probs, state)`:
            reorder the beam state by `parent` int32 `[batch, w]` (indices
            into the previous step's beams; `state` is None at `t == 0`), feed
            `tokens` int32 `[batch, w]` (the item's `t + 1`-th token, at
            position `prompt_length + t`) and return float32 `[batch, w,
            vocab]` log-probabilities of the next token.
        transitions, alphabet, leaf_item, alive: the trie tables as in
            `constrained_beam_search`.
        widths: list of `max_item_length + 1` static ints, `widths[t]` the
            beams alive after `t` tokens (`ItemTrie.beam_widths`).
        num_beams: int, the beam width of the result.

    Returns:
        `(items, scores)` as `constrained_beam_search`.
    """
    transitions = ops.cast(transitions, "int32")
    alphabet = ops.cast(alphabet, "int32")
    leaf_item = ops.cast(leaf_item, "int32")
    alive = ops.cast(alive, "bool")
    log_probs = ops.expand_dims(ops.cast(first_log_probs, "float32"), 1)
    batch_size = ops.shape(log_probs)[0]
    node = ops.zeros((batch_size, 1), "int32")
    score = ops.zeros((batch_size, 1), "float32")
    state = None
    steps = len(widths) - 1
    for t in range(steps):
        node, score, token, parent = _expand(
            log_probs,
            node,
            score,
            transitions,
            alphabet,
            leaf_item,
            alive,
            int(widths[t + 1]),
        )
        if t + 1 < steps:
            log_probs, state = step_fn(t, token, parent, state)
            log_probs = ops.cast(log_probs, "float32")
    neg_inf = float("-inf")
    items = ops.take(leaf_item, node, axis=0)
    valid = ops.logical_and(items >= 0, score > neg_inf)
    items = ops.where(valid, items, -1)
    score = ops.where(valid, score, neg_inf)
    missing = num_beams - int(widths[-1])
    if missing > 0:
        items = ops.pad(items, [[0, 0], [0, missing]], constant_values=-1)
        score = ops.pad(score, [[0, 0], [0, missing]], constant_values=neg_inf)
    return items, score
