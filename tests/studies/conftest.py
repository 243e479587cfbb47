"""Shared helpers for the study tests."""
import pytest


@pytest.fixture
def quick_args():
    """``quick_args(study, data, out, *extra)``: a study module's parsed command line for a
    --quick, one-thread, no-progress run on ``data`` (None: a study on generated data) writing
    to ``out``; run it with ``args.func(args)``."""
    def make(study, data, out, *extra):
        argv = ["--out", str(out), "--quick", "--no-progress", "--threads", "1"]
        if data is not None:
            argv += ["--data", str(data)]
        return study.STUDY.parse_args([*argv, *extra])
    return make
