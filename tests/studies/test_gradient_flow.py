"""Gradient-flow study: task generators, initialisation, divergence detection, quick run."""
import json
import math

import pytest
import torch

from rnndrop.cli import build_parser, main
from rnndrop.studies import gradient_flow as G


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()   # tiny models: extra threads only add contention
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------ generators
@pytest.mark.parametrize("T", [2, 7, 100, 151])
def test_adding_problem_target_is_sum_of_marked_numbers(T):
    g = torch.Generator().manual_seed(T)
    x, y = G.adding_problem(64, T, g)
    assert x.shape == (T, 64, 2) and y.shape == (64, 1)
    values, markers = x[..., 0], x[..., 1]
    assert ((values >= 0) & (values < 1)).all()
    assert set(markers.unique().tolist()) <= {0.0, 1.0}
    assert (markers.sum(0) == 2).all()
    half = T // 2
    assert (markers[:half].sum(0) == 1).all() and (markers[half:].sum(0) == 1).all()
    # the target, computed independently, sample by sample
    for b in range(64):
        idx = markers[:, b].nonzero().flatten().tolist()
        assert y[b, 0].item() == pytest.approx(values[idx[0], b].item() + values[idx[1], b].item())


def test_adding_problem_positions_cover_both_halves():
    x, _ = G.adding_problem(4000, 10, torch.Generator().manual_seed(0))
    pos = x[..., 1].nonzero()[:, 0]
    assert set(pos.tolist()) == set(range(10))


@pytest.mark.parametrize("T,K", [(21, 10), (100, 10), (13, 3)])
def test_copy_target_is_input_after_delay(T, K):
    x, y = G.copy_task(16, T, n_symbols=8, n_copy=K, generator=torch.Generator().manual_seed(1))
    assert x.shape == (T, 16, 10) and y.shape == (T, 16) and y.dtype == torch.long
    assert torch.allclose(x.sum(-1), torch.ones(T, 16))          # one-hot
    tokens = x.argmax(-1)
    delay = T - K
    assert torch.equal(y[delay:delay + K], tokens[:K])           # the input, delayed
    assert ((tokens[:K] >= 1) & (tokens[:K] <= 8)).all()         # symbols, not blank/go
    assert (y[:delay] == 0).all()                                # blank before the recall
    assert (tokens[delay - 1] == 9).all()                        # "go" right before it
    assert (tokens[K:delay - 1] == 0).all()


def test_copy_task_rejects_too_short_sequences():
    with pytest.raises(ValueError, match="seq_len"):
        G.copy_task(2, 20, n_copy=10)
    with pytest.raises(ValueError, match="task"):
        G.make_task("sorting", 100)


def test_task_losses_and_baselines():
    add = G.make_task("adding", 30)
    x, y = add.batch(4096, torch.Generator().manual_seed(0))
    assert ((y - 1.0) ** 2).mean().item() == pytest.approx(add.baseline, rel=0.05)
    cp = G.make_task("copy", 30)
    x, y = cp.batch(8)
    out = torch.zeros(30, 8, 5)
    uniform = cp.loss(lambda h: torch.zeros(*h.shape[:-1], 9), out, y)
    assert uniform.item() == pytest.approx(math.log(9))   # 9 classes incl. blank
    assert cp.fit_window == 20 and add.fit_window == 30
    s = G.TrainSettings(eval_batch=2048)
    assert G.eval_baseline(add, s) == pytest.approx(1 / 6, rel=0.1)
    assert G.eval_baseline(cp, s) == pytest.approx(math.log(8))


# --------------------------------------------------------------------------- initialisation
@pytest.mark.parametrize("cell,gates", [("rnn", 1), ("lstm", 4), ("gru", 3)])
def test_orthogonal_init_has_the_requested_radius(cell, gates):
    spec = G.RunSpec(cell, cell, init="orthogonal", radius=1.5, num_layers=2)
    model = G.build_model(spec, G.make_task("adding", 10), 12, seed=0)
    for k in range(2):
        W = getattr(model.rnn, f"weight_hh_l{k}").detach().double().view(gates, 12, 12)
        for block in W:
            assert torch.allclose(block @ block.T, 2.25 * torch.eye(12, dtype=torch.float64), atol=1e-5)
            assert torch.linalg.eigvals(block).abs().max().item() == pytest.approx(1.5, rel=1e-5)


def test_gate_bias_opens_the_forget_gate():
    spec = G.RunSpec("lstm", "lstm", gate_bias=3.0)
    model = G.build_model(spec, G.make_task("adding", 10), 8, seed=0)
    b = model.rnn.bias_ih_l0 + model.rnn.bias_hh_l0
    assert torch.allclose(b[8:16], torch.full((8,), 3.0))
    with pytest.raises(ValueError, match="LSTM and GRU"):
        G.set_gate_bias(G.build_model(G.RunSpec("r", "rnn"), G.make_task(), 4, 0).rnn, 1.0)


def test_same_seed_same_model_and_data():
    task = G.make_task("adding", 12)
    s = G.TrainSettings(steps=3, hidden_size=6, batch_size=4, probe_batch=4, eval_batch=8)
    a = G.train_one(G.RunSpec("lstm", "lstm"), task, s)
    b = G.train_one(G.RunSpec("lstm", "lstm"), task, s)
    assert a["losses"] == b["losses"] and a["init"]["norms"] == b["init"]["norms"]


