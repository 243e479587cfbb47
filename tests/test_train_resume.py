"""Interrupted runs resume the same trajectory, bit for bit: an interrupt (Ctrl-C, SIGTERM) at
any point of a step or of an epoch end, and a hard kill between any two writes, for every
dropout scheme and with variable-length BPTT. The subprocess version with real signals is in
test_crash_consistency.py."""
import random

import pytest
import torch

from lmrun import (LM_SCHEMES, QUIET, assert_same_run, assert_same_weights,
                   stopped_then_resumed, tiny_lm_config, write_lm_corpus)
from rnndrop import checkpoint as ckpt
from rnndrop import rundir
from rnndrop.data.text import load_corpus
from rnndrop.train import LMTrainer

STEP_POINTS = ("window", "forward", "backward", "clip", "commit")
EPOCH_POINTS = ("epoch_end", "best_saved")


class HardKill(BaseException):
    """Stands in for kill -9: not caught by the trainer, so nothing is saved on the way out."""


def _cfg(scheme: str):
    return tiny_lm_config(**LM_SCHEMES[scheme], **{"train.epochs": 2,
                                                   "train.checkpoint_every": 5,
                                                   "train.threads": 1})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return load_corpus(write_lm_corpus(tmp_path_factory.mktemp("resume") / "data", n_train=120),
                       layout="ptb")


def _counting_run(corpus, scheme, out):
    """The uninterrupted reference run; returns how often each hook point was reached."""
    counts = {}
    tr = LMTrainer(_cfg(scheme), corpus, out, **QUIET)
    tr.hook = lambda p: counts.__setitem__(p, counts.get(p, 0) + 1)
    tr.train()
    return counts


def _raise_at(point: str, k: int, exc):
    seen = [0]

    def hook(p):
        if p == point:
            seen[0] += 1
            if seen[0] == k:
                raise exc
    return hook


def _resume_to_the_end(corpus, scheme, out):
    tr = LMTrainer(_cfg(scheme), corpus, out, **QUIET)
    if (out / "last.pt").exists():
        tr.resume(out / "last.pt")
    tr.train()
    return tr


@pytest.mark.parametrize("scheme", list(LM_SCHEMES))
def test_interrupt_at_any_point_resumes_bit_for_bit(corpus, tmp_path, scheme):
    counts = _counting_run(corpus, scheme, tmp_path / "ref")
    rnd = random.Random(f"interrupt-{scheme}")
    for point in STEP_POINTS + EPOCH_POINTS:
        k = rnd.randint(1, counts[point])
        out = tmp_path / f"{point}-{k}"
        tr = LMTrainer(_cfg(scheme), corpus, out, **QUIET)
        tr.hook = _raise_at(point, k, KeyboardInterrupt)
        with pytest.raises(KeyboardInterrupt):
            tr.train()
        assert not list(out.glob("*.tmp"))
        _resume_to_the_end(corpus, scheme, out)
        assert_same_run(tmp_path / "ref", out)


