"""Constrained generation over a catalogue: item trie, compiled beam search.

Public API:
    ItemTrie(sequences, names=None): dense trie tables over item token ids
    constrained_beam_search(step_fn, cache, prompt_lengths, transitions,
        alphabet, leaf_item, alive, num_beams, max_item_length)
        -> (items, scores)
    shared_prompt_beam_search(first_log_probs, step_fn, transitions,
        alphabet, leaf_item, alive, widths, num_beams) -> (items, scores)
    compile_model_function(model, fn, jit_compile=True) -> compiled fn
"""

from ilm_keras.generation.compiled import compile_model_function
from ilm_keras.generation.constrained_beam_search import (
    constrained_beam_search,
    shared_prompt_beam_search,
)
from ilm_keras.generation.item_trie import ItemTrie

__all__ = [
    "ItemTrie",
    "compile_model_function",
    "constrained_beam_search",
    "shared_prompt_beam_search",
]
