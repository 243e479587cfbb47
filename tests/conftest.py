"""Shared test settings."""
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread():
    """Run every test on one torch thread: the tensors here are small, where a second thread
    costs more in wake-ups than it gains, and the CI machine has 2 cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def real_data_root(*marks: str):
    """The real-data root ($RNNDROP_DATA, else ../shared/data beside the repository) that holds
    one of ``marks`` (paths relative to the root), or None."""
    env = os.environ.get("RNNDROP_DATA")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if any((cand / m).exists() for m in marks):
            return cand
    return None


@pytest.fixture
def real_data():
    """``real_data(*marks)``: the real-data root holding one of ``marks``; skips the test when
    there is none."""
    def find(*marks: str) -> Path:
        root = real_data_root(*marks)
        if root is None:
            pytest.skip(f"real data not found ({' or '.join(marks)} under $RNNDROP_DATA or "
                        f"../shared/data beside the repo)")
        return root
    return find


@pytest.fixture
def lm_corpus(tmp_path):
    """A tiny PTB-layout corpus (``lmrun.write_lm_corpus``), loaded."""
    from lmrun import write_lm_corpus
    from rnndrop.data.text import load_corpus
    return load_corpus(write_lm_corpus(tmp_path / "data"), layout="ptb")
