"""Strict numerics for the whole suite: warnings are errors (pyproject), JAX x64 available and
JAX dtype promotion strict, so a silent float64 -> float32 mix shows up as a failure."""

from __future__ import annotations

import importlib.util

import pytest

if importlib.util.find_spec("jax") is not None:
    import jax

    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_numpy_dtype_promotion", "strict")


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(1234)


@pytest.fixture(scope="module")
def torch_one_thread():
    """Performance only: one torch intra-op thread for a module (``pytestmark = pytest.mark.usefixtures(
    "torch_one_thread")``). The test machine is shared, and 2 OpenMP threads on 2 busy cores turn each
    tiny matrix product into milliseconds of waiting."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
