"""Learning-rate schedules shared by decoder pretraining and phase 2."""

import keras


def warmup_cosine(learning_rate, total_steps, warmup_steps=0, final_fraction=0.0):
    """Linear warmup from 0, then cosine decay, as one Keras schedule.

    Args:
        learning_rate: float, the peak learning rate (reached after
            `warmup_steps`).
        total_steps: int, the optimizer steps of the whole run (warmup
            included); the rate reaches `final_fraction * learning_rate`
            there and stays.
        warmup_steps: int, steps of linear warmup (0: start at the peak).
        final_fraction: float in [0, 1], the end of the decay as a fraction
            of the peak.

    Returns:
        A `keras.optimizers.schedules.CosineDecay`.

    Example:
    ```python
    optimizer = keras.optimizers.AdamW(warmup_cosine(2e-3, 4000, 200))
    ```
    """
    total_steps = int(total_steps)
    if total_steps < 1:
        raise ValueError(f"`total_steps` must be >= 1; got {total_steps}.")
    if not learning_rate > 0:
        raise ValueError(f"`learning_rate` must be > 0; got {learning_rate}.")
    if not 0.0 <= final_fraction <= 1.0:
        raise ValueError(f"`final_fraction` must be in [0, 1]; got {final_fraction}.")
    warmup = min(max(int(warmup_steps), 0), total_steps - 1)
    if warmup == 0:
        return keras.optimizers.schedules.CosineDecay(
            learning_rate, decay_steps=total_steps, alpha=final_fraction
        )
    return keras.optimizers.schedules.CosineDecay(
        0.0,
        decay_steps=total_steps - warmup,
        alpha=final_fraction,
        warmup_target=learning_rate,
        warmup_steps=warmup,
    )
