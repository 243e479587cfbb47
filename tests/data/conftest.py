import pytest


@pytest.fixture
def real_root(real_data):
    """The real-data root holding PTB (the data tests' sets), else skip."""
    return real_data("ptb/ptb.train.txt")
