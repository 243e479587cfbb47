"""rnndrop.data.synthetic: the generated tasks, their targets, losses and baselines."""
import math

import pytest
import torch

from rnndrop.data.synthetic import TASKS, Task, adding_problem, copy_task, delayed_recall, make_task


@pytest.mark.parametrize("T", [2, 7, 100, 151])
def test_adding_problem_target_is_sum_of_marked_numbers(T):
    g = torch.Generator().manual_seed(T)
    x, y = adding_problem(64, T, g)
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
    x, _ = adding_problem(4000, 10, torch.Generator().manual_seed(0))
    pos = x[..., 1].nonzero()[:, 0]
    assert set(pos.tolist()) == set(range(10))


@pytest.mark.parametrize("T,K", [(21, 10), (100, 10), (13, 3)])
def test_copy_target_is_input_after_delay(T, K):
    x, y = copy_task(16, T, n_symbols=8, n_copy=K, generator=torch.Generator().manual_seed(1))
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
        copy_task(2, 20, n_copy=10)
    with pytest.raises(ValueError, match="task"):
        make_task("sorting", 100)


def test_task_losses_and_baselines():
    add = make_task("adding", 30)
    x, y = add.batch(4096, torch.Generator().manual_seed(0))
    assert ((y - 1.0) ** 2).mean().item() == pytest.approx(add.baseline, rel=0.05)
    cp = make_task("copy", 30)
    x, y = cp.batch(8)
    out = torch.zeros(30, 8, 5)
    uniform = cp.loss(lambda h: torch.zeros(*h.shape[:-1], 9), out, y)
    assert uniform.item() == pytest.approx(math.log(9))   # 9 classes incl. blank
    assert cp.fit_window == 20 and add.fit_window == 30


def test_make_task_names():
    assert TASKS == ("adding", "copy")
    assert isinstance(make_task(), Task) and make_task().seq_len == 100
    with pytest.raises(ValueError, match="seq_len"):
        make_task("copy", 20)


def test_delayed_recall_target_is_input_delay_steps_earlier():
    x, y = delayed_recall(16, 20, 8, 3, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (20, 16) and ((x >= 0) & (x < 8)).all()
    assert (y[:3] == -100).all() and torch.equal(y[3:], x[:-3])
    # the demo's batches: the same numbers from the same generator state
    again, _ = delayed_recall(16, 20, 8, 3, torch.Generator().manual_seed(0))
    assert torch.equal(x, again)
