"""Mean and standard error over seeds, shared by the benchmark reports."""

import numpy as np


def mean_and_se(values):
    """Mean and standard error over seeds (se 0 for a single seed)."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return values.mean(), 0.0
    return values.mean(), values.std(ddof=1) / np.sqrt(len(values))
