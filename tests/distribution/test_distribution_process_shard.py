"""Tests for `process_shard` and `make_phase1_dataset`'s per-process rows
(in one process: the processes' rows must join into the whole batch)."""

import numpy as np
import pytest

from ilm_keras.distribution import process_shard
from tiny_models import phase1_dataset
from tiny_models import phase1_problem


def _batches(dataset, count):
    return [{k: np.asarray(v) for k, v in batch.items()}
            for batch in dataset.take(count)]


@pytest.mark.parametrize("num_processes", [2, 4])
def test_each_process_rows_join_into_the_whole_batch(num_processes):
    problem = phase1_problem()
    # Every kind of batch (item-text, item-item, user-item, in turn).
    whole = _batches(phase1_dataset(problem, "all", batch_size=8), 6)
    built = [_batches(phase1_dataset(problem, "all", batch_size=8,
                                     num_processes=num_processes,
                                     process_id=p), 6)
             for p in range(num_processes)]
    sliced = [_batches(process_shard(phase1_dataset(problem, "all", 8),
                                     num_processes, p), 6)
              for p in range(num_processes)]
    for parts in (built, sliced):
        for step, expected in enumerate(whole):
            for key, value in expected.items():
                joined = np.concatenate([part[step][key] for part in parts])
                np.testing.assert_array_equal(joined, value, err_msg=key)


def test_bad_process_arguments():
    problem = phase1_problem()
    with pytest.raises(ValueError, match="does not divide into 3 processes"):
        phase1_dataset(problem, "it", batch_size=8, num_processes=3)
    with pytest.raises(ValueError, match="process_id"):
        phase1_dataset(problem, "it", batch_size=8, num_processes=2,
                       process_id=2)
    with pytest.raises(ValueError, match="process_id"):
        process_shard(phase1_dataset(problem, "it", 8), 2, 5)
