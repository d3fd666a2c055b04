"""Shared test settings."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_intra_op_thread():
    """Every test uses tiny tensors: one intra-op thread is faster than two on a 2-core machine
    (measured 2-4x on the coding-rate and weights tests). Restored at the end of the session."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
