"""Dropout family: statistics with binomial tolerances, masks' structure, errors."""
import math

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings, strategies as st

from rnndrop import _recurrence
from rnndrop.dropout import (Dropout, EmbeddingDropout, GaussianDropout, LockedDropout,
                             ThreeValueDropout, WeightDrop, bernoulli_mask,
                             concrete_embedding_dropout, dropout, embedding_dropout,
                             gaussian_dropout, locked_dropout, three_value_dropout,
                             weight_dropout)

Z = 5.0  # tolerance in standard deviations: a false failure has probability < 1e-6


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_kept_fraction_and_mean(p):
    torch.manual_seed(0)
    n = 200_000
    x = torch.ones(n)
    y = dropout(x, p)
    kept = (y != 0).float().mean().item()
    assert abs(kept - (1 - p)) < Z * math.sqrt(p * (1 - p) / n)
    # E[y] = 1, Var[y] = p / (1 - p)
    assert abs(y.mean().item() - 1) < Z * math.sqrt(p / (1 - p) / n)
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1 / (1 - p)))


def test_p_zero_and_one_and_eval():
    x = torch.randn(10, 10)
    assert torch.equal(dropout(x, 0.0), x)
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))
    for m in [Dropout(0.5), LockedDropout(0.5), GaussianDropout(0.5), ThreeValueDropout(0.5)]:
        m.eval()
        assert torch.equal(m(x.unsqueeze(-1)), x.unsqueeze(-1))


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "0.5", None, True])
def test_bad_probability_names_argument(bad):
    with pytest.raises(ValueError, match="p must"):
        dropout(torch.ones(3), bad)
    with pytest.raises(ValueError, match="p must"):
        LockedDropout(bad)
    with pytest.raises(ValueError, match="dropout must"):
        EmbeddingDropout(5, 3, dropout=bad)


def test_p_one_only_where_meaningful():
    with pytest.raises(ValueError):
        GaussianDropout(1.0)
    with pytest.raises(ValueError):
        three_value_dropout(torch.ones(3), 1.0)
    assert torch.equal(locked_dropout(torch.ones(4, 2, 3), 1.0), torch.zeros(4, 2, 3))


@settings(max_examples=30, deadline=None)
@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=4), p=st.floats(0.0, 0.95))
def test_output_is_zero_or_scaled_input(shape, p):
    x = torch.rand(shape) + 0.5
    y = dropout(x, p)
    ok = (y == 0) | torch.isclose(y, x / (1 - p))
    assert bool(ok.all())


@pytest.mark.parametrize("batch_first", [False, True])
def test_locked_mask_constant_over_time_and_differs_between_sequences(batch_first):
    torch.manual_seed(0)
    T, B, F = 30, 8, 200
    x = torch.ones(B, T, F) if batch_first else torch.ones(T, B, F)
    y = locked_dropout(x, 0.5, batch_first=batch_first)
    y = y.transpose(0, 1) if batch_first else y  # (T, B, F)
    assert torch.equal(y, y[:1].expand_as(y))        # the same mask at every step
    assert not torch.equal(y[0, 0], y[0, 1])          # sequences get different masks
    kept = (y[0] != 0).float().mean().item()
    assert abs(kept - 0.5) < Z * math.sqrt(0.25 / (B * F))


def test_locked_rejects_non_sequence():
    with pytest.raises(ValueError, match="at least 2 dims"):
        locked_dropout(torch.ones(5), 0.5)


def test_embedding_dropout_sequence_mode_drops_every_occurrence():
    torch.manual_seed(0)
    V, D, T, B = 6, 4, 50, 40
    w = torch.randn(V, D)
    ids = torch.randint(0, V, (T, B))
    out = embedding_dropout(ids, w, 0.5, mode="sequence")
    dropped_somewhere_kept_elsewhere = 0
    for v in range(V):
        per_seq = []
        for b in range(B):
            pos = (ids[:, b] == v).nonzero().flatten()
            if len(pos) == 0:
                continue
            rows = out[pos, b]
            zero = (rows == 0).all(-1)
            assert bool(zero.all()) or not bool(zero.any())          # all occurrences alike
            if not zero.any():
                torch.testing.assert_close(rows, w[v].expand_as(rows) / 0.5)
            per_seq.append(bool(zero.all()))
        dropped_somewhere_kept_elsewhere += any(per_seq) and not all(per_seq)
    assert dropped_somewhere_kept_elsewhere > 0   # other sequences unaffected by one's mask


