"""Implicit-feedback alternating least squares (iALS), vectorised NumPy."""

import concurrent.futures
import contextlib
import os
import time
import warnings

import numpy as np

from ilm_keras.cf.embeddings import CFEmbeddings
from ilm_keras.cf.interaction_matrix import interaction_matrix


class _PaddedBlocks:
    """The rows of a CSR matrix grouped into padded blocks of similar length.

    Rows are sorted by their number of entries and cut, in that order, into
    blocks of at most `block_entries` padded entries (and at most `max_rows`
    rows); each block is padded to its longest row, so little is wasted.
    Per block: `rows` `[B]`, `cols` `[B, L]` (padding points at column 0) and
    `counts` `[B, L]` (0 on padding, so padding adds nothing to any sum).
    Dense `[B, L, k]` blocks let the solvers run as a few contiguous
    `einsum`s / batched products that stay in cache, instead of scattered
    per-entry updates.
    """

    def __init__(self, matrix, block_entries=4096, max_rows=None):
        lengths = np.diff(matrix.indptr)
        self.empty_rows = np.flatnonzero(lengths == 0)
        nonempty = np.flatnonzero(lengths > 0)
        order = nonempty[np.argsort(lengths[nonempty], kind="stable")]
        sorted_lengths = lengths[order]
        max_rows = len(order) if max_rows is None else max_rows
        self.blocks = []
        start = 0
        while start < len(order):
            # The longest run start..end-1 whose padded size fits (lengths
            # are sorted, so the padded size grows with `end`).
            lo, hi = start + 1, min(len(order), start + max_rows)
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if (mid - start) * sorted_lengths[mid - 1] <= block_entries:
                    lo = mid
                else:
                    hi = mid - 1
            rows = order[start:lo]
            self.blocks.append(
                self._pad(matrix, rows, int(sorted_lengths[lo - 1]))
            )
            start = lo

    @staticmethod
    def _pad(matrix, rows, width):
        lengths = np.diff(matrix.indptr)[rows]
        offsets = np.arange(width)
        valid = offsets[None, :] < lengths[:, None]
        flat = np.where(valid, matrix.indptr[rows][:, None] + offsets, 0)
        cols = np.where(valid, matrix.indices[flat], 0)
        counts = np.where(valid, matrix.data[flat], 0)
        return rows, cols, counts


def _row_ids(matrix):
    """Row index of every stored entry of a CSR matrix."""
    return np.repeat(
        np.arange(matrix.shape[0], dtype=np.int64), np.diff(matrix.indptr)
    )


def solve_exact(matrix, fixed, regularization, alpha):
    """Solves every row's least-squares problem exactly (float64).

    For row `u` with observed columns `I_u` and counts `r_ui`, the minimiser
    of `sum_i c_ui (p_ui - x.y_i)^2 + regularization * |x|^2` over all
    columns `i` (`p_ui = 1` if observed else 0, `c_ui = 1 + alpha * r_ui`) is

        x_u = (M + Uᵀ W U)⁻¹ Uᵀ c,   M = YᵀY + regularization I,

    with `U = Y_I` (the `L` observed rows of the fixed table), `W =
    diag(alpha r)` and `c = 1 + alpha r`. `M` is shared by all rows (the Gram
    trick). Rows are solved in padded blocks of similar length `L`:

    - `L >= k`: build `M + Uᵀ W U` (a batched `[k, L] @ [L, k]` product) and
      solve the `k x k` system;
    - `L < k` (and `regularization > 0`): by the Woodbury identity,
      `x = Vᵀ z` with `V = U M⁻¹` and `(I + W U Vᵀ) z = c`, an `L x L`
      system, much cheaper for the many short rows of sparse data.

    Rows without entries get their exact solution, 0.

    Args:
        matrix: CSR `[rows, cols]` counts.
        fixed: `[cols, k]` the other side's table.
        regularization: L2 weight.
        alpha: confidence slope.

    Returns:
        float64 array `[rows, k]`.
    """
    fixed = np.asarray(fixed, dtype=np.float64)
    k = fixed.shape[1]
    gram = fixed.T @ fixed + regularization * np.eye(k)
    gram_inverse = np.linalg.inv(gram) if regularization > 0 else None
    out = np.zeros((matrix.shape[0], k), dtype=np.float64)
    # At most 512 rows per block keeps the [rows, k, k] systems small.
    blocks = _PaddedBlocks(matrix, block_entries=16384, max_rows=512)
    for rows, cols, counts in blocks.blocks:
        observed = counts > 0
        ys = fixed[cols] * observed[..., None]  # [B, L, k], 0 on padding
        weights = alpha * counts.astype(np.float64)
        confidence = np.where(observed, 1.0 + weights, 0.0)
        width = cols.shape[1]
        if gram_inverse is not None and width < k:
            v = ys @ gram_inverse  # [B, L, k]
            system = np.eye(width) + weights[:, :, None] * (
                v @ ys.transpose(0, 2, 1)
            )
            z = np.linalg.solve(system, confidence[..., None])  # [B, L, 1]
            out[rows] = (v.transpose(0, 2, 1) @ z)[..., 0]
        else:
            lhs = gram + (ys.transpose(0, 2, 1) * weights[:, None, :]) @ ys
            rhs = np.einsum("bl,blk->bk", confidence, ys)
            out[rows] = np.linalg.solve(lhs, rhs[..., None])[..., 0]
    return out


