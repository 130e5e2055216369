"""`ChatModel`: one trained `ItemLanguageModel` behind one lock, with the
prompts it was trained on.

`SEQUENTIAL.template(0)` for "recommend after these items",
`STRAIGHTFORWARD.template(0)` for "what should user_N watch next?", and
`DESCRIBE_TEMPLATE` ("What is item_<id> about?") for descriptions. A
history is fitted into the model's `sequence_length` (oldest items dropped
first) and the model is called with fixed shapes, so that after one
warm-up no request compiles anything.
"""

import re
import threading

import numpy as np

from ilm_keras.chat.catalogue import Catalogue
from ilm_keras.data.templates import HISTORY_SEPARATOR
from ilm_keras.data.templates import SEQUENTIAL
from ilm_keras.data.templates import STRAIGHTFORWARD

# The describe prompt the models were trained on
# (`ilm_keras.experiments.pipeline.DESCRIBE_TEMPLATE`; a copy here keeps
# the chat from importing the training pipeline, which the test below
# checks against).
DESCRIBE_TEMPLATE = "What is item_{item} about?"
# The sequential template's `{user}` when no user was named.
ANONYMOUS_USER = "this user"


def tidy_generated(text):
    """Model text for people: no `[UNK]`, no spaces before punctuation.

    Example:
    ```python
    tidy_generated("Harbor ( 1959 ) . Genres : Comedy .")
    # "Harbor (1959). Genres: Comedy."
    ```
    """
    text = re.sub(r"\[UNK\]", " ", text)
    text = re.sub(r"\s+([.,:;!?)\]])", r"\1", text)
    text = re.sub(r"([(\[])\s+", r"\1", text)
    return " ".join(text.split())