def test_embedding_dropout_batch_mode_and_fraction():
    torch.manual_seed(1)
    V, D = 5000, 3
    w = torch.randn(V, D)
    ids = torch.arange(V).view(50, 100)
    out = embedding_dropout(ids, w, 0.3, mode="batch")
    zero = (out == 0).all(-1)
    assert abs(zero.float().mean().item() - 0.3) < Z * math.sqrt(0.21 / V)
    ids2 = torch.tensor([[7, 7], [7, 8]])
    out2 = embedding_dropout(ids2, w, 0.5, mode="batch")
    z = (out2 == 0).all(-1)
    assert z[0, 0] == z[0, 1] == z[1, 0]  # word 7 dropped everywhere or nowhere


def test_embedding_dropout_module_like_nn_embedding():
    torch.manual_seed(0)
    m = EmbeddingDropout(10, 4, dropout=0.5, batch_first=True)
    ids = torch.randint(0, 10, (3, 7))
    m.eval()
    assert torch.equal(m(ids), nn.functional.embedding(ids, m.weight))
    m.train()
    assert m(ids).shape == (3, 7, 4)
    with pytest.raises(ValueError, match="mode"):
        EmbeddingDropout(10, 4, mode="word")
    with pytest.raises(TypeError, match="integer"):
        m(ids.float())


def test_weight_drop_leaves_parameter_untouched_and_runs_fused():
    torch.manual_seed(0)
    lstm = nn.LSTM(4, 6)
    before = {k: v.clone() for k, v in lstm.state_dict().items()}
    wd = WeightDrop(lstm, ["weight_hh_l0"], p=0.5)
    x = torch.randn(5, 3, 4)
    out, _ = wd(x)
    out.sum().backward()
    for k, v in lstm.state_dict().items():
        assert torch.equal(v, before[k])
    assert lstm.weight_hh_l0.grad is not None and lstm.weight_hh_l0.grad.abs().sum() > 0
    ref, _ = lstm(x)
    assert not torch.allclose(out, ref)
    wd.eval()
    assert torch.equal(wd(x)[0], ref)


def test_weight_drop_column_equals_batch_shared_hidden_mask():
    torch.manual_seed(0)
    H, B = 6, 3
    lstm = nn.LSTM(4, H)
    x = torch.randn(5, B, 4)
    wd = WeightDrop(lstm, "weight_hh_l0", p=0.4, mode="column")
    torch.manual_seed(5)
    out, _ = wd(x)
    torch.manual_seed(5)
    m = bernoulli_mask((1, 1, H), 0.4).view(1, H)
    xp = x @ lstm.weight_ih_l0.t() + lstm.bias_ih_l0 + lstm.bias_hh_l0
    z = torch.zeros(B, H)
    ref, _, _ = _recurrence.lstm_recurrence(xp, z, z, lstm.weight_hh_l0, m.expand(B, H))
    torch.testing.assert_close(out, ref)


def test_weight_drop_bad_name():
    with pytest.raises(ValueError, match="no parameter"):
        WeightDrop(nn.LSTM(3, 3), ["weight_hh"], 0.5)


