"""Shared test settings."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """Run every test on one torch thread: the tensors here are small, where a second thread
    costs more in wake-ups than it gains, and the CI machine has 2 cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