@pytest.mark.parametrize("scheme", list(LM_SCHEMES))
def test_hard_kill_between_any_two_writes_resumes_bit_for_bit(corpus, tmp_path, scheme,
                                                             monkeypatch):
    """No checkpoint on the way out: the run restarts from the last periodic checkpoint, and the
    logs written after it (steps.jsonl before its checkpoint, metrics.jsonl after) are cut back
    to it or rebuilt from it."""
    counts = _counting_run(corpus, scheme, tmp_path / "ref")
    rnd = random.Random(f"kill-{scheme}")
    real_save, real_append = ckpt.save, rundir.append_lines
    cases = {
        # mid-step, long after a checkpoint: steps since the checkpoint are replayed
        "mid-step": dict(hook=("backward", rnd.randint(6, counts["backward"]))),
        # after the step log of a checkpoint reached the disk, before the checkpoint did
        "log-then-no-checkpoint": dict(save=("last.pt", rnd.randint(2, 6))),
        # epoch end: best.pt written, last.pt not yet
        "best-not-last": dict(hook=("best_saved", rnd.randint(1, 2))),
        # epoch end: last.pt written, its metrics.jsonl line not yet
        "checkpoint-then-no-metrics": dict(metrics=rnd.randint(1, 2)),
    }
    for name, case in cases.items():
        out = tmp_path / name
        calls = {"save": 0, "metrics": 0}

        def save(state, path, case=case, calls=calls):
            if "save" in case and path.name == case["save"][0]:
                calls["save"] += 1
                if calls["save"] == case["save"][1]:
                    raise HardKill
            return real_save(state, path)

        def append(path, lines, case=case, calls=calls):
            if "metrics" in case and path.name == "metrics.jsonl":
                calls["metrics"] += 1
                if calls["metrics"] == case["metrics"]:
                    raise HardKill
            return real_append(path, lines)

        monkeypatch.setattr(ckpt, "save", save)
        monkeypatch.setattr(rundir, "append_lines", append)
        tr = LMTrainer(_cfg(scheme), corpus, out, **QUIET)
        if "hook" in case:
            tr.hook = _raise_at(*case["hook"], HardKill)
        with pytest.raises(HardKill):
            tr.train()
        monkeypatch.setattr(ckpt, "save", real_save)
        monkeypatch.setattr(rundir, "append_lines", real_append)
        _resume_to_the_end(corpus, scheme, out)
        assert_same_run(tmp_path / "ref", out)


def test_stale_temp_files_of_a_killed_write_are_removed_on_resume(corpus, tmp_path):
    out = tmp_path / "run"
    tr = LMTrainer(_cfg("none"), corpus, out, **QUIET)
    tr.cfg.train.max_steps = 7
    tr.train()
    stale = out / "last.pt.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    other = out / "notes.tmp"                    # not ours: left alone
    other.write_text("x")
    _resume_to_the_end(corpus, "none", out)
    assert not stale.exists() and other.exists()