# ----------------------------------------------------------------------------- divergence
def test_divergence_is_detected_on_a_forced_case():
    # ReLU RNN with W_hh = 3 x orthogonal: activations grow ~3^T, plain SGD with a large step.
    task = G.make_task("adding", 40)
    s = G.TrainSettings(steps=30, hidden_size=16, batch_size=8, lr=10.0, probe_batch=4, eval_batch=8)
    r = G.train_one(G.RunSpec("relu", "rnn", "relu", init="orthogonal", radius=3.0), task, s)
    assert r["diverged"] and r["diverged_at"] is not None and r["diverged_at"] <= 30
    assert r["divergence_reason"]
    assert math.isnan(r["eval_loss"]) and math.isnan(r["final_train_loss"])
    assert r["init"]["decay_top"] > 1.0          # exploding at init


def test_loss_explosion_counts_as_divergence():
    # SGD with lr 1 overshoots at once; with explode_factor ~1 any loss above max(first loss,
    # baseline) counts as an explosion, so the run must stop there with that reason.
    task = G.make_task("adding", 10)
    s = G.TrainSettings(steps=20, hidden_size=8, batch_size=4, lr=1.0, probe_batch=4,
                        eval_batch=8, explode_factor=1.0 + 1e-9)
    r = G.train_one(G.RunSpec("tanh", "rnn"), task, s)
    losses = r["losses"]
    assert r["diverged"] and "explosion" in r["divergence_reason"]
    assert r["diverged_at"] == len(losses) and losses[-1] > max(losses[0], task.baseline)
    assert all(l <= max(losses[0], task.baseline) * (1 + 1e-9) for l in losses[:-1])
    # with the default factor the same run is not a divergence
    r2 = G.train_one(G.RunSpec("tanh", "rnn"), task, G.TrainSettings(
        steps=len(losses), hidden_size=8, batch_size=4, lr=1.0, probe_batch=4, eval_batch=8))
    assert not r2["diverged"] and r2["losses"] == losses


def test_no_divergence_on_a_tame_case_and_clipping_is_recorded():
    task = G.make_task("adding", 15)
    s = G.TrainSettings(steps=10, hidden_size=8, batch_size=4, lr=0.01, probe_batch=4, eval_batch=8)
    r = G.train_one(G.RunSpec("tanh", "rnn", clip=1e-4), task, s)
    assert not r["diverged"] and r["steps_done"] == 10 and math.isfinite(r["eval_loss"])
    assert r["clip"]["steps"] == 10 and r["clip"]["clipped"] == 10


# --------------------------------------------------------------------------------- study
def test_quick_study_end_to_end(tmp_path, capsys):
    out = tmp_path / "gf"
    assert main(["study", "gradient-flow", "--quick", "--out", str(out), "--no-progress"]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"results.json", "results.md", "gradient-flow-init.png", "gradient-flow-trained.png",
            "gradient-flow-radius.png", "gradient-flow-loss.png"} <= names
    for n in names:
        assert (out / n).stat().st_size > 0
    data = json.loads((out / "results.json").read_text())
    assert len(data["runs"]) == len(G.default_specs())
    labels = [r["label"] for r in data["runs"]]
    assert len(set(labels)) == len(labels)
    for r in data["runs"]:
        assert r["steps_done"] >= 1
        assert len(r["init"]["norms"][-1]) == data["task"]["seq_len"]
        assert r["init"]["decay_top"] is None or r["init"]["decay_top"] > 0
    # every group and every architecture of the brief is there
    specs = [r["spec"] for r in data["runs"]]
    assert {s["group"] for s in specs} == {"models", "gate-bias", "radius", "clip"}
    assert {s["activation"] for s in specs if s["cell"] == "rnn"} == {"tanh", "relu", "sigmoid", "leaky_relu"}
    assert any(s["skip"] and s["num_layers"] >= 2 for s in specs)
    assert {s["radius"] for s in specs if s["group"] == "radius"} == {0.5, 1.0, 1.5}
    md = (out / "results.md").read_text()
    assert "| network |" in md and "rnn-sigmoid" in md and "Memoryless prediction" in md
    assert data["eval_baseline"] > 0
    assert "wall time" in capsys.readouterr().out


def test_cli_options_and_copy_task(tmp_path):
    args = build_parser().parse_args(["study", "gradient-flow", "--task", "copy", "--quick",
                                      "--seq-len", "25", "--steps", "2", "--seed", "3"])
    task, s, workers = G.settings_from_args(args)
    assert task.name == "copy" and task.seq_len == 25 and s.steps == 2 and s.seed == 3
    assert workers == 1
    specs = [G.RunSpec("lstm", "lstm"), G.RunSpec("tanh", "rnn", init="orthogonal", radius=1.5,
                                                  clip=1.0, group="clip")]
    study = G.run_study(task, s, specs, progress=False)
    paths = G.write_outputs(study, tmp_path)
    assert paths["json"].is_file() and (tmp_path / "gradient-flow-loss.png").is_file()
    r = study["runs"][0]
    assert len(r["init"]["decay"]) == 1 and r["steps_done"] == 2
    d = build_parser().parse_args(["study", "gradient-flow"])
    assert d.out == "runs/gradient-flow" and d.task == "adding" and not d.quick
    t, s, _ = G.settings_from_args(d)
    assert t.seq_len == 100 and s.hidden_size == 64 and s.batch_size == 32
