"""Several processes, one run (torchrun / DistributedDataParallel), on CPU with gloo: two ranks
at global batch B make the single-process updates at batch B; runs with dropout repeat bit for
bit; a stopped or interrupted run resumes the uninterrupted trajectory; MC-dropout evaluation is
the single-process one; a killed rank stops the other with one line; a checkpoint of another
world size is refused with one line. The ranks are forked from the test process (distrun.py),
once through the real torchrun."""
import json
import shutil
import os
import signal
import time

import pytest
import torch

from distrun import RECIPE, cli_args, fork_ranks, join, run_forked, torchrun
from lmrun import QUIET, assert_same_run, tiny_lm_config, write_lm_corpus
from rnndrop import checkpoint as ckpt
from rnndrop import distributed
from rnndrop.data.text import batchify, load_corpus
from rnndrop.evaluate import perplexity
from rnndrop.runs import load_run
from rnndrop.train import LMTrainer, default_mc_batch

# Dropout 0, variable-length BPTT (the ranks must draw the same lengths), mid-epoch checkpoints
# (each one gathers the ranks' states), stopped mid-epoch so that last.pt holds hidden states.
P0 = {"train.variable_bptt": "true", "train.checkpoint_every": 10, "train.max_steps": 25}
# The fast variational LSTM with every mask, MC-dropout final evaluation.
PV = {"model.scheme": "variational", "model.dropout_embedding": 0.1, "model.dropout_input": 0.2,
      "model.dropout_hidden": 0.3, "model.dropout_output": 0.2, "model.tied_masks": "false",
      "train.epochs": 1, "train.checkpoint_every": 7, "train.mc_samples": 2}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    data = write_lm_corpus(root / "data", n_train=150)
    recipe = root / "tiny.toml"
    recipe.write_text(RECIPE)
    return root, data, recipe


@pytest.fixture(scope="module")
def p0_runs(setup):
    """The same dropout-free run as one process and as two, at the same global batch."""
    root, data, recipe = setup
    run_forked(cli_args(recipe, data, root / "p0-one", P0), 1, root / "logs" / "p0-one")
    run_forked(cli_args(recipe, data, root / "p0-two", P0), 2, root / "logs" / "p0-two")
    return root / "p0-one", root / "p0-two"


@pytest.fixture(scope="module")
def variational_run(setup):
    """The reference two-process run with dropout, uninterrupted."""
    root, data, recipe = setup
    run_forked(cli_args(recipe, data, root / "pv-a", PV), 2, root / "logs" / "pv-a")
    return root / "pv-a"


def _steps(run_dir):
    return [json.loads(line) for line in (run_dir / "steps.jsonl").read_text().splitlines()]


def _same_ranks(a_dir, b_dir):
    a, b = (ckpt.load(d / "last.pt")["ranks"] for d in (a_dir, b_dir))
    assert [r["position"] for r in a] == [r["position"] for r in b]
    for ra, rb in zip(a, b):
        assert torch.equal(ra["rng"]["torch"], rb["rng"]["torch"])
        assert torch.equal(ra["rng"]["bptt"], rb["rng"]["bptt"])


def _wait_for(rank, text, timeout=60.0):
    end = time.monotonic() + timeout
    while text not in rank.output:
        assert rank.proc.is_alive() and time.monotonic() < end, rank.output
        time.sleep(0.02)


def test_a_single_process_initialises_no_process_group():
    assert "WORLD_SIZE" not in os.environ
    with distributed.process_group("cpu", 5.0) as world:
        assert world == distributed.World() and not world.distributed
        assert not torch.distributed.is_initialized()


def test_two_processes_make_the_single_process_updates_at_the_same_global_batch(p0_runs):
    one, two = p0_runs
    a, b = _steps(one), _steps(two)
    assert len(a) == len(b) == 25
    for x, y in zip(a, b):
        assert y["step"] == x["step"]
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-5, abs=1e-6)
        assert y["grad_norm"] == pytest.approx(x["grad_norm"], rel=1e-5, abs=1e-6)
        assert y["clipped"] == x["clipped"]
    A, B = ckpt.load(one / "last.pt"), ckpt.load(two / "last.pt")
    assert (A["world_size"], B["world_size"], len(B["ranks"])) == (1, 2, 2)
    for k, w in A["model"].items():
        torch.testing.assert_close(B["model"][k], w, rtol=1e-5, atol=1e-5, msg=k)
    # the checkpoint's hidden state is the global one: all B streams in the global order
    assert A["hidden"] is not None
    for h1, h2 in zip(A["hidden"], B["hidden"]):
        assert h2.shape == h1.shape == (2, 4, 16)
        torch.testing.assert_close(h2, h1, rtol=1e-5, atol=1e-5)
    for k in ("position", "step", "epoch"):
        assert B["train_state"][k] == A["train_state"][k]
    # running statistics over the global batch: the same tokens and mean loss
    ea, eb = A["train_state"]["epoch_stats"], B["train_state"]["epoch_stats"]
    assert eb["tokens"] == ea["tokens"] and eb["loss"] == pytest.approx(ea["loss"], rel=1e-5)
    assert eb["clip"]["norm_sum"] == pytest.approx(ea["clip"]["norm_sum"], rel=1e-5)
    # one generator of window lengths for all ranks; each rank its own dropout generator
    r0, r1 = B["ranks"]
    assert torch.equal(r0["rng"]["bptt"], r1["rng"]["bptt"])
    assert torch.equal(r0["rng"]["bptt"], A["rng"]["bptt"])
    assert not torch.equal(r0["rng"]["torch"], r1["rng"]["torch"])


