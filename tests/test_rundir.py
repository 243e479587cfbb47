"""The run directory: one run at a time, logs cut back to their checkpoint."""
import json
import subprocess
import sys
import time

import pytest

from lmrun import QUIET, tiny_lm_config
from rnndrop import rundir
from rnndrop.train import LMTrainer

HOLD = ("import sys, time; from rnndrop.rundir import RunLock; l = RunLock(sys.argv[1]).acquire();"
        " print('held', flush=True); time.sleep(60)")


@pytest.fixture
def holder(tmp_path):
    """Another live process holding the lock on ``tmp_path / 'run'``."""
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "run")],
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    yield p
    p.kill()
    p.wait()


def test_second_run_into_a_directory_in_use_names_the_pid(tmp_path, holder, lm_corpus):
    with pytest.raises(rundir.RunDirectoryBusy, match=f"in use by PID {holder.pid}"):
        rundir.RunLock(tmp_path / "run").acquire()
    tr = LMTrainer(tiny_lm_config(**{"train.max_steps": 2}), lm_corpus, tmp_path / "run", **QUIET)
    with pytest.raises(rundir.RunDirectoryBusy):
        tr.train()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".lock"]  # nothing written


def test_lock_of_a_killed_run_is_taken_over(tmp_path, holder):
    holder.kill()
    holder.wait()
    with rundir.RunLock(tmp_path / "run") as lock:
        assert lock.path.read_text().split()[0] == str(__import__("os").getpid())
    assert not lock.path.exists()            # released: removed


def test_stale_pid_file_is_taken_over(tmp_path, monkeypatch):
    """Without flock (non-POSIX), a PID file whose process is gone is stale."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / rundir.LOCK_NAME).write_text(f"{dead.pid}\n")
    monkeypatch.setattr(rundir, "fcntl", None)
    with rundir.RunLock(tmp_path / "run"):
        pass
    me = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / "run" / rundir.LOCK_NAME).write_text(f"{me.pid}\n")
        with pytest.raises(rundir.RunDirectoryBusy, match=f"PID {me.pid}"):
            rundir.RunLock(tmp_path / "run").acquire()
    finally:
        me.kill()
        me.wait()


def test_lock_is_released_after_training(tmp_path, lm_corpus):
    out = tmp_path / "run"
    LMTrainer(tiny_lm_config(**{"train.max_steps": 2}), lm_corpus, out, **QUIET).train()
    assert not (out / rundir.LOCK_NAME).exists()
    with rundir.RunLock(out):                      # free again
        pass


def test_truncate_steps_keeps_what_the_checkpoint_covers(tmp_path):
    path = tmp_path / "steps.jsonl"
    lines = [json.dumps({"step": i, "loss": 1.0}) for i in range(1, 8)]
    path.write_text("\n".join(lines) + '\n{"step": 8, "lo')        # a torn last line
    assert rundir.truncate_steps(path, 5) == 3
    assert [json.loads(l)["step"] for l in path.read_text().splitlines()] == [1, 2, 3, 4, 5]
    assert rundir.truncate_steps(path, 5) == 0


def test_rewrite_metrics_matches_the_history(tmp_path):
    path = tmp_path / "metrics.jsonl"
    history = [{"epoch": 1, "valid_ppl": 9.0}, {"epoch": 2, "valid_ppl": 8.0}]
    path.write_text(json.dumps(history[0]) + "\n" + json.dumps(history[0]) + "\n")
    rundir.rewrite_metrics(path, history)
    assert [json.loads(l) for l in path.read_text().splitlines()] == history
    mtime = path.stat().st_mtime_ns
    time.sleep(0.01)
    rundir.rewrite_metrics(path, history)          # already right: not rewritten
    assert path.stat().st_mtime_ns == mtime
