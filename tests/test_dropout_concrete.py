"""Concrete dropout (Gal, Hron & Kendall 2017): learned rates, their mask and regulariser."""
import math

import pytest
import torch

import rnndrop
import rnndrop.functional as RF
from rnndrop.dropout import ConcreteDropout, LockedConcreteDropout


def _logit(p):
    return torch.tensor(math.log(p) - math.log1p(-p))


def test_exported_where_the_family_is():
    assert rnndrop.ConcreteDropout is ConcreteDropout
    assert rnndrop.LockedConcreteDropout is LockedConcreteDropout
    assert RF.concrete_dropout is rnndrop.dropout.concrete_dropout
    assert RF.concrete_regularizer is rnndrop.dropout.concrete_regularizer


def test_gradients_reach_the_logit_and_p_stays_inside():
    torch.manual_seed(0)
    m = ConcreteDropout(p=0.5)
    x = torch.randn(64, 10)
    y = m(x)
    (y.square().sum() + m.regularizer(torch.randn(5, 10))).backward()
    assert m.p_logit.grad is not None and m.p_logit.grad.abs().item() > 0
    # p = σ(logit) and 1 - p = σ(-logit) are both > 0 for any finite logit, even far out:
    # the mask's scale 1/(1-p) stays finite and so does the output
    for logit in (-50.0, 50.0):
        with torch.no_grad():
            m.p_logit.fill_(logit)
        assert torch.sigmoid(m.p_logit).item() > 0 and torch.sigmoid(-m.p_logit).item() > 0
        assert torch.isfinite(m(torch.ones(100))).all()


def test_learning_moves_p_the_way_the_loss_wants():
    """With only the entropy term p moves toward 1/2; with a large weight term toward 0."""
    for start, weight_reg, direction in ((0.1, 0.0, +1), (0.9, 0.0, -1), (0.5, 10.0, -1)):
        m = ConcreteDropout(p=start, weight_regularizer=weight_reg, dropout_regularizer=1.0)
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        w = torch.ones(3, 3)
        for _ in range(20):
            opt.zero_grad()
            m.regularizer(w, input_dim=3).backward()
            opt.step()
        assert (m.p - start) * direction > 0.01, (start, weight_reg, m.p)


def test_eval_is_deterministic_identity_and_train_is_random():
    torch.manual_seed(0)
    m = ConcreteDropout(p=0.3).eval()
    x = torch.randn(7, 5)
    assert torch.equal(m(x), x) and torch.equal(m(x), m(x))
    m.train()
    assert not torch.equal(m(x), m(x))


def test_regularizer_equals_hand_computed_values():
    w = torch.tensor([[1.0, 2.0], [3.0, 4.0]])                    # Σ w² = 30
    r = RF.concrete_regularizer(_logit(0.5), [w], 3, 0.1, 0.01)
    # 0.1 · 30 / 0.5 + 0.01 · 3 · (2 · 0.5 ln 0.5)
    assert r.item() == pytest.approx(6.0 - 0.03 * math.log(2), rel=1e-6)
    r = RF.concrete_regularizer(_logit(0.2), [w, w], 3, 0.1, 0.01)
    want = 0.1 * 60 / 0.8 + 0.03 * (0.2 * math.log(0.2) + 0.8 * math.log(0.8))
    assert r.item() == pytest.approx(want, rel=1e-6)
    m = ConcreteDropout(p=0.2, weight_regularizer=0.1, dropout_regularizer=0.01)
    m(torch.zeros(4, 3))                                           # K = 3 from the input
    assert m.regularizer(w, w).item() == pytest.approx(want, rel=1e-6)
    with pytest.raises(ValueError, match="input_dim"):
        ConcreteDropout().regularizer(w)


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.7])
def test_mask_keeps_one_minus_p_and_has_mean_one(p):
    g = torch.Generator().manual_seed(0)
    x = torch.ones(200_000)
    y = RF.concrete_dropout(x, _logit(p), temperature=0.1, generator=g)
    keep = y * (1 - p)                                             # the relaxed keep indicator
    assert keep.mean().item() == pytest.approx(1 - p, abs=0.01)
    assert y.mean().item() == pytest.approx(1.0, abs=0.02)
    # at t = 0.1 the mask is nearly binary: most entries are within 0.1 of 0 or 1
    near = ((keep < 0.1) | (keep > 0.9)).float().mean().item()
    assert near > 0.85


def test_locked_mask_is_constant_over_time():
    torch.manual_seed(0)
    m = LockedConcreteDropout(p=0.5)
    y = m(torch.ones(6, 4, 8))
    assert torch.equal(y, y[:1].expand_as(y))
    assert not torch.equal(y[:, 0], y[:, 1])                       # per sequence
    mb = LockedConcreteDropout(p=0.5, batch_first=True)
    yb = mb(torch.ones(4, 6, 8))
    assert torch.equal(yb, yb[:, :1].expand_as(yb))
    unlocked = ConcreteDropout(p=0.5)(torch.ones(6, 4, 8))
    assert not torch.equal(unlocked, unlocked[:1].expand_as(unlocked))
    with pytest.raises(ValueError, match="at least 2 dims"):
        m(torch.ones(5))


@pytest.mark.parametrize("kwargs,match", [
    (dict(p=0.0), "p must be in \\(0, 1\\)"), (dict(p=1.0), "p must"), (dict(p=True), "p must"),
    (dict(temperature=0.0), "temperature must"), (dict(temperature=-1), "temperature must"),
])
def test_bad_arguments_are_one_line_errors(kwargs, match):
    with pytest.raises(ValueError, match=match) as e:
        ConcreteDropout(**kwargs)
    assert "\n" not in str(e.value)


def test_repr_shows_the_learned_rate():
    assert "p=0.25 (learned)" in repr(LockedConcreteDropout(p=0.25))