@pytest.mark.slow      # ~20 s: torchrun and its two workers each import torch
def test_dropout_runs_repeat_bit_for_bit_under_torchrun(setup, variational_run):
    root, data, recipe = setup
    res = torchrun(cli_args(recipe, data, root / "pv-b", PV), 2)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("final:") == 1 and res.stdout.count("epoch   1 |") == 1  # rank 0
    assert_same_run(variational_run, root / "pv-b")
    _same_ranks(variational_run, root / "pv-b")
    final = [json.loads((d / "final.json").read_text()) for d in (variational_run, root / "pv-b")]
    assert final[0] == final[1]
    rec = json.loads((variational_run / "metrics.jsonl").read_text().splitlines()[0])
    assert rec["world_size"] == 2
    # the masks did act: the rank-0 training loss differs from a dropout-free evaluation
    assert "test_ppl_mc" in final[0] and final[0]["test_ppl_mc"] != final[0]["test_ppl"]


def test_mc_dropout_test_perplexity_is_the_single_process_one(setup, variational_run):
    _, data, _ = setup
    final = json.loads((variational_run / "final.json").read_text())
    run = load_run(variational_run / "best.pt", corpus=True, data_dir=data)
    t = run.config.train
    test = batchify(run.corpus.test, t.eval_batch_size)
    assert final["test_ppl"] == pytest.approx(perplexity(run.model, test, t.bptt), rel=1e-6)
    torch.manual_seed(t.seed)
    mc = perplexity(run.model, test, t.bptt, t.mc_samples, mc_batch=default_mc_batch(run.model, t))
    assert final["test_ppl_mc"] == pytest.approx(mc, rel=1e-6)


def test_stopped_and_resumed_under_two_processes_is_the_uninterrupted_run(setup, variational_run):
    root, data, recipe = setup
    out = root / "pv-c"
    run_forked(cli_args(recipe, data, out, {**PV, "train.max_steps": 10}), 2, root / "logs" / "c1")
    st = ckpt.load(out / "last.pt")
    assert st["train_state"]["step"] == 10 and st["hidden"] is not None
    run_forked(cli_args(recipe, data, out, PV, resume=True), 2, root / "logs" / "c2")
    assert_same_run(variational_run, out)
    _same_ranks(variational_run, out)
    assert (out / "final.json").read_text() == (variational_run / "final.json").read_text()


def test_sigterm_on_one_rank_stops_both_after_one_step_and_resumes(setup, variational_run):
    root, data, recipe = setup
    out = root / "pv-term"
    ranks = fork_ranks(cli_args(recipe, data, out, {**PV, "train.log_every": 1}), 2,
                       root / "logs" / "term")
    _wait_for(ranks[0], "| step 4 |")
    os.kill(ranks[1].proc.pid, signal.SIGTERM)
    join(ranks, 60)
    assert [r.returncode for r in ranks] == [130, 130], [r.output for r in ranks]
    st = ckpt.load(out / "last.pt")
    assert 4 <= st["train_state"]["step"] < len(_steps(variational_run))
    assert [r["step"] for r in st["ranks"]] == [st["train_state"]["step"]] * 2
    run_forked(cli_args(recipe, data, out, PV, resume=True), 2, root / "logs" / "term2")
    assert_same_run(variational_run, out)
    _same_ranks(variational_run, out)


@pytest.mark.parametrize("victim, how", [(1, "SIGKILL"), (0, "SIGKILL"), (1, "SIGSTOP")])
def test_a_killed_or_hung_rank_stops_the_other_with_one_line(setup, victim, how):
    """Killed: the other rank's collective fails at once; hung (stopped): it times out after
    train.dist_timeout. Rank 0, which holds the rendezvous store, may be the one killed."""
    root, data, recipe = setup
    over = {"train.epochs": 100, "train.log_every": 1, "train.dist_timeout": 3}
    name = f"{how}{victim}"
    ranks = fork_ranks(cli_args(recipe, data, root / name, over), 2, root / "logs" / name)
    try:
        _wait_for(ranks[0], "| step 3 |")
        os.kill(ranks[victim].proc.pid, getattr(signal, how))
        t0 = time.monotonic()
        other = ranks[1 - victim]
        join([other], 45)
        waited = time.monotonic() - t0
    finally:
        for r in ranks:
            if r.proc.is_alive():
                r.proc.kill()
        join(ranks, 5)
    assert other.returncode == 2, other.output
    assert waited < 30, (waited, other.output)   # timeout 3 s; slack for a loaded machine
    # our one line (torch's own C++ warnings, if any, are not ours to count)
    errors = [line for line in other.output.splitlines() if line.startswith("rnndrop")]
    assert len(errors) == 1, other.output
    assert errors[0].startswith(f"rnndrop train: error: rank {1 - victim} of 2: lost the other "
                                f"processes") and errors[0].endswith("--resume"), errors[0]
    if how == "SIGSTOP":
        assert "train.dist_timeout=3 s: Timed out" in errors[0]
    assert "Traceback" not in other.output, other.output


