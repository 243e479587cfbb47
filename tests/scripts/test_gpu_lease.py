"""scripts/gpu_lease.sh --dry-run: the script that goes to a GPU lease runs here first, on the
CPU with tiny sizes, every phase (tests, both benchmarks, the three PTB recipes trained at once
and evaluated, the summary table, the packed logs)."""
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from lmrun import write_lm_corpus

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_lease.sh"


@pytest.mark.skipif(sys.platform == "win32", reason="a bash script")
def test_gpu_lease_dry_run_runs_every_phase(tmp_path):
    write_lm_corpus(tmp_path / "data" / "ptb")
    env = {**os.environ, "RNNDROP_DATA": str(tmp_path / "data"), "PYTHON": sys.executable,
           "OMP_NUM_THREADS": "1"}
    out = tmp_path / "lease"
    res = subprocess.run(["bash", str(SCRIPT), "--dry-run", str(out)], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    status = dict(l.split(" ", 1) for l in (out / "status.txt").read_text().splitlines())
    recipes = ("ptb-medium-zaremba", "ptb-medium-variational", "ptb-large-variational")
    phases = ["bench-lstm", "bench-lm-small"] + [f"{p}-{r}" for r in recipes for p in ("train", "eval")]
    for name in phases:                       # everything but the CUDA tests must have worked
        assert status[name].startswith("rc=0 "), (name, (out / "logs" / f"{name}.log").read_text())
    assert status["tests"].split()[0] in ("rc=0", "rc=5")      # all skipped / none on a CPU
    summary = (out / "summary.txt").read_text()
    for r in recipes:
        row = next(l for l in summary.splitlines() if l.startswith(r))
        epochs, steps, _, _, test, mc = row.split()[1:]
        assert int(steps) == 3                                 # train.max_steps=3
        assert float(test) > 1 and float(mc) > 1, row          # both evaluations ran
        assert (out / "runs" / r / "last.pt").is_file()
    with tarfile.open(out / "lease-logs.tar.gz") as tar:
        names = tar.getnames()
    assert "status.txt" in names and any(n.endswith("train-ptb-large-variational.log") for n in names)