# Block sizes of the CG solver, in bytes of gathered factors per block
# (padded entries x factors x 4). Measured on a 2-core Xeon with 2 MiB of L2
# per core (ML100K and Beauty, 64 factors): 1 MiB blocks stay in L2 across
# the CG steps and are fastest on one thread; with a thread pool, 4x larger
# blocks halve the GIL hand-offs between NumPy calls and win.
_BLOCK_BYTES = 1 << 20
_THREADED_BLOCK_BYTES = 4 << 20
# Threads help only when blocks hold many rows, i.e. rows are short: every
# CG step is a dozen NumPy calls on `[rows_in_block, k]` arrays, and with a
# few long rows per block those calls are too small to run concurrently
# (timed on 2 cores while choosing this threshold, not kept in a results
# file: ML100K, 72-103 entries per row: 1 thread 14 ms per iteration, 2
# threads 16 ms; Beauty, 7-13 entries per row: 59 ms vs 43 ms).
_THREADED_MAX_MEAN_ROW = 32


class _CGSide:
    """One side of the factorisation, blocked for the CG solver.

    Holds, per padded block, `(rows, cols, weights, confidence)` where
    `weights = alpha * counts` (`c - 1`) and `confidence = 1 + weights` on
    observed entries, both 0 on padding; they do not change during a fit.

    Args:
        matrix: CSR `[rows, cols]` counts (the rows are solved).
        alpha: confidence slope.
        factors: embedding dimension (sets the block size).
        threads: threads available; the side is solved with a thread pool
            only if `threads > 1` and its rows are short (see
            `_THREADED_MAX_MEAN_ROW`).
    """

    def __init__(self, matrix, alpha, factors, threads):
        lengths = np.diff(matrix.indptr)
        nonempty = max(int(np.count_nonzero(lengths)), 1)
        self.threaded = (
            threads > 1 and matrix.nnz / nonempty <= _THREADED_MAX_MEAN_ROW
        )
        block_bytes = _THREADED_BLOCK_BYTES if self.threaded else _BLOCK_BYTES
        padded = _PaddedBlocks(
            matrix, block_entries=max(256, block_bytes // (4 * factors))
        )
        self.empty_rows = padded.empty_rows
        alpha = np.float32(alpha)
        self.blocks = []
        for rows, cols, counts in padded.blocks:
            weights = alpha * counts.astype(np.float32)
            confidence = np.where(counts > 0, 1.0 + weights, 0.0)
            self.blocks.append(
                (rows, cols, weights, confidence.astype(np.float32))
            )


def _solve_cg(side, current, fixed, regularization, steps, pool=None):
    """A few conjugate-gradient steps on every row's system.

    Same systems as `solve_exact`, warm-started at `current` (float32,
    updated in place and returned); rows without entries get their exact
    solution, 0. A matrix-vector product needs the shared Gram matrix and
    two passes over the row's gathered factors, never a `k x k` matrix per
    row. Each block runs all its steps while its factors are in cache.
    Blocks are independent (disjoint rows), so `pool` (a thread pool; NumPy
    releases the GIL in its kernels) may run them concurrently with the same
    result.
    """
    k = fixed.shape[1]
    gram = fixed.T @ fixed + np.float32(regularization) * np.eye(
        k, dtype=np.float32
    )

    def solve_block(block):
        rows, cols, weights, confidence = block
        ys = np.take(fixed, cols, axis=0)  # [B, L, k]
        x = current[rows]
        # r = Yᵀ(c - W Y x) - G x; c = W = 0 on padding.
        dots = np.matmul(ys, x[:, :, None])[:, :, 0]
        r = np.matmul((confidence - weights * dots)[:, None, :], ys)[:, 0, :]
        r -= x @ gram
        p = r.copy()
        rs_old = np.einsum("ij,ij->i", r, r)
        for _ in range(steps):
            active = rs_old > 1e-20
            any_converged = not active.all()
            if any_converged and not active.any():
                break
            ap = p @ gram
            dots = np.matmul(ys, p[:, :, None])[:, :, 0]
            dots *= weights
            ap += np.matmul(dots[:, None, :], ys)[:, 0, :]
            step = _masked_ratio(
                rs_old, np.einsum("ij,ij->i", p, ap), active, any_converged
            )
            x += step * p
            r -= step * ap
            rs_new = np.einsum("ij,ij->i", r, r)
            p *= _masked_ratio(rs_new, rs_old, active, any_converged)
            p += r
            rs_old = rs_new
        current[rows] = x

    if pool is None or not side.threaded:
        for block in side.blocks:
            solve_block(block)
    else:
        for _ in pool.map(solve_block, side.blocks):
            pass
    current[side.empty_rows] = 0.0
    return current


def _masked_ratio(numerator, denominator, active, masked):
    """`numerator / denominator` as a column, 0 where not `active`.

    The mask is applied only if `masked` (some row has converged): rows
    whose residual vanished must not move, and their ratio may be 0 / 0.
    """
    if masked:
        numerator = np.where(active, numerator, 0.0)
        denominator = np.where(active, denominator, 1.0)
    return (numerator / denominator).astype(np.float32)[:, None]


class IALS:
    """Alternating least squares for implicit feedback (Hu, Koren, Volinsky).

    Minimises, over a user table `X` and an item table `Y`,

        sum over all (u, i) of c_ui (p_ui - x_u . y_i)^2
            + regularization (|X|^2 + |Y|^2)

    where `p_ui = 1` if user `u` interacted with item `i` (count
    `r_ui > 0`) and `0` otherwise, and the confidence is
    `c_ui = 1 + alpha * r_ui` (1 for every unobserved pair). Each half
    iteration solves all user rows (then all item rows) with the other side
    fixed, using the shared Gram matrix `YᵀY` so the cost scales with the
    number of interactions, not users x items.

    Two solvers:
    - `"cg"` (default): `cg_steps` conjugate-gradient steps per row,
      warm-started from the previous iteration (Takács et al. 2011; what the
      `implicit` package does), vectorised over all rows at once.
    - `"exact"`: every row solved exactly in float64 (`solve_exact`);
      slower per iteration, for small problems; `fold_in` always uses it.

    Relation to `implicit.als.AlternatingLeastSquares`: `implicit` uses
    confidence `c = alpha_implicit * r` (not `1 + alpha * r`); on binary data
    our `alpha` equals `alpha_implicit - 1`. Regularization is the same.

    Args:
        factors: embedding dimension.
        regularization: L2 weight on both tables (>= 0).
        alpha: confidence slope (>= 0).
        iterations: number of (user, item) alternations.
        solver: `"cg"` or `"exact"`.
        cg_steps: conjugate-gradient steps per half iteration (`"cg"` only).
        init_stddev: initial tables are normal with stddev
            `init_stddev / sqrt(factors)` (Rendle et al., iALS revisited).
        seed: seed of the initialisation; equal seeds give equal tables.
        num_threads: threads that solve blocks of rows concurrently in the
            `"cg"` solver (0: one per CPU core; 1: no thread pool). Only
            sides with short rows (<= 32 entries on average) use them, in
            larger blocks; results agree to float32 rounding.
        blas_threads: BLAS threads while fitting and folding in (via
            `threadpoolctl`). The solver makes many small matrix products,
            which run fastest single-threaded; a multithreaded OpenBLAS on a
            busy machine can be several times slower. `None` leaves BLAS as
            it is.

    Example:
    ```python
    model = IALS(factors=32, regularization=0.1, alpha=1.0, iterations=10)
    user_table, item_table = model.fit(train_sequences, num_items=1349)
    test_users = model.fold_in([history_of_user_0, history_of_user_1])
    scores = test_users @ item_table.T
    emb = model.to_embeddings(user_ids=data.user_ids, item_ids=data.item_ids)
    ```
    """

    def __init__(
        self,
        factors=64,
        regularization=0.05,
        alpha=1.0,
        iterations=15,
        solver="cg",
        cg_steps=3,
        init_stddev=0.1,
        seed=0,
        num_threads=0,
        blas_threads=1,
    ):
        if int(factors) != factors or factors < 1:
            raise ValueError(
                f"`factors` must be a positive int; got {factors}."
            )
        if not regularization >= 0:
            raise ValueError(
                f"`regularization` must be >= 0; got {regularization}."
            )
        if not alpha >= 0:
            raise ValueError(f"`alpha` must be >= 0; got {alpha}.")
        if int(iterations) != iterations or iterations < 1:
            raise ValueError(
                f"`iterations` must be a positive int; got {iterations}."
            )
        if solver not in ("cg", "exact"):
            raise ValueError(
                f"`solver` must be 'cg' or 'exact'; got {solver!r}."
            )
        if int(cg_steps) != cg_steps or cg_steps < 1:
            raise ValueError(
                f"`cg_steps` must be a positive int; got {cg_steps}."
            )
        if not init_stddev > 0:
            raise ValueError(f"`init_stddev` must be > 0; got {init_stddev}.")
        self.factors = int(factors)
        self.regularization = float(regularization)
        self.alpha = float(alpha)
        self.iterations = int(iterations)
        self.solver = solver
        self.cg_steps = int(cg_steps)
        self.init_stddev = float(init_stddev)
        self.seed = seed
        if int(num_threads) != num_threads or num_threads < 0:
            raise ValueError(
                f"`num_threads` must be an int >= 0; got {num_threads}."
            )
        self.num_threads = int(num_threads)
        self.blas_threads = blas_threads
        self.user_table = None
        self.item_table = None
        self.loss_history = []
        self.fit_seconds = None

    def get_config(self):
        return {
            "factors": self.factors,
            "regularization": self.regularization,
            "alpha": self.alpha,
            "iterations": self.iterations,
            "solver": self.solver,
            "cg_steps": self.cg_steps,
            "init_stddev": self.init_stddev,
            "seed": self.seed,
            "num_threads": self.num_threads,
            "blas_threads": self.blas_threads,
        }

    def _blas_limit(self):
        if self.blas_threads is None:
            return contextlib.nullcontext()
        try:
            import threadpoolctl
        except ImportError:
            warnings.warn(
                "`threadpoolctl` is not installed, so IALS cannot limit BLAS "
                "threads (`blas_threads`); fitting may be much slower on a "
                "busy machine. `pip install threadpoolctl` to fix.",
                stacklevel=3,
            )
            return contextlib.nullcontext()
        return threadpoolctl.threadpool_limits(self.blas_threads, "blas")

    def fit(
        self, interactions, num_users=None, num_items=None, compute_loss=False
    ):
        """Trains both tables from scratch.

        Args:
            interactions: one sequence of item indices per user (repeats
                count), or a `scipy.sparse` count matrix; see
                `ilm_keras.cf.interaction_matrix`.
            num_users: number of users (default: from `interactions`).
            num_items: number of items (required for sequences).
            compute_loss: if True, records the training objective after
                every iteration in `self.loss_history`.

        Returns:
            `(user_table, item_table)`, float32 `[num_users, factors]` and
            `[num_items, factors]`. Users without interactions get (near)
            zero rows.
        """
        with self._blas_limit():
            return self._fit(interactions, num_users, num_items, compute_loss)

    def _fit(self, interactions, num_users, num_items, compute_loss):
        start = time.perf_counter()
        user_items = interaction_matrix(interactions, num_users, num_items)
        if not user_items.nnz:
            raise ValueError(
                "No interactions to fit: every user's history is empty."
            )
        item_users = user_items.T.tocsr()
        item_users.sort_indices()
        rng = np.random.default_rng(self.seed)
        scale = self.init_stddev / np.sqrt(self.factors)
        shape_u = (user_items.shape[0], self.factors)
        shape_i = (user_items.shape[1], self.factors)
        users = (rng.standard_normal(shape_u) * scale).astype(np.float32)
        items = (rng.standard_normal(shape_i) * scale).astype(np.float32)
        user_side = item_side = None
        threads = self.num_threads or os.cpu_count() or 1
        if self.solver == "cg":
            user_side = _CGSide(user_items, self.alpha, self.factors, threads)
            item_side = _CGSide(item_users, self.alpha, self.factors, threads)
        self.loss_history = []
        with contextlib.ExitStack() as stack:
            pool = None
            if user_side is not None and (
                user_side.threaded or item_side.threaded
            ):
                pool = stack.enter_context(
                    concurrent.futures.ThreadPoolExecutor(threads)
                )
            for _ in range(self.iterations):
                users, items = self._iterate(
                    user_items,
                    item_users,
                    users,
                    items,
                    pool,
                    user_side,
                    item_side,
                )
                if compute_loss:
                    self.loss_history.append(
                        self._loss(user_items, users, items)
                    )
        if not (np.isfinite(users).all() and np.isfinite(items).all()):
            raise FloatingPointError(
                "iALS produced non-finite factors; increase `regularization`."
            )
        self.user_table, self.item_table = users, items
        self.fit_seconds = time.perf_counter() - start
        return users, items

    def _iterate(
        self,
        user_items,
        item_users,
        users,
        items,
        pool,
        user_side,
        item_side,
    ):
        """One alternation: users given items, then items given users."""
        if self.solver == "cg":
            users = _solve_cg(
                user_side, users, items, self.regularization, self.cg_steps, pool
            )
            items = _solve_cg(
                item_side, items, users, self.regularization, self.cg_steps, pool
            )
        else:
            users = solve_exact(
                user_items, items, self.regularization, self.alpha
            ).astype(np.float32)
            items = solve_exact(
                item_users, users, self.regularization, self.alpha
            ).astype(np.float32)
        return users, items

    def _loss(self, user_items, users, items):
        users64 = users.astype(np.float64)
        items64 = items.astype(np.float64)
        dots = np.einsum(
            "ij,ij->i",
            users64[_row_ids(user_items)],
            items64[user_items.indices],
        )
        confidence = 1.0 + self.alpha * user_items.data.astype(np.float64)
        # Every pair as if unobserved, then the observed pairs corrected.
        all_pairs = np.sum((users64.T @ users64) * (items64.T @ items64))
        observed = np.sum(confidence * (1.0 - dots) ** 2 - dots**2)
        penalty = self.regularization * (
            np.sum(users64**2) + np.sum(items64**2)
        )
        return float(all_pairs + observed + penalty)

    def loss(self, interactions, num_users=None, num_items=None):
        """The training objective of the current tables on `interactions`."""
        self._check_fitted()
        if num_items is None:
            num_items = self.item_table.shape[0]
        user_items = interaction_matrix(interactions, num_users, num_items)
        if user_items.shape[0] != self.user_table.shape[0]:
            raise ValueError(
                f"{user_items.shape[0]} users given; the model has "
                f"{self.user_table.shape[0]}."
            )
        return self._loss(user_items, self.user_table, self.item_table)

    def fold_in(self, histories):
        """Computes user vectors for new histories with the item table fixed.

        Each vector is the exact minimiser of that user's part of the
        training objective (one user half-step of ALS, solved exactly), so a
        test user is represented from `items[:-1]` even though training only
        saw `items[:-2]`.

        Args:
            histories: a list of item-index sequences (repeats count).

        Returns:
            float32 array `[len(histories), factors]`.

        Raises:
            ValueError: if a history is empty or refers to an unknown item.
        """
        self._check_fitted()
        histories = list(histories)
        if not histories:
            raise ValueError("`histories` is empty; nothing to fold in.")
        for n, history in enumerate(histories):
            if len(history) == 0:
                raise ValueError(
                    f"History {n} is empty; a user vector needs at least one "
                    "item."
                )
        matrix = interaction_matrix(
            histories, num_items=self.item_table.shape[0]
        )
        with self._blas_limit():
            users = solve_exact(
                matrix, self.item_table, self.regularization, self.alpha
            )
        return users.astype(np.float32)

    def to_embeddings(self, user_ids=None, item_ids=None):
        """Wraps the trained tables in a `CFEmbeddings` (method `"ials"`)."""
        self._check_fitted()
        return CFEmbeddings(
            user_table=self.user_table,
            item_table=self.item_table,
            user_ids=user_ids,
            item_ids=item_ids,
            method="ials",
            config=self.get_config(),
        )

    def _check_fitted(self):
        if self.item_table is None:
            raise ValueError("The model is not trained; call `fit` first.")