def test_weight_dropout_element_fraction():
    torch.manual_seed(0)
    w = torch.ones(300, 300)
    d = weight_dropout(w, 0.25)
    assert abs((d == 0).float().mean().item() - 0.25) < Z * math.sqrt(0.25 * 0.75 / w.numel())


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_gaussian_dropout_matches_bernoulli_moments(p):
    torch.manual_seed(0)
    n = 200_000
    y = gaussian_dropout(torch.ones(n), p)
    var = p / (1 - p)
    assert abs(y.mean().item() - 1) < Z * math.sqrt(var / n)
    assert abs(y.var().item() - var) < Z * var * math.sqrt(2 / (n - 1))


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_three_value_dropout(p):
    torch.manual_seed(0)
    n = 200_000
    y = three_value_dropout(torch.ones(n), p)
    gamma = 4 / (3 * (1 - p))
    values = torch.tensor([0.0, gamma / 2, gamma])
    assert bool(torch.isclose(y.unsqueeze(-1), values).any(-1).all())
    var = (1 - p) * 5 * gamma ** 2 / 8 - 1
    assert abs(y.mean().item() - 1) < Z * math.sqrt(var / n)
    assert abs((y == 0).float().mean().item() - p) < Z * math.sqrt(p * (1 - p) / n)


def test_package_attribute_dropout_is_the_module():
    """``rnndrop.dropout`` is the module (as ``torch.nn.functional`` beside ``torch.nn``): its
    function ``dropout`` and the functional namespace both work."""
    import rnndrop
    import rnndrop.functional as RF
    assert rnndrop.dropout.__name__ == "rnndrop.dropout"
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\]"):
        rnndrop.dropout.dropout(torch.ones(3), 1.5)
    assert RF.dropout is rnndrop.dropout.dropout
    assert torch.equal(RF.locked_dropout(torch.ones(2, 3, 4), 0.5, training=False),
                       torch.ones(2, 3, 4))


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("mode,p,training", [("sequence", 0.5, True), ("batch", 0.5, True),
                                             ("sequence", 0.0, True), ("sequence", 0.5, False)])
def test_embedding_dropout_replicas_equal_the_repeated_batch(batch_first, mode, p, training):
    """``replicas=R`` is ``input.repeat`` along the batch with one lookup: from the same seed
    the same masks, bit for bit, and the replicas' masks differ from each other."""
    V, D, T, B, R = 7, 3, 9, 4, 5
    w = torch.randn(V, D, requires_grad=True)
    ids = torch.randint(0, V, (B, T) if batch_first else (T, B))
    rep = ids.repeat(R, 1) if batch_first else ids.repeat(1, R)
    torch.manual_seed(3)
    want = embedding_dropout(rep, w, p, training, mode, batch_first)
    torch.manual_seed(3)
    got = embedding_dropout(ids, w, p, training, mode, batch_first, replicas=R)
    assert torch.equal(got, want)
    g = torch.randn_like(want)
    gw_want, = torch.autograd.grad(want, w, g)
    gw_got, = torch.autograd.grad(got, w, g)
    torch.testing.assert_close(gw_got, gw_want)
    if mode == "sequence" and p and training:
        per = got.view(R, B, T, D) if batch_first else got.view(T, R, B, D).transpose(0, 1)
        assert not torch.equal(per[0], per[1])       # each replica draws its own masks


def test_concrete_embedding_dropout_replicas_equal_the_repeated_batch():
    V, D, T, B, R = 7, 3, 9, 4, 3
    w = torch.randn(V, D)
    logit = torch.tensor(0.0, requires_grad=True)
    ids = torch.randint(0, V, (T, B))
    torch.manual_seed(5)
    want = concrete_embedding_dropout(ids.repeat(1, R), w, logit)
    torch.manual_seed(5)
    got = concrete_embedding_dropout(ids, w, logit, replicas=R)
    assert torch.equal(got, want)
    torch.testing.assert_close(torch.autograd.grad(got.sum(), logit),
                               torch.autograd.grad(want.sum(), logit))


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_embedding_dropout_rejects_bad_replicas(bad):
    with pytest.raises(ValueError, match="replicas must be an integer >= 1"):
        embedding_dropout(torch.zeros(3, 2, dtype=torch.long), torch.randn(4, 2), 0.5,
                          replicas=bad)
    with pytest.raises(ValueError, match=r"replicas > 1 needs input of shape \(T, B\)"):
        embedding_dropout(torch.zeros(3, dtype=torch.long), torch.randn(4, 2), 0.5, mode="batch",
                          replicas=2)