class ChatModel:
    """One trained `ItemLanguageModel` for conversations: prompts, one lock.

    Every model and tokenizer call goes through `self.lock`, so any number
    of conversations (threads of a server) can share one model. Calls use
    fixed shapes (batch 1, prompts padded to `sequence_length`, a fixed
    `max_k` beam width or ranking size, generation to `max_length`), so
    `warm_up()` compiles everything a conversation needs once.

    Args:
        model: an `ItemLanguageModel` with its preprocessor (e.g.
            `ItemLanguageModel.from_preset(path)`).
        k: default number of recommendations.
        max_k: the largest `k` a request may ask for (capped at the
            catalogue size); recommendations are computed at this size and
            cut, so every `k` uses one compiled program.
        max_length: generation length in tokens (prompt included); defaults
            to the preprocessor's `sequence_length`.

    Example:
    ```python
    chat_model = ChatModel(ItemLanguageModel.from_preset("runs/qs/preset"))
    items, dropped = chat_model.recommend(["1014", "1007"], k=5)
    ```
    """

    def __init__(self, model, k=10, max_k=20, max_length=None):
        if model.preprocessor is None:
            raise ValueError("The model has no preprocessor; load a preset "
                             "saved with one (`ItemLanguageModel.from_preset`).")
        self.model = model
        self.preprocessor = model.preprocessor
        self.catalogue = Catalogue(self.preprocessor)
        if len(self.catalogue) < 1:
            raise ValueError("The model's catalogue has no items.")
        self.max_k = max(1, min(int(max_k), len(self.catalogue)))
        if int(k) < 1:
            raise ValueError(f"`k` must be >= 1, got {k}.")
        self.k = min(int(k), self.max_k)
        self.sequence_length = int(self.preprocessor.sequence_length)
        self.max_length = int(max_length or self.sequence_length)
        if self.max_length < 2:
            raise ValueError(f"`max_length` must be >= 2, got {self.max_length}.")
        self.lock = threading.RLock()
        model.compile(sampler="greedy")
        # One prompt width for every recommendation (no recompiles), when
        # the backbone's positions allow it.
        self._length_bucket = self.sequence_length
        try:
            trie = model.item_trie()
            model.backbone.check_length(self.sequence_length + trie.max_length, "")
        except ValueError:
            self._length_bucket = 16

    # -- prompts ------------------------------------------------------------
    def user_name(self, user_id):
        return self.catalogue.user_prefix + str(user_id)

    def item_name(self, item_id):
        return self.catalogue.item_prefix + str(item_id)

    def history_prompt(self, history, user=None):
        """The prompt for "what comes after `history`" (oldest first)."""
        user = self.user_name(user) if user is not None else ANONYMOUS_USER
        if not history:
            return STRAIGHTFORWARD.template(0).format(user=user)
        return SEQUENTIAL.template(0).format(
            user=user,
            history=HISTORY_SEPARATOR.join(self.item_name(i) for i in history))

    def _fits(self, prompt, mentions):
        if mentions > self.preprocessor.max_mentions:
            return False
        # Mentions are known ids and counted above: a ValueError here is a
        # prompt longer than `sequence_length`.
        try:
            with self.lock:  # Keras layers (the tokenizer) are not thread-safe
                lengths = self.preprocessor.recommend_preprocess([prompt])["lengths"]
        except ValueError:
            return False
        return int(lengths[0]) <= self.sequence_length

    def fit_history(self, history, user=None):
        """The newest part of `history` whose prompt fits the model.

        Args:
            history: item ids, oldest first.
            user: optional user id.

        Returns:
            `(kept, dropped)`: the items that fit (the newest), and those
            dropped (the oldest), each oldest first.

        Raises:
            ValueError: not even an empty history fits (a model whose
                `sequence_length` is shorter than the template).
        """
        history = list(history)
        user_mentions = 0 if user is None else (
            2 if history else 1)  # the templates name the user twice / once
        start = 0
        while True:
            kept = history[start:]
            mentions = len(kept) + (user_mentions if kept else min(user_mentions, 1))
            if self._fits(self.history_prompt(kept, user), mentions):
                return kept, history[:start]
            if not kept:
                raise ValueError(
                    "Even a prompt without history is longer than the model's "
                    f"sequence_length={self.sequence_length}.")
            start += 1

    # -- model calls ----------------------------------------------------------
    def rank(self, prompt, k, exclude=()):
        """The top `k` items for `prompt`, none in `exclude`.

        Args:
            prompt: a model prompt (e.g. `history_prompt(...)`).
            k: how many items.
            exclude: item ids never to return.

        Returns:
            Item dicts (`Catalogue.describe`, with `score`), best first.

        The model always ranks `max_k` items (one compiled program for
        every request). When `exclude` leaves fewer than `max_k` items in
        the catalogue, only as many exclusions as leave `max_k` go to the
        model and the rest are filtered from its list, which may then hold
        fewer than `k` items.
        """
        exclude = set(exclude)
        if len(exclude) >= len(self.catalogue):
            return []
        passed = sorted(exclude)[:len(self.catalogue) - self.max_k]
        with self.lock:
            items, scores = self.model.recommend(
                prompt, k=self.max_k, exclude=passed,
                length_bucket=self._length_bucket)
        ranked = [self.catalogue.describe(i, s) for i, s in zip(items, scores)
                  if str(i) not in exclude]
        return ranked[:k]

    def check_k(self, k):
        """`k` as an int in `1..max_k`, or a ValueError saying the range."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise ValueError(f"`k` must be an integer in 1..{self.max_k}, got {k!r}.")
        if not 1 <= k <= self.max_k:
            raise ValueError(f"`k` must be in 1..{self.max_k}, got {k}.")
        return int(k)

    def recommend(self, history=(), user=None, k=None, exclude=()):
        """Items to try after `history` (and/or for `user`).

        Args:
            history: item ids, oldest first (the newest that fit are used).
            user: optional user id (`"12"`).
            k: how many (default `self.k`).
            exclude: item ids never to return; the whole `history` (the
                dropped part too) is always excluded.

        Returns:
            `(items, dropped)`: item dicts (`Catalogue.describe`, with
            `score`), best first (fewer than `k` when the exclusions leave
            fewer), and the history items dropped to fit the model.

        Raises:
            ValueError: an unknown item or user id, no history and no
                user, or `k` out of range.
        """
        k = self.check_k(self.k if k is None else k)
        history = [str(i) for i in history]
        for item in list(history) + [str(i) for i in exclude]:
            if not self.catalogue.has_item(item):
                raise ValueError(f"Unknown item {item!r}.")
        if user is not None and not self.catalogue.has_user(user):
            raise ValueError(f"Unknown user {user!r}.")
        if not history and user is None:
            raise ValueError("Give a history (item ids) or a user id.")
        kept, dropped = self.fit_history(history, user)
        prompt = self.history_prompt(kept, user)
        items = self.rank(prompt, k, set(history) | {str(i) for i in exclude})
        return items, dropped

    def generate(self, prompt):
        """The model's greedy continuation of `prompt`, without the prompt.

        Raises:
            ValueError: the prompt leaves no room to generate.
        """
        tokenizer = self.preprocessor.tokenizer
        with self.lock:
            out = self.model.generate(prompt, max_length=self.max_length,
                                      stop_token_ids="auto")
            echoed = tokenizer.detokenize(tokenizer(prompt))
        echoed = echoed.decode("utf-8") if isinstance(echoed, bytes) else str(echoed)
        out = out.decode("utf-8") if isinstance(out, bytes) else str(out)
        if out.startswith(echoed):
            out = out[len(echoed):]
        return tidy_generated(out)

    def describe(self, item_id):
        """What the model says about an item, from its soft tokens.

        Returns:
            The description (a string).
        """
        if not self.catalogue.has_item(item_id):
            raise ValueError(f"Unknown item {item_id!r}.")
        return self.generate(DESCRIBE_TEMPLATE.format(item=item_id))

    def warm_up(self):
        """Compiles what conversations use: one recommendation, one reply."""
        item = self.catalogue.item_ids[0]
        self.recommend([item], k=1)
        self.describe(item)
