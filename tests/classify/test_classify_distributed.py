"""``rnndrop classify train`` as several processes (torchrun's environment, gloo on CPU): two
ranks make the single-process updates on the same batches, a last batch of fewer rows than
ranks included; a run with dropout stopped and resumed under two processes is the uninterrupted
one bit for bit; rank 0 alone logs and writes; a checkpoint of another world size is refused
with one line. The ranks are forked from the test process (tests/distrun.py)."""
import json

import pytest
import torch

from clfdata import write_reviews
from distrun import join, fork_ranks, run_forked
from rnndrop import checkpoint as ckpt
from rnndrop.data.labeled import load_split

# 105 examples: 85 train, so batches of 7 leave a last batch of one row (rank 1 gets none) and
# every other batch splits 4 + 3 (unequal shares, weighted W / B each).
N, BATCH = 105, 7
TINY = ["--set", "model.hidden_size=8", "--set", "model.embedding_dim=8",
        "--set", "model.head_size=8", "--set", f"train.batch_size={BATCH}",
        "--set", "train.lr=0.01", "--set", "train.epochs=2", "--set", "train.threads=1",
        "--no-progress"]
P0 = ["--set", "model.scheme=none"]
PV = ["--set", "model.scheme=variational", "--set", "model.dropout=0.3",
      "--set", "model.dropout_head=0.2", "--set", "train.checkpoint_every=5",
      "--set", "train.mc_samples=3"]


def _args(data, out, extra, resume=False):
    return (["classify", "train", "--data", str(data), "--out", str(out), *TINY, *extra]
            + (["--resume"] if resume else []))


def _steps(run):
    return [json.loads(line) for line in (run / "steps.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("clfdist")
    return root, write_reviews(root / "r.csv", n=N)


@pytest.fixture(scope="module")
def p0_runs(setup):
    root, data = setup
    one = run_forked(_args(data, root / "one", P0), 1, root / "logs" / "one")
    two = run_forked(_args(data, root / "two", P0), 2, root / "logs" / "two")
    return root / "one", root / "two", one, two


@pytest.fixture(scope="module")
def variational_run(setup):
    root, data = setup
    run_forked(_args(data, root / "pv", PV), 2, root / "logs" / "pv")
    return root / "pv"


def test_two_processes_make_the_single_process_updates_on_the_same_batches(p0_runs):
    one, two, _, _ = p0_runs
    train = load_split(one / "split.json")["train"]
    assert len(train) % BATCH == 1          # the one-row batch this test is about
    assert load_split(two / "split.json") == load_split(one / "split.json")
    a, b = _steps(one), _steps(two)
    assert len(a) == len(b) == 2 * 13
    for x, y in zip(a, b):
        assert y["step"] == x["step"]
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-5, abs=1e-6)
        assert y["grad_norm"] == pytest.approx(x["grad_norm"], rel=1e-4, abs=1e-6)
    A, B = ckpt.load(one / "last.pt"), ckpt.load(two / "last.pt")
    assert (A["world_size"], B["world_size"], len(B["ranks"])) == (1, 2, 2)
    for k, w in A["model"].items():
        torch.testing.assert_close(B["model"][k], w, rtol=1e-4, atol=1e-5, msg=k)
    ea, eb = (json.loads((d / "metrics.jsonl").read_text().splitlines()[-1]) for d in (one, two))
    assert eb["valid_accuracy"] == ea["valid_accuracy"]
    assert eb["train_loss"] == pytest.approx(ea["train_loss"], rel=1e-5)
    # each rank its own dropout generator, the same batch order (a function of seed and epoch)
    r0, r1 = B["ranks"]
    assert not torch.equal(r0["rng"]["torch"], r1["rng"]["torch"])
    assert r0["position"] == r1["position"] == B["train_state"]["position"]


def test_rank_0_alone_logs_and_scores_the_test_split(p0_runs):
    one, two, _, ranks = p0_runs
    out0, out1 = (r.output for r in ranks)
    assert "run directory:" in out0 and "(2 processes)" in out0 and "test" in out0
    assert out1.strip() == "", out1
    f1, f2 = (json.loads((d / "final.json").read_text()) for d in (one, two))
    assert f2["standard"]["accuracy"] == f1["standard"]["accuracy"]
    assert f2["standard"]["nll"] == pytest.approx(f1["standard"]["nll"], rel=1e-4)
    assert (two / "reliability.png").is_file()


def test_stopped_and_resumed_under_two_processes_is_the_uninterrupted_run(setup, variational_run):
    root, data = setup
    out = root / "pv-resumed"
    run_forked(_args(data, out, [*PV, "--set", "train.max_steps=9"]), 2, root / "logs" / "r1")
    assert ckpt.load(out / "last.pt")["train_state"]["step"] == 9
    # the config comes from the checkpoint: lift its step limit
    run_forked(_args(data, out, [*PV, "--set", "train.max_steps=0"], resume=True), 2,
               root / "logs" / "r2")
    assert _steps(out) == _steps(variational_run)
    A, B = ckpt.load(variational_run / "last.pt"), ckpt.load(out / "last.pt")
    for k, w in A["model"].items():
        assert torch.equal(B["model"][k], w), k
    for ra, rb in zip(A["ranks"], B["ranks"]):
        assert torch.equal(ra["rng"]["torch"], rb["rng"]["torch"])
    final, ref = (json.loads((d / "final.json").read_text()) for d in (out, variational_run))
    assert {**final, "plot": None} == {**ref, "plot": None}        # the plot's path differs
    assert "mc" in final and final["mc"]["nll"] != final["standard"]["nll"]   # the masks acted


def test_a_checkpoint_of_two_processes_resumed_in_one_is_one_line(setup, variational_run,
                                                                   tmp_path):
    _, data = setup
    out = tmp_path / "copy"
    out.mkdir()
    for f in ("last.pt", "split.json"):
        (out / f).write_bytes((variational_run / f).read_bytes())
    (r,) = join(fork_ranks(_args(data, out, PV, resume=True), 1, tmp_path / "logs"))
    assert r.returncode != 0
    lines = [line for line in r.output.splitlines() if "world_size 2" in line]
    assert lines and "torchrun --nproc_per_node=2" in lines[0], r.output
    assert "Traceback" not in r.output
