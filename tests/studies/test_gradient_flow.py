"""Gradient-flow study: model building, divergence detection, quick run (the tasks:\ntests/data/test_synthetic.py; the initialisers: tests/test_init.py)."""
import json
import math

import pytest
import torch

from rnndrop.cli import build_parser, main
from rnndrop.data.synthetic import make_task
from rnndrop.studies import _cli
from rnndrop.studies import gradient_flow as G


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()   # tiny models: extra threads only add contention
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_eval_baseline():
    assert G.eval_baseline(G.Settings(seq_len=30, eval_batch=2048)) == pytest.approx(1 / 6, rel=0.1)
    assert G.eval_baseline(G.Settings(task="copy", seq_len=30, eval_batch=2048)) == \
        pytest.approx(math.log(8))


# --------------------------------------------------------------------------- initialisation
def test_build_model_applies_init_and_gate_bias():
    # the initialisers themselves: tests/test_init.py
    model = G.build_model(G.RunSpec("lstm", "lstm", init="orthogonal", radius=1.5),
                          make_task("adding", 10), 12, seed=0)
    W = model.rnn.weight_hh_l0.detach().double().view(4, 12, 12)
    assert torch.linalg.eigvals(W[1]).abs().max().item() == pytest.approx(1.5, rel=1e-5)
    model = G.build_model(G.RunSpec("lstm", "lstm", gate_bias=3.0), make_task("adding", 10), 8,
                          seed=0)
    b = model.rnn.bias_ih_l0 + model.rnn.bias_hh_l0
    assert torch.allclose(b[8:16], torch.full((8,), 3.0))


def test_same_seed_same_model_and_data():
    s = G.Settings(seq_len=12, steps=3, hidden_size=6, batch_size=4, probe_batch=4, eval_batch=8)
    a = G.train_one(G.RunSpec("lstm", "lstm"), s)
    b = G.train_one(G.RunSpec("lstm", "lstm"), s)
    assert a["losses"] == b["losses"] and a["init"]["norms"] == b["init"]["norms"]


# ----------------------------------------------------------------------------- divergence
def test_divergence_is_detected_on_a_forced_case():
    # ReLU RNN with W_hh = 3 x orthogonal: activations grow ~3^T, plain SGD with a large step.
    s = G.Settings(seq_len=40, steps=30, hidden_size=16, batch_size=8, lr=10.0, probe_batch=4,
                   eval_batch=8)
    r = G.train_one(G.RunSpec("relu", "rnn", "relu", init="orthogonal", radius=3.0), s)
    assert r["diverged"] and r["diverged_at"] is not None and r["diverged_at"] <= 30
    assert r["divergence_reason"]
    assert math.isnan(r["eval_loss"]) and math.isnan(r["final_train_loss"])
    assert r["init"]["decay_top"] > 1.0          # exploding at init


def test_loss_explosion_counts_as_divergence():
    # SGD with lr 1 overshoots at once; with explode_factor ~1 any loss above max(first loss,
    # baseline) counts as an explosion, so the run must stop there with that reason.
    s = G.Settings(seq_len=10, steps=20, hidden_size=8, batch_size=4, lr=1.0, probe_batch=4,
                   eval_batch=8, explode_factor=1.0 + 1e-9)
    task = s.make_task()
    r = G.train_one(G.RunSpec("tanh", "rnn"), s)
    losses = r["losses"]
    assert r["diverged"] and "explosion" in r["divergence_reason"]
    assert r["diverged_at"] == len(losses) and losses[-1] > max(losses[0], task.baseline)
    assert all(l <= max(losses[0], task.baseline) * (1 + 1e-9) for l in losses[:-1])
    # with the default factor the same run is not a divergence
    r2 = G.train_one(G.RunSpec("tanh", "rnn"), G.Settings(
        seq_len=10, steps=len(losses), hidden_size=8, batch_size=4, lr=1.0, probe_batch=4,
        eval_batch=8))
    assert not r2["diverged"] and r2["losses"] == losses


def test_no_divergence_on_a_tame_case_and_clipping_is_recorded():
    s = G.Settings(seq_len=15, steps=10, hidden_size=8, batch_size=4, lr=0.01, probe_batch=4,
                   eval_batch=8)
    r = G.train_one(G.RunSpec("tanh", "rnn", clip=1e-4), s)
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
    s = G.STUDY.settings_from_args(args)
    assert s.task == "copy" and s.seq_len == 25 and s.steps == 2 and s.seed == 3
    assert s.jobs == 1
    specs = [G.RunSpec("lstm", "lstm"), G.RunSpec("tanh", "rnn", init="orthogonal", radius=1.5,
                                                  clip=1.0, group="clip")]
    study = G.run(s, tmp_path, progress=False, specs=specs)
    G.report(study, tmp_path)
    assert _cli.write_results(study, tmp_path).is_file()
    assert (tmp_path / "gradient-flow-loss.png").is_file()
    r = study["runs"][0]
    assert len(r["init"]["decay"]) == 1 and r["steps_done"] == 2
    d = build_parser().parse_args(["study", "gradient-flow"])
    s = G.STUDY.settings_from_args(d)
    assert d.out == "runs/gradient-flow" and s.task == "adding" and not d.quick
    assert s.seq_len == 100 and s.hidden_size == 64 and s.batch_size == 32
    assert s.learning_rate == 0.05 and G.Settings(optimizer="adam").learning_rate == 0.01
    # an explicit 0 is not swallowed by the preset
    q = build_parser().parse_args(["study", "gradient-flow", "--quick", "--steps", "0",
                                   "--hidden-size", "5", "--batch-size", "3"])
    s = G.STUDY.settings_from_args(q)
    assert (s.steps, s.hidden_size, s.batch_size, s.seq_len) == (0, 5, 3, 16)
    with pytest.raises(ValueError, match="task"):
        G.Settings(task="sorting")
