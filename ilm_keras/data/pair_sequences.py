"""Sequences of (prompt, response) pairs that are made when read."""

import collections.abc

import numpy as np


def _position(index, length):
    """`index` as a position in `0..length-1` (negative counts from the end)."""
    if not isinstance(index, (int, np.integer)):
        raise TypeError(
            f"Pair sequences are indexed by int; got {type(index).__name__}."
        )
    position = int(index) + length if index < 0 else int(index)
    if not 0 <= position < length:
        raise IndexError(f"Pair {index} out of range for {length} pairs.")
    return position


class PairSequence(collections.abc.Sequence):
    """A read-only sequence of `(prompt, response)` string pairs.

    Subclasses make a pair when it is read (`pair(position)`), so an epoch
    of training pairs costs a few integers per pair instead of two Python
    strings: `PromptResponseBatches` shuffles positions and reads only the
    pairs of the batch it is making. Anything that takes a list of pairs
    takes one of these (`len`, indexing, iteration).

    Subclasses implement `__len__` and `pair(position)`, and may override
    `responses()` with something cheaper than reading every pair.
    """

    def pair(self, position):
        """The pair at `position` (an int in `0..len(self) - 1`)."""
        raise NotImplementedError

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self.pair(i) for i in range(*index.indices(len(self)))]
        return self.pair(_position(index, len(self)))

    def responses(self):
        """The set of distinct responses (strings)."""
        return {response for _, response in self}


def distinct_responses(pairs):
    """The distinct responses of a list of pairs or a `PairSequence`."""
    if isinstance(pairs, PairSequence):
        return pairs.responses()
    return {response for _, response in pairs}


class ConcatenatedPairs(PairSequence):
    """Several pair sequences (or lists of pairs) read as one, in order.

    Args:
        parts: a list of `PairSequence`s and/or lists of `(prompt,
            response)` pairs.

    Example:
    ```python
    pairs = ConcatenatedPairs([training_prompts(split), describe * 2])
    len(pairs), pairs[-1]
    ```
    """

    def __init__(self, parts):
        self.parts = [p for p in parts]
        self.ends = np.cumsum([len(p) for p in self.parts], dtype=np.int64)

    def __len__(self):
        return int(self.ends[-1]) if len(self.ends) else 0

    def pair(self, position):
        part = int(np.searchsorted(self.ends, position, side="right"))
        start = int(self.ends[part - 1]) if part else 0
        return self.parts[part][position - start]

    def responses(self):
        found = set()
        for part in self.parts:
            found |= distinct_responses(part)
        return found
