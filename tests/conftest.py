"""Shared test settings: tiny models, fixed seeds, the backend in the header."""

import keras
import numpy as np
import pytest


def pytest_report_header(config):
    return f"keras backend: {keras.backend.backend()}"


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)
    np.random.seed(0)
    yield
