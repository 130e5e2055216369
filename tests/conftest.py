"""Shared test settings: tiny models, fixed seeds, the backend in the header.

Every test runs with a fixed seed (0). `ILM_TEST_SEED=<n>` reruns the suite
under another seed; the tests that assert learning ("a loss falls", "ranks
better than chance") take their data, model and shuffle seeds from it, which
is how their margins were checked over several seeds.
"""

import os

import keras
import numpy as np
import pytest

TEST_SEED = int(os.environ.get("ILM_TEST_SEED", "0"))


def pytest_report_header(config):
    return f"keras backend: {keras.backend.backend()}; ILM_TEST_SEED={TEST_SEED}"


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(TEST_SEED)
    np.random.seed(TEST_SEED)
    yield


@pytest.fixture(scope="session")
def seed():
    """The seed of a learning test's data, model and shuffles."""
    return TEST_SEED
