"""What the CF benchmarks share: `implicit`'s ALS at our iALS objective.

Used by `cf_baselines.py` and `cf_scale.py`, so that both time the same
`implicit` configuration against `ilm_keras.cf.IALS`.
"""

import time

import threadpoolctl


def implicit_als(
    regularization, alpha, factors, iterations, seed, num_threads=0
):
    """`implicit`'s CPU ALS minimising the same objective as our `IALS`.

    `implicit`'s confidence is `alpha * r`, ours `1 + alpha * r`, so on
    binary data its alpha is ours + 1; the regularization is the same. Both
    run 3 conjugate-gradient steps per half iteration by default.

    Args:
        regularization: L2 weight (ours and theirs).
        alpha: OUR confidence slope; `implicit` gets `alpha + 1`.
        factors: embedding dimension.
        iterations: ALS iterations.
        seed: `implicit`'s `random_state`.
        num_threads: `implicit`'s own threads (0: one per core).

    Returns:
        An unfitted `implicit.cpu.als.AlternatingLeastSquares` (made with
        single-threaded BLAS, which its constructor checks for).
    """
    import implicit

    with threadpoolctl.threadpool_limits(1, "blas"):
        return implicit.cpu.als.AlternatingLeastSquares(
            factors=factors,
            regularization=regularization,
            alpha=alpha + 1.0,
            iterations=iterations,
            random_state=seed,
            num_threads=num_threads,
        )


def fit_implicit(model, matrix):
    """Fits `model` on the CSR `matrix`; returns the fit's wall seconds.

    BLAS runs single-threaded, as `implicit` asks (it parallelises over
    rows itself).
    """
    with threadpoolctl.threadpool_limits(1, "blas"):
        start = time.perf_counter()
        model.fit(matrix, show_progress=False)
        return time.perf_counter() - start
