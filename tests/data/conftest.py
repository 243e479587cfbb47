import os
from pathlib import Path

import pytest


def real_data_root():
    env = os.environ.get("RNNDROP_DATA")
    for cand in ([Path(env)] if env else []) + [Path(__file__).resolve().parents[3] / "shared" / "data"]:
        if (cand / "ptb" / "ptb.train.txt").is_file():
            return cand
    return None


@pytest.fixture
def real_root():
    root = real_data_root()
    if root is None:
        pytest.skip("real data sets not found (set RNNDROP_DATA or put ../shared/data beside the repo)")
    return root