def test_another_world_size_or_an_uneven_batch_is_one_line(setup, p0_runs, variational_run,
                                                           tmp_path):
    root, data, recipe = setup
    one, _ = p0_runs
    # a two-process checkpoint in one process
    corpus = load_corpus(data, layout="ptb")
    tr = LMTrainer(tiny_lm_config(**PV), corpus, tmp_path / "x", **QUIET)
    with pytest.raises(ckpt.CheckpointError,
                       match=r"written by a run of 2 processes \(world_size 2\) and this run has "
                             r"1: resume it with 2 processes \(torchrun --nproc_per_node=2"):
        tr.resume(variational_run / "last.pt")
    # a single-process checkpoint in two: both ranks stop with the same line
    ranks = join(fork_ranks(cli_args(recipe, data, one, P0, resume=True), 2, root / "logs" / "ws"))
    for r in ranks:
        assert r.returncode == 2, r.output
        assert "(world_size 1) and this run has 2: resume it with a single process" in r.output
        assert "Traceback" not in r.output
    # a global batch that does not split evenly
    ranks = join(fork_ranks(cli_args(recipe, data, tmp_path / "odd", {"train.batch_size": 3}), 2,
                            root / "logs" / "odd"))
    for r in ranks:
        assert r.returncode == 2, r.output
        assert "train.batch_size=3 must be divisible by the number of processes (2)" in r.output


def test_divergence_restores_the_last_good_checkpoint_on_every_rank(setup, p0_runs, tmp_path):
    """A loss above the limit: both ranks decide on the same (global) loss, reload rank 0's
    last.pt and stop with the same line; neither waits for the other."""
    root, data, recipe = setup
    out = tmp_path / "run"
    shutil.copytree(p0_runs[1], out)
    before = (out / "last.pt").read_bytes()
    ranks = join(fork_ranks(cli_args(recipe, data, out, {**P0, "train.max_steps": 0,
                                                         "train.divergence_loss": 0.5},
                                     resume=True), 2, tmp_path / "logs"), 60)
    for r in ranks:
        assert r.returncode == 2, r.output
        assert "training diverged: loss" in r.output and "step 26 is above the limit 0.5" in r.output
        assert "parameters restored from" in r.output and "(step 25)" in r.output
    assert (out / "last.pt").read_bytes() == before


def test_max_minutes_stops_every_rank_after_the_same_step(setup, tmp_path):
    root, data, recipe = setup
    args = cli_args(recipe, data, tmp_path / "run", {"train.epochs": 100}) + ["--max-minutes",
                                                                              "0.0005"]
    ranks = run_forked(args, 2, tmp_path / "logs")
    st = ckpt.load(tmp_path / "run" / "last.pt")
    k = st["train_state"]["step"]
    assert 1 <= k < 20 and [r["step"] for r in st["ranks"]] == [k, k]
    assert "stopped at epoch 1" in ranks[0].output and "stopped" not in ranks[1].output


@pytest.mark.parametrize("output", [{"model.output": "sampled", "model.num_sampled": 5},
                                    {"model.output": "adaptive", "model.cutoffs": "[4,8]"}])
def test_sampled_and_adaptive_outputs_train_under_two_processes(setup, tmp_path, output):
    """Every parameter the loss uses is seen by DDP (the output layer is used only in the loss;
    an adaptive tail cluster may get no gradient in a window)."""
    root, data, recipe = setup
    run_forked(cli_args(recipe, data, tmp_path / "run", {**output, "train.max_steps": 12}), 2,
               tmp_path / "logs")
    st = ckpt.load(tmp_path / "run" / "last.pt")
    assert st["train_state"]["step"] == 12 and st["world_size"] == 2


def test_losses_read_back_k_steps_at_a_time_are_the_same_under_two_processes(setup, p0_runs,
                                                                              tmp_path):
    """train.sync_every = 4: the global losses are booked four at a time, the same numbers."""
    root, data, recipe = setup
    run_forked(cli_args(recipe, data, tmp_path / "run", {**P0, "train.sync_every": 4}), 2,
               tmp_path / "logs")
    assert _steps(tmp_path / "run") == _steps(p0_runs[1])


def test_learned_dropout_rates_train_under_two_processes(setup, tmp_path):
    """Concrete dropout: the rates are parameters too and their regulariser is added outside
    the DDP forward; the run goes through (a smoke test: it does not compare the ranks' rates)."""
    root, data, recipe = setup
    over = {"model.scheme": "variational", "model.dropout_hidden": 0.3,
            "model.dropout_output": 0.3, "model.learn_dropout": "true", "train.epochs": 1}
    run_forked(cli_args(recipe, data, tmp_path / "run", over), 2, tmp_path / "logs")
    rec = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert rec["world_size"] == 2 and rec["dropout_rates"]
