"""A trie over the token sequences of a catalogue, as dense arrays."""

import numpy as np


class ItemTrie:
    """A prefix tree over item token sequences, stored as dense tables.

    Constrained decoding needs, at every step and for every beam, the set of
    tokens that keep the beam on a valid item string. A Python trie queried
    per step (OpenP5's `prefix_allowed_tokens_fn`) cannot be compiled; here
    the trie is flattened into arrays that a compiled loop indexes:

    - `alphabet` int32 `[A]`: every token id used by some item, sorted.
    - `transitions` int32 `[T, A]`: `transitions[node, a]` is the child of
      `node` reached by token `alphabet[a]`, or -1. Node 0 is the root.
    - `leaf_item` int32 `[T]`: the item whose sequence ends at this node, or
      -1. Sequences are prefix-free, so leaves have no children.
    - `item_count` int32 `[T]`: how many items lie below (or at) each node.
    - `item_paths` int32 `[I, L]`: the nodes each item's sequence visits
      (root excluded, padded with -1), for exclusions.

    Memory is `T * A * 4` bytes for the table (e.g. the 3,416 names
    `item_1`..`item_3416`, tokenized by `OpenP5Tokenizer` with the end token
    appended: 6,835 nodes x 22 tokens, about 600 KB).

    Args:
        sequences: list of token-id lists, one per item (row order of the
            catalogue). Each must be non-empty; no two may be equal, and none
            may be a prefix of another (append an end token to guarantee it).
        names: optional list of item names used in error messages.

    Example:
    ```python
    trie = ItemTrie([[5, 7, 2], [5, 8, 2], [6, 2]])
    trie.transitions.shape  # (6, 5): 6 nodes, alphabet [2, 5, 6, 7, 8]
    ```
    """

    def __init__(self, sequences, names=None):
        sequences = [list(map(int, s)) for s in sequences]
        if not sequences:
            raise ValueError("ItemTrie needs at least one item.")
        names = list(names) if names is not None else None

        def name(i):
            return repr(names[i]) if names is not None else f"#{i}"

        for i, s in enumerate(sequences):
            if not s:
                raise ValueError(f"Item {name(i)} tokenizes to nothing.")
        self.alphabet = np.array(
            sorted({t for s in sequences for t in s}), dtype="int32"
        )
        column = {int(t): a for a, t in enumerate(self.alphabet)}
        children = [{}]
        leaf = [-1]
        paths = []
        for i, s in enumerate(sequences):
            node, path = 0, []
            for t in s:
                if leaf[node] >= 0:
                    raise ValueError(
                        f"Item {name(leaf[node])}'s tokens are a prefix of "
                        f"item {name(i)}'s: constrained decoding could not "
                        "tell where an item ends. Append an end token to "
                        "every item sequence."
                    )
                a = column[t]
                nxt = children[node].get(a)
                if nxt is None:
                    nxt = len(children)
                    children[node][a] = nxt
                    children.append({})
                    leaf.append(-1)
                node = nxt
                path.append(node)
            if leaf[node] >= 0:
                raise ValueError(
                    f"Items {name(leaf[node])} and {name(i)} have the same tokens {s}."
                )
            if children[node]:
                other = self._first_leaf_below(children, leaf, node)
                raise ValueError(
                    f"Item {name(i)}'s tokens are a prefix of item "
                    f"{name(other)}'s: constrained decoding could not tell "
                    "where an item ends. Append an end token to every item "
                    "sequence."
                )
            leaf[node] = i
            paths.append(path)
        num_nodes = len(children)
        self.transitions = np.full((num_nodes, len(self.alphabet)), -1, dtype="int32")
        for node, kids in enumerate(children):
            for a, child in kids.items():
                self.transitions[node, a] = child
        self.leaf_item = np.array(leaf, dtype="int32")
        self.max_length = max(len(s) for s in sequences)
        self.item_paths = np.full((len(sequences), self.max_length), -1, dtype="int32")
        for i, p in enumerate(paths):
            self.item_paths[i, : len(p)] = p
        self.item_count = np.zeros(num_nodes, dtype="int32")
        np.add.at(self.item_count, 0, len(sequences))
        flat = self.item_paths[self.item_paths >= 0]
        np.add.at(self.item_count, flat, 1)
        self.sequences = sequences

    @staticmethod
    def _first_leaf_below(children, leaf, node):
        while leaf[node] < 0:
            node = next(iter(children[node].values()))
        return leaf[node]

    @property
    def num_items(self):
        return len(self.sequences)

    @property
    def num_nodes(self):
        return self.transitions.shape[0]

    def single_tokens(self):
        """Each item's token when every item is one token (+ a shared end).

        With atomic item indexing (one vocabulary entry per item), each
        item's sequence is its own token, optionally followed by the same
        end token for all items. Ranking then needs no search: the exact
        top-k of `log p(item token | prompt)` is one softmax away (the end
        token after an item carries no choice).

        Returns:
            int32 array `[num_items]` of the items' tokens, or None when some
            item takes several tokens (or items end differently).
        """
        firsts = [s[0] for s in self.sequences]
        tails = {tuple(s[1:]) for s in self.sequences}
        if len(tails) != 1 or len(next(iter(tails))) > 1:
            return None
        if len(set(firsts)) != len(firsts):
            return None
        return np.asarray(firsts, dtype="int32")

    def beam_widths(self, num_beams):
        """The most beams a search of width `num_beams` can fill, per depth.

        After `t` tokens a beam is either at a node of depth `t` or a
        finished item (a leaf) of smaller depth, so no more than
        `min(num_beams, nodes at depth t + leaves above depth t)` beams can
        hold a candidate; a search carrying exactly that many keeps the same
        beams as one carrying `num_beams` (the rest would be -inf
        placeholders).

        Returns:
            list of `max_length + 1` ints; `widths[0] == 1` (the root).
        """
        depth = np.zeros(self.num_nodes, dtype="int64")
        valid = self.item_paths >= 0
        depth[self.item_paths[valid]] = np.nonzero(valid)[1] + 1
        nodes = np.bincount(depth, minlength=self.max_length + 1)
        leaves = np.bincount(depth[self.leaf_item >= 0], minlength=self.max_length + 1)
        finished_before = np.concatenate([[0], np.cumsum(leaves)[:-1]])
        widths = np.minimum(int(num_beams), nodes + finished_before)
        return [int(w) for w in widths]

    def alive_mask(self, excluded):
        """Which nodes still lead to a non-excluded item, per prompt.

        Args:
            excluded: list (one entry per prompt) of lists of item indices to
                exclude (duplicates are counted once).

        Returns:
            bool array `[len(excluded), num_nodes]`.
        """
        counts = np.tile(self.item_count, (len(excluded), 1))
        rows, nodes = [], []
        for b, items in enumerate(excluded):
            items = np.unique(np.asarray(list(items), dtype="int64"))
            if items.size == 0:
                continue
            if items.min() < 0 or items.max() >= self.num_items:
                raise ValueError(
                    f"Excluded item index out of range [0, {self.num_items}) "
                    f"for prompt {b}."
                )
            path = self.item_paths[items]
            path = np.concatenate(
                [np.zeros((len(items), 1), dtype="int32"), path], axis=1
            )
            path = path[path >= 0]
            rows.append(np.full(path.shape, b))
            nodes.append(path)
        if rows:
            np.add.at(counts, (np.concatenate(rows), np.concatenate(nodes)), -1)
        return counts > 0