def test_duplicate_epoch_line_is_not_kept_after_resume(corpus, tmp_path):
    """A metrics line written but its checkpoint lost: the resumed log has each epoch once."""
    out = tmp_path / "run"
    tr = LMTrainer(_cfg("none"), corpus, out, **QUIET)
    tr.cfg.train.epochs = 1
    tr.train()
    first = (out / "metrics.jsonl").read_text()
    # What a kill between the metrics line of epoch 2 and its checkpoint leaves behind:
    with open(out / "metrics.jsonl", "a") as f:
        f.write(first.replace('"epoch": 1', '"epoch": 2'))
    tr = LMTrainer(_cfg("none"), corpus, out, **QUIET)
    tr.resume(out / "last.pt")
    tr.train()
    epochs = [l for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [int(l.split('"epoch": ')[1].split(",")[0]) for l in epochs] == [1, 2]


def test_throughput_after_an_interrupt_counts_the_time_before_it(corpus, tmp_path, monkeypatch):
    """The interrupt path saves the time spent since the last checkpoint with the tokens."""
    import rnndrop.train.base as train_mod
    clock = [0.0]
    monkeypatch.setattr(train_mod.time, "perf_counter", lambda: clock[0])

    def tick(point):
        if point == "commit":
            clock[0] += 1.0                  # every step takes one "second"

    cfg = _cfg("none")
    out = tmp_path / "run"
    tr = LMTrainer(cfg, corpus, out, **QUIET)
    tr.hook = lambda p: (tick(p), p == "commit" and tr.state.step == 8 and _kbi())
    with pytest.raises(KeyboardInterrupt):
        tr.train()
    es = ckpt.load(out / "last.pt")["train_state"]["epoch_stats"]
    assert es["clip"]["steps"] == 8 and es["seconds"] == pytest.approx(8.0)
    tr = LMTrainer(cfg, corpus, out, **QUIET)
    tr.resume(out / "last.pt")
    tr.hook = tick
    tr.train()
    rec = tr.state.history[0]
    steps = rec["step"]
    assert rec["epoch_seconds"] == pytest.approx(steps)      # one second a step, no more, no less


def _kbi():
    raise KeyboardInterrupt


def test_resume_with_the_wrong_size_names_the_config_values(corpus, tmp_path):
    out = tmp_path / "run"
    tr = LMTrainer(_cfg("none"), corpus, out, **QUIET)
    tr.cfg.train.max_steps = 3
    tr.train()
    cfg = _cfg("none")
    cfg.model.hidden_size = 12
    other = LMTrainer(cfg, corpus, out, **QUIET)
    with pytest.raises(ckpt.CheckpointError) as err:
        other.resume(out / "last.pt")
    msg = str(err.value)
    assert "model.hidden_size is 16 in the checkpoint and 12 here" in msg
    assert "Error(s) in loading" not in msg and "\n" not in msg


def test_checkpoint_with_missing_keys_is_a_clear_error(corpus, tmp_path):
    out = tmp_path / "run"
    tr = LMTrainer(_cfg("none"), corpus, out, **QUIET)
    tr.cfg.train.max_steps = 3
    tr.train()
    st = ckpt.load(out / "last.pt")
    del st["config"], st["format"]
    ckpt.save(st, tmp_path / "partial.pt")
    with pytest.raises(ckpt.CheckpointError, match="without 'config'"):
        LMTrainer(_cfg("none"), corpus, tmp_path / "r2", **QUIET).resume(tmp_path / "partial.pt")


def test_a_new_run_does_not_overwrite_an_old_one(corpus, tmp_path):
    out = tmp_path / "run"
    tr = LMTrainer(_cfg("none"), corpus, out, **QUIET)
    tr.cfg.train.max_steps = 3
    tr.train()
    before = (out / "last.pt").read_bytes()
    with pytest.raises(RuntimeError, match="already holds a run.*--resume"):
        LMTrainer(_cfg("none"), corpus, out, **QUIET).train()
    assert (out / "last.pt").read_bytes() == before
    assert torch.equal(ckpt.load(out / "last.pt")["model"]["decoder.bias"],
                       tr.model.state_dict()["decoder.bias"])


@pytest.mark.parametrize("scheme", ["variational", "zaremba"])
def test_resume_continues_the_same_trajectory(lm_corpus, tmp_path, scheme):
    over = {"model.scheme": scheme, "train.epochs": 2, "train.variable_bptt": "true"}
    if scheme == "variational":
        over.update({"model.dropout_embedding": 0.1, "model.dropout_hidden": 0.3,
                     "model.dropout_input": 0.3, "model.dropout_output": 0.3,
                     "model.tied_masks": "false", "train.weight_decay": 1e-4})
    else:
        over["model.dropout"] = 0.3
    full = LMTrainer(tiny_lm_config(**over), lm_corpus, tmp_path / "full", **QUIET)
    full.train()
    # Interrupted after 7 steps (mid-epoch 1), then resumed in a fresh trainer.
    resumed = stopped_then_resumed(lm_corpus, tmp_path / "part", over, 7)
    assert_same_weights(full, resumed)
    assert full.state.history[-1]["valid_ppl"] == resumed.state.history[-1]["valid_ppl"]


def test_vocabulary_mismatch_is_clear(tmp_path):
    d1 = write_lm_corpus(tmp_path / "d1")
    d2 = tmp_path / "d2"
    d2.mkdir()
    for s in ("train", "valid", "test"):
        (d2 / f"ptb.{s}.txt").write_text("completely different words <unk>\n" * 20)
    tr = LMTrainer(tiny_lm_config(**{"train.epochs": 1}), load_corpus(d1, layout="ptb"), tmp_path / "r",
                   **QUIET)
    tr.train()
    other = LMTrainer(tiny_lm_config(), load_corpus(d2, layout="ptb"), tmp_path / "r2", **QUIET)
    with pytest.raises(Exception, match="(?i)vocab"):
        other.resume(tmp_path / "r" / "last.pt")
