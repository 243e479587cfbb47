"""Shared helpers for the study tests."""
import argparse

import pytest


@pytest.fixture
def quick_args():
    """``quick_args(study, data, out, *extra)``: a study's parsed arguments for a --quick,
    one-thread, no-progress run on ``data`` writing to ``out``."""
    def make(study, data, out, *extra):
        p = argparse.ArgumentParser()
        study.add_arguments(p)
        return p.parse_args(["--data", str(data), "--out", str(out), "--quick", "--no-progress",
                             "--threads", "1", *extra])
    return make
