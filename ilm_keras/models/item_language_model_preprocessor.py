"""Text with `item_<id>` / `user_<id>` mentions -> ILM model inputs."""

import re
from itertools import pairwise

import keras
import keras_hub
import numpy as np

from ilm_keras.utils.errors import raise_call_errors_as_raised
from ilm_keras.utils.texts import to_python_strings

try:
    import tensorflow as tf
except ImportError:  # pragma: no cover - TF ships with keras-hub on Linux.
    tf = None

_ID_PATTERN = re.compile(r"^[A-Za-z0-9]+$")


def _label_width(count, multiple, limit):
    """`count` weighted positions rounded up to `multiple`, at most `limit`."""
    if int(multiple) != multiple or multiple < 1:
        raise ValueError(f"`multiple` must be an int >= 1; got {multiple}.")
    multiple = int(multiple)
    return int(min(-(-max(count, 1) // multiple) * multiple, limit))


@keras.saving.register_keras_serializable(package="ilm_keras")
class ItemLanguageModelPreprocessor(keras_hub.models.Preprocessor):
    """Tokenizes prompts that mention items and users, for `ItemLanguageModel`.

    Prompt text refers to items and users by their OpenP5-style names,
    `item_<id>` and `user_<id>` (e.g. `"user_12 watched item_1001 ,
    item_1002"`). Each mention keeps its text tokens and is followed by
    `num_soft_tokens` *soft-token slots* (paper §4.4: the item's embedding is
    appended right after its id text). The model fills those slots with the
    item encoder's output for that item (a user is a special item: same
    encoder, the user's CF vector).

    To place the slots exactly, the prompt is cut right after each mention
    and the pieces are tokenized separately. A prompt without mentions (or a
    model with `num_soft_tokens=0`, the text-only `none` variant) is tokenized
    in one piece, exactly as the LLM's own preprocessor would.

    Responses are plain text (the targets); mentions in responses get no soft
    tokens, since the model generates them as text.

    Outputs (`call` returns `(x, y, sample_weight)`; `generate_preprocess`
    returns `x`), where `S` is `sequence_length` and `M` is `max_mentions`:

    - `x["token_ids"]` int32 `[B, S]`: token ids; soft-token slots hold the
      pad id.
    - `x["padding_mask"]` bool `[B, S]`.
    - `x["soft_token_mask"]` bool `[B, S]`: True at soft-token slots.
    - `x["entity_ids"]` int32 `[B, M]`: for each mention in order, its row in
      the model's CF table (items first, `0..num_items-1`, then users,
      `num_items..num_items+num_users-1`); -1 pads unused mention slots.
    - `y` int32 `[B, S]`: the next token; `sample_weight` float32 `[B, S]`:
      1 on response tokens (the end token included), 0 elsewhere (with plain
      strings instead of prompts/responses: 1 on every real text token).

    Nothing is truncated: an example longer than `sequence_length`, a
    mention of an unknown id, or more than `max_mentions` mentions raises a
    `ValueError` naming the example.

    Args:
        tokenizer: a `keras_hub.tokenizers.Tokenizer` (the LLM's).
        item_ids: list of item ids (strings or ints, `[A-Za-z0-9]+`); item
            `item_ids[i]` is written `f"{item_prefix}{item_ids[i]}"` and is row
            `i` of the model's item CF table.
        user_ids: optional list of user ids, rows of the user CF table.
        cf_embeddings: optional `ilm_keras.cf.CFEmbeddings`: its ids in
            place of `item_ids` and `user_ids` (the rows of its tables, as
            the backbone built from the same object reads them).
        sequence_length: int. Padded length of the model inputs.
        max_mentions: int. Maximum number of item/user mentions per prompt
            (the static size of `entity_ids`).
        num_soft_tokens: int or None. Soft tokens per mention; set by
            `ItemLanguageModel` from its item encoder when None.
        item_prefix: string before item ids in text. Defaults to `"item_"`.
        user_prefix: string before user ids in text. Defaults to `"user_"`.
        add_start_token: bool. Prepend the tokenizer's start token (none is
            added when the tokenizer has no start token).
        add_end_token: bool. Append the tokenizer's end token to responses.
        item_texts: optional item catalogue: one text per item (title,
            description; `""` for none), aligned with `item_ids`, or a dict
            from item id to text. Saved with the preprocessor (and so in a
            preset), so a loaded model can name its items (`item_text`).
        loss_positions: bool. If True, `call` on prompt/response pairs
            returns the labels at weighted positions only, with
            `x["loss_positions"]` (see `select_loss_positions`), so that
            `ItemLanguageModel.fit` on pairs computes logits there only; `y`
            and `sample_weight` are then `[B, R]`. Plain strings (no
            responses; e.g. `predict`) keep every position.
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
    ```python
    preprocessor = ItemLanguageModelPreprocessor(
        tokenizer=tokenizer,
        item_ids=[1001, 1002, 1003],
        user_ids=[1, 2],
        sequence_length=64,
        max_mentions=8,
        num_soft_tokens=2,
    )
    x, y, sample_weight = preprocessor(
        {
            "prompts": ["user_1 watched item_1001 , item_1003 . next:"],
            "responses": ["item_1002"],
        }
    )
    ```
    """

    def __init__(
        self,
        tokenizer,
        item_ids=None,
        user_ids=None,
        sequence_length=256,
        max_mentions=32,
        num_soft_tokens=None,
        item_prefix="item_",
        user_prefix="user_",
        add_start_token=True,
        add_end_token=True,
        item_texts=None,
        loss_positions=False,
        cf_embeddings=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if cf_embeddings is not None:
            if item_ids is not None or user_ids is not None:
                raise ValueError(
                    "Pass either `cf_embeddings` or `item_ids` / `user_ids`, "
                    "not both."
                )
            item_ids, user_ids = cf_embeddings.item_ids, cf_embeddings.user_ids
        if item_ids is None:
            raise ValueError(
                "The item ids are missing: pass `item_ids` (one per row of "
                "the item CF table) or `cf_embeddings`."
            )
        self.tokenizer = tokenizer
        self.item_ids = self._check_ids(item_ids, "item_ids")
        self.user_ids = self._check_ids(
            [] if user_ids is None else user_ids, "user_ids"
        )
        if not item_prefix or not user_prefix or item_prefix == user_prefix:
            raise ValueError(
                "`item_prefix` and `user_prefix` must be distinct, non-empty "
                f"strings, got {item_prefix!r} and {user_prefix!r}."
            )
        self.item_prefix = item_prefix
        self.user_prefix = user_prefix
        self.sequence_length = int(sequence_length)
        self.max_mentions = int(max_mentions)
        self.num_soft_tokens = None if num_soft_tokens is None else int(num_soft_tokens)
        self.add_start_token = add_start_token
        self.add_end_token = add_end_token
        self.loss_positions = bool(loss_positions)
        self.item_texts = self._check_texts(item_texts)
        self._entity_rows = {}
        for i, item_id in enumerate(self.item_ids):
            self._entity_rows[item_prefix + item_id] = i
        for j, user_id in enumerate(self.user_ids):
            self._entity_rows[user_prefix + user_id] = len(self.item_ids) + j
        prefixes = "|".join(
            re.escape(p)
            for p in sorted([item_prefix, user_prefix], key=len, reverse=True)
        )
        # A mention is a prefix plus an alphanumeric id, not glued to a
        # preceding word character ("xitem_1" is not a mention).
        self._mention_re = re.compile(rf"(?<![A-Za-z0-9_])(?:{prefixes})[A-Za-z0-9]+")

    def build(self, input_shape=None):
        # All state is made in `__init__` (the tokenizer is built already).
        self.built = True

    @staticmethod
    def _check_ids(ids, name):
        ids = [str(i) for i in ids]
        for i in ids:
            if not _ID_PATTERN.match(i):
                raise ValueError(
                    f"`{name}` must be alphanumeric ids ([A-Za-z0-9]+); got {i!r}."
                )
        if len(set(ids)) != len(ids):
            seen, dups = set(), []
            for i in ids:
                if i in seen:
                    dups.append(i)
                seen.add(i)
            raise ValueError(f"`{name}` has duplicate ids: {dups[:10]}.")
        return ids

    def _check_texts(self, item_texts):
        """The catalogue as a list aligned with `item_ids` (or None)."""
        if item_texts is None:
            return None
        if isinstance(item_texts, dict):
            texts = {str(k): v for k, v in item_texts.items()}
            unknown = sorted(set(texts) - set(self.item_ids))
            if unknown:
                raise ValueError(
                    f"`item_texts` names {len(unknown)} item(s) not in "
                    f"`item_ids`, e.g. {unknown[:5]}."
                )
            item_texts = [texts.get(i, "") for i in self.item_ids]
        item_texts = list(item_texts)
        if len(item_texts) != len(self.item_ids):
            raise ValueError(
                f"`item_texts` has {len(item_texts)} texts for "
                f"{len(self.item_ids)} items; give one per item (or a dict)."
            )
        for i, text in enumerate(item_texts):
            if not isinstance(text, str):
                raise TypeError(
                    f"`item_texts[{i}]` (item {self.item_ids[i]}) must be a "
                    f"string, got {type(text).__name__}."
                )
        return item_texts

    def item_text(self, item):
        """The catalogue text of an item given by id (`1001`) or name.

        Raises:
            ValueError: an unknown item, or no catalogue (`item_texts`).
        """
        row = self.item_index(item)
        if self.item_texts is None:
            raise ValueError(
                "This preprocessor has no item catalogue (`item_texts`)."
            )
        return self.item_texts[row]

    # ------------------------------------------------------------------
    # Properties.
    # ------------------------------------------------------------------
    @property
    def num_items(self):
        return len(self.item_ids)

    @property
    def num_users(self):
        return len(self.user_ids)

    def _special_id(self, name):
        value = getattr(self.tokenizer, name, None)
        return None if value is None else int(value)

    @property
    def pad_token_id(self):
        pad = self._special_id("pad_token_id")
        return 0 if pad is None else pad

    @property
    def start_token_id(self):
        return self._special_id("start_token_id")

    @property
    def end_token_id(self):
        return self._special_id("end_token_id")

    def item_name(self, index):
        """The text of item row `index`, e.g. `"item_1001"`."""
        return self.item_prefix + self.item_ids[index]

    def item_index(self, item):
        """The row of an item given as its id (`1001`) or name (`item_1001`)."""
        name = str(item)
        if not name.startswith(self.item_prefix):
            name = self.item_prefix + name
        row = self._entity_rows.get(name)
        if row is None or row >= self.num_items:
            raise ValueError(f"Unknown item {item!r}: not in `item_ids`.")
        return row

    # ------------------------------------------------------------------
    # Tokenization.
    # ------------------------------------------------------------------
    def _tokenize(self, strings):
        """Tokenize a list of strings, one Python list of ints per string."""
        if not strings:
            return []
        out = self.tokenizer(strings)
        if hasattr(out, "to_list"):
            out = out.to_list()
        out = [np.asarray(t).reshape(-1).astype("int64").tolist() for t in out]
        return out

    def _split_prompts(self, prompts):
        """Cut each prompt after each mention; map mentions to table rows."""
        pieces, mentions = [], []
        for i, prompt in enumerate(prompts):
            cuts, rows = [], []
            for match in self._mention_re.finditer(prompt):
                name = match.group(0)
                row = self._entity_rows.get(name)
                if row is None:
                    self._raise_unknown(name, f"Prompt {i}", prompt)
                cuts.append(match.end())
                rows.append(row)
            n = self.num_soft_tokens or 0
            if n == 0:
                # Text only: tokenize naturally, in one piece.
                pieces.append([prompt])
            else:
                if len(rows) > self.max_mentions:
                    raise ValueError(
                        f"Prompt {i} mentions {len(rows)} items/users but "
                        f"`max_mentions` is {self.max_mentions}. Prompt: "
                        f"{prompt!r}"
                    )
                bounds = [0] + cuts + [len(prompt)]
                pieces.append([prompt[a:b] for a, b in pairwise(bounds)])
            mentions.append(rows)
        return pieces, mentions

    def _raise_unknown(self, name, where, text):
        kind = "item" if name.startswith(self.item_prefix) else "user"
        raise ValueError(
            f"{where} mentions unknown {kind} `{name}` (not in `{kind}_ids`). "
            f"Text: {text!r}"
        )

    def _check_responses(self, responses):
        """Responses are not laid out, but a target naming an item or user
        that is not in the tables is still a data error."""
        for i, response in enumerate(responses):
            for match in self._mention_re.finditer(response):
                if match.group(0) not in self._entity_rows:
                    self._raise_unknown(match.group(0), f"Response {i}", response)

    def _layout_prompts(self, prompts):
        """Token ids, soft flags and mention rows of each prompt (unpadded)."""
        if self.num_soft_tokens is None:
            raise ValueError(
                "`num_soft_tokens` is not set: attach this preprocessor to an "
                "`ItemLanguageModel` (which sets it from its item encoder) or "
                "pass `num_soft_tokens`."
            )
        pieces, mentions = self._split_prompts(prompts)
        flat = [p for row in pieces for p in row]
        tokens = self._tokenize(flat)
        n = self.num_soft_tokens
        # A tokenizer without a start token (e.g. SmolLM2's) gets none.
        start = self.start_token_id if self.add_start_token else None
        layouts, k = [], 0
        for row_pieces in pieces:
            ids = [] if start is None else [start]
            soft = [False] * len(ids)
            for j in range(len(row_pieces)):
                ids += tokens[k]
                soft += [False] * len(tokens[k])
                k += 1
                if n and j < len(row_pieces) - 1:
                    ids += [self.pad_token_id] * n
                    soft += [True] * n
            layouts.append((ids, soft))
        return layouts, mentions

    def _pad(self, rows, length, value, dtype):
        out = np.full((len(rows), length), value, dtype=dtype)
        for i, r in enumerate(rows):
            out[i, : len(r)] = r
        return out

    def _entity_array(self, mentions):
        width = self.max_mentions
        out = np.full((len(mentions), width), -1, dtype="int32")
        for i, rows in enumerate(mentions):
            rows = rows[:width] if not self.num_soft_tokens else rows
            out[i, : len(rows)] = rows
        return out

    def _pack(self, prompts, responses, sequence_length):
        """The numpy implementation of `call` (see the class docstring)."""
        layouts, mentions = self._layout_prompts(prompts)
        end = self.end_token_id if self.add_end_token else None
        if self.add_end_token and end is None:
            raise ValueError("`add_end_token=True` but the tokenizer has no end token.")
        if responses is not None:
            if len(responses) != len(prompts):
                raise ValueError(
                    f"Got {len(prompts)} prompts but {len(responses)} responses."
                )
            self._check_responses(responses)
            response_tokens = self._tokenize(responses)
        ids_rows, soft_rows, weight_rows = [], [], []
        for i, (ids, soft) in enumerate(layouts):
            if responses is None:
                ids = ids + ([] if end is None else [end])
                soft = soft + ([] if end is None else [False])
                weight = [0.0 if s else 1.0 for s in soft]
            else:
                tail = response_tokens[i] + ([] if end is None else [end])
                weight = [0.0] * len(ids) + [1.0] * len(tail)
                ids = ids + tail
                soft = soft + [False] * len(tail)
            if len(ids) > sequence_length + 1:
                raise ValueError(
                    f"Example {i} has {len(ids)} tokens (soft tokens, start "
                    f"and end tokens included) but `sequence_length` is "
                    f"{sequence_length} (room for {sequence_length + 1} "
                    "with the one-token shift). Raise `sequence_length` or "
                    "shorten the example."
                )
            if len(ids) == sequence_length + 1 and soft[-1]:
                # The shift would cut the last mention's soft tokens short.
                raise ValueError(
                    f"Example {i} ends with a mention's soft tokens at "
                    f"position {sequence_length + 1}, past the "
                    f"{sequence_length} input positions. Raise "
                    "`sequence_length` or shorten the example."
                )
            ids_rows.append(ids)
            soft_rows.append(soft)
            weight_rows.append(weight)
        length = sequence_length + 1
        token_ids = self._pad(ids_rows, length, self.pad_token_id, "int32")
        soft = self._pad(soft_rows, length, False, "bool")
        weight = self._pad(weight_rows, length, 0.0, "float32")
        mask = self._pad([[True] * len(r) for r in ids_rows], length, 0, "bool")
        x = {"token_ids": token_ids[:, :-1], "padding_mask": mask[:, :-1]}
        if self.num_soft_tokens:
            x["soft_token_mask"] = soft[:, :-1]
            x["entity_ids"] = self._entity_array(mentions)
        return x, token_ids[:, 1:], weight[:, 1:]

    def _generate_pack(self, prompts, sequence_length):
        layouts, mentions = self._layout_prompts(prompts)
        for i, (ids, _) in enumerate(layouts):
            if len(ids) >= sequence_length:
                raise ValueError(
                    f"Prompt {i} has {len(ids)} tokens (soft tokens and start "
                    f"token included) but the sequence length is "
                    f"{sequence_length}: no room left to generate. Raise "
                    "`max_length`/`sequence_length` or shorten the prompt."
                )
            if not ids:
                raise ValueError(f"Prompt {i} is empty (and there is no start token).")
        x = {
            "token_ids": self._pad(
                [ids for ids, _ in layouts],
                sequence_length,
                self.pad_token_id,
                "int32",
            ),
            "padding_mask": self._pad(
                [[True] * len(ids) for ids, _ in layouts],
                sequence_length,
                False,
                "bool",
            ),
        }
        if self.num_soft_tokens:
            x["soft_token_mask"] = self._pad(
                [soft for _, soft in layouts], sequence_length, False, "bool"
            )
            x["entity_ids"] = self._entity_array(mentions)
        return x

    # ------------------------------------------------------------------
    # Layer API.
    # ------------------------------------------------------------------
    def _split_inputs(self, x):
        if isinstance(x, dict):
            unknown = set(x) - {"prompts", "responses"}
            if unknown or "prompts" not in x:
                raise ValueError(
                    "Expected a dict with keys 'prompts' and (optionally) "
                    f"'responses', got keys {sorted(x)}."
                )
            return x["prompts"], x.get("responses")
        return x, None

    # Errors name the bad prompt; Keras would append the whole batch.
    __call__ = raise_call_errors_as_raised(keras_hub.models.Preprocessor.__call__)

    def call(self, x, y=None, sample_weight=None, sequence_length=None):
        if isinstance(x, dict) and "token_ids" in x:
            # Already preprocessed (e.g. `model.predict(x)` on the output of
            # this layer): pass through.
            return keras.utils.pack_x_y_sample_weight(x, y, sample_weight)
        if y is not None or sample_weight is not None:
            raise ValueError(
                "ItemLanguageModelPreprocessor computes `y` and "
                "`sample_weight` itself: pass {'prompts': ..., 'responses': "
                "...} (or plain strings) as `x` only."
            )
        sequence_length = sequence_length or self.sequence_length
        prompts, responses = self._split_inputs(x)
        if tf is not None and not tf.executing_eagerly():
            return self._call_in_graph(prompts, responses, sequence_length)
        prompts = to_python_strings(prompts, "prompts")
        if responses is not None:
            responses = to_python_strings(responses, "responses")
        x, y, sample_weight = self._pack_for_training(
            prompts, responses, sequence_length
        )
        return keras.utils.pack_x_y_sample_weight(x, y, sample_weight)

    def _pack_for_training(self, prompts, responses, sequence_length):
        """`_pack`, then `select_loss_positions` for pairs if
        `self.loss_positions`."""
        x, y, sample_weight = self._pack(prompts, responses, sequence_length)
        if self.loss_positions and responses is not None:
            return self.select_loss_positions(x, y, sample_weight)
        return x, y, sample_weight

    def _call_in_graph(self, prompts, responses, sequence_length):
        """Inside `tf.data`: run the numpy implementation per batch."""
        prompts = tf.convert_to_tensor(prompts)
        scalar = prompts.shape.rank == 0
        has_responses = responses is not None
        responses = tf.convert_to_tensor(responses) if has_responses else prompts

        keys = ["token_ids", "padding_mask"]
        dtypes = [tf.int32, tf.bool]
        widths = [sequence_length] * 2
        if self.num_soft_tokens:
            keys += ["soft_token_mask", "entity_ids"]
            dtypes += [tf.bool, tf.int32]
            widths += [sequence_length, self.max_mentions]
        # Labels: `[B, S]`, or `[B, R]` with R known per batch only.
        compact = self.loss_positions and has_responses
        label_width = None if compact else sequence_length
        if compact:
            keys.append("loss_positions")
            dtypes.append(tf.int32)
            widths.append(None)

        def fn(p, r):
            p = to_python_strings(p, "prompts")
            r = to_python_strings(r, "responses") if has_responses else None
            x, y, w = self._pack_for_training(p, r, sequence_length)
            return tuple(x[k] for k in keys) + (y, w)

        outs = tf.numpy_function(
            fn,
            [prompts, responses],
            dtypes + [tf.int32, tf.float32],
            stateful=False,
        )
        shaped = []
        for t, width in zip(outs, widths + [label_width] * 2):
            t.set_shape([None, width])
            shaped.append(t[0] if scalar else t)
        x = dict(zip(keys, shaped[:-2]))
        return keras.utils.pack_x_y_sample_weight(x, shaped[-2], shaped[-1])

    def loss_width(self, responses, multiple=8):
        """The label width `R` that fits every one of `responses`.

        `select_loss_positions` cuts a batch's labels to its widest response
        (response tokens plus the end token), rounded up to `multiple`: a
        batch whose responses are all among `responses` has at most this
        width. Padding every batch's labels to it (position 0, weight 0)
        leaves a single label shape, so a training loop compiles one step
        per sequence width rather than one per (width, label width).

        Args:
            responses: the responses (strings) batches may hold.
            multiple: int, as in `select_loss_positions`.

        Returns:
            int.

        Example:
        ```python
        preprocessor.loss_width(["item_12", "A long item description."])
        ```
        """
        distinct = sorted(set(to_python_strings(responses, "responses")))
        if not distinct:
            raise ValueError("`responses` is empty; nothing to measure.")
        end = 1 if self.add_end_token else 0
        longest = max(len(t) for t in self._tokenize(distinct)) + end
        return _label_width(longest, multiple, self.sequence_length)

    @staticmethod
    def select_loss_positions(x, y, sample_weight, multiple=8):
        """Keeps the labels where the loss counts, and says where they are.

        `ItemLanguageModel` then computes logits at those positions only
        (see its docstring). Every other position has weight 0, so a loss
        averaged over weighted tokens (the model's default) is unchanged.

        Args:
            x: the model inputs (dict of arrays `[B, S]`, ...).
            y: int array `[B, S]`, the next tokens.
            sample_weight: float array `[B, S]`.
            multiple: `R` (below) is rounded up to a multiple of this, so
                batches come in few shapes.

        Returns:
            `(x, y, sample_weight)`: `x` plus `"loss_positions"` int32
            `[B, R]`, `y` and `sample_weight` `[B, R]` at those positions,
            where `R` is the largest number of weighted positions in a row
            (rounded up, at most `S`). Each row lists its weighted positions
            in order, then padding (position 0, weight 0).

        Raises:
            ValueError: if the shapes disagree or a weight is negative or
                not finite.
        """
        y = np.asarray(y)
        weight = np.asarray(sample_weight, dtype="float32")
        if y.ndim != 2 or weight.shape != y.shape:
            raise ValueError(
                f"`y` {y.shape} and `sample_weight` {weight.shape} must both "
                "be [batch, sequence_length]."
            )
        if not np.all(np.isfinite(weight)) or np.any(weight < 0):
            raise ValueError("`sample_weight` must be finite and >= 0.")
        if y.shape[0] == 0:
            raise ValueError("The batch is empty; nothing to select.")
        kept = weight > 0
        counts = kept.sum(axis=1)
        width = _label_width(int(counts.max()), multiple, y.shape[1])
        # Weighted positions first (stable: in order), then the rest.
        order = np.argsort(~kept, axis=1, kind="stable")[:, :width]
        valid = np.arange(width)[None, :] < counts[:, None]
        positions = np.where(valid, order, 0).astype("int32")
        x = dict(x)
        x["loss_positions"] = positions
        y_kept = np.where(valid, np.take_along_axis(y, positions, 1), 0)
        w_kept = np.where(valid, np.take_along_axis(weight, positions, 1), 0.0)
        return x, y_kept.astype(y.dtype), w_kept.astype("float32")

    def generate_preprocess(self, x, sequence_length=None):
        """Prompts -> model inputs for generation (no end token, no labels).

        Args:
            x: a string, a list of strings, or `{"prompts": ...}`.
            sequence_length: the padded length (the total generation length).

        Returns:
            dict of numpy arrays (see the class docstring).
        """
        sequence_length = sequence_length or self.sequence_length
        prompts, _ = self._split_inputs(x)
        prompts = to_python_strings(prompts, "prompts")
        return self._generate_pack(prompts, sequence_length)

    def recommend_preprocess(self, x, length_multiple=16):
        """Prompts -> model inputs for ranking items (`ItemLanguageModel.recommend`).

        As `generate_preprocess`, but every row is padded only to the
        longest prompt (rounded up to `length_multiple`), not to
        `sequence_length`: the ranking appends the item's tokens after the
        prompt, so the width is what the prompts need. Slicing rows and
        then columns up to `max(lengths[rows])` gives a batch of its own.

        Args:
            x: a string, a list of strings, or `{"prompts": ...}`.
            length_multiple: int, the padded width's multiple.

        Returns:
            dict of numpy arrays: `token_ids`, `padding_mask` (and
            `soft_token_mask`, `entity_ids` when items get soft tokens), as
            in the class docstring, `[B, W]`, plus `lengths` int32 `[B]`
            (each prompt's tokens, soft and start tokens included).

        Raises:
            ValueError: a prompt longer than `sequence_length`, an unknown
                mention, or an empty prompt.

        Example:
        ```python
        x = preprocessor.recommend_preprocess(["user_1 watched item_1001 ."])
        x["lengths"]  # array([...], dtype=int32)
        ```
        """
        prompts, _ = self._split_inputs(x)
        prompts = to_python_strings(prompts, "prompts", allow_blank=False)
        layouts, mentions = self._layout_prompts(prompts)
        lengths = np.array([len(ids) for ids, _ in layouts], dtype="int32")
        for i, n in enumerate(lengths):
            if n > self.sequence_length:
                raise ValueError(
                    f"Prompt {i} has {n} tokens (soft and start tokens "
                    "included), longer than the preprocessor's "
                    f"sequence_length={self.sequence_length}."
                )
            if n == 0:
                raise ValueError(f"Prompt {i} is empty (and there is no start token).")
        width = _label_width(int(lengths.max()), length_multiple, np.inf)
        x = {
            "token_ids": self._pad(
                [ids for ids, _ in layouts], width, self.pad_token_id, "int32"
            ),
            "padding_mask": self._pad(
                [[True] * n for n in lengths], width, False, "bool"
            ),
        }
        if self.num_soft_tokens:
            x["soft_token_mask"] = self._pad(
                [soft for _, soft in layouts], width, False, "bool"
            )
            x["entity_ids"] = self._entity_array(mentions)
        x["lengths"] = lengths
        return x

    def response_token_ids(self, responses):
        """Token ids of responses exactly as training lays them out.

        Each response is tokenized on its own and followed by the end token
        when `add_end_token` (e.g. the item names of the `recommend()`
        trie, `ItemLanguageModel.item_trie`).

        Args:
            responses: a list of strings.

        Returns:
            A list of lists of ints, one per response.

        Example:
        ```python
        preprocessor.response_token_ids(["item_1001", "item_1002"])
        ```
        """
        responses = to_python_strings(responses, "responses")
        rows = self._tokenize(responses)
        if self.add_end_token:
            if self.end_token_id is None:
                raise ValueError(
                    "`add_end_token=True` but the tokenizer has no end token."
                )
            rows = [r + [self.end_token_id] for r in rows]
        return rows

    def generate_postprocess(self, x):
        """Generated token ids -> strings, dropping prompt soft tokens,
        padding and special tokens."""
        token_ids = keras.ops.convert_to_numpy(x["token_ids"])
        keep = keras.ops.convert_to_numpy(x["padding_mask"]).astype(bool)
        if "soft_token_mask" in x:
            soft = keras.ops.convert_to_numpy(x["soft_token_mask"]).astype(bool)
            keep &= ~soft
        special = set(getattr(self.tokenizer, "special_token_ids", []) or [])
        rows = [
            [int(t) for t, k in zip(ids, kk) if k and int(t) not in special]
            for ids, kk in zip(token_ids, keep)
        ]
        out = []
        for row in rows:
            text = self.tokenizer.detokenize([row])[0] if row else ""
            out.append(text.decode("utf-8") if isinstance(text, bytes) else str(text))
        return out

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "item_ids": list(self.item_ids),
                "user_ids": list(self.user_ids),
                "sequence_length": self.sequence_length,
                "max_mentions": self.max_mentions,
                "num_soft_tokens": self.num_soft_tokens,
                "item_prefix": self.item_prefix,
                "user_prefix": self.user_prefix,
                "add_start_token": self.add_start_token,
                "add_end_token": self.add_end_token,
                "item_texts": self.item_texts,
                "loss_positions": self.loss_positions,
            }
        )
        return config
