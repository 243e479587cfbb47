"""rnndrop.variance: the variance factor of each mask kind and its measurement."""
import pytest
import torch

from rnndrop.dropout import three_value_dropout
from rnndrop.variance import KINDS, dropout_fn, measure_dropout_variance, variance_factor


def test_variance_factor():
    assert variance_factor("bernoulli", 0.2) == pytest.approx(0.25)
    assert variance_factor("gaussian", 0.5) == pytest.approx(1.0)
    assert variance_factor("bernoulli", 0.0) == 0.0
    # three-value: empirical variance of the mask
    torch.manual_seed(0)
    xi = three_value_dropout(torch.ones(400_000), 0.3)
    assert xi.mean().item() == pytest.approx(1.0, abs=5e-3)
    assert xi.var().item() == pytest.approx(variance_factor("three_value", 0.3), rel=2e-2)


def test_kinds_and_bad_kind():
    assert KINDS == ("bernoulli", "gaussian", "three_value")
    assert dropout_fn("three_value") is three_value_dropout
    with pytest.raises(ValueError, match="kind must be one of"):
        variance_factor("uniform", 0.2)
    with pytest.raises(ValueError):
        variance_factor("gaussian", 1.0)          # only Bernoulli may drop everything
    assert variance_factor("bernoulli", 1.0) == float("inf")


@pytest.mark.parametrize("kind,p", [("bernoulli", 0.2), ("bernoulli", 0.5), ("bernoulli", 0.8),
                                    ("gaussian", 0.3), ("three_value", 0.4)])
def test_variance_measurement_matches_theory(kind, p):
    torch.manual_seed(0)
    h = torch.rand(40) * 3
    h[::7] = 0.0                                   # "dead" ReLU units: no variance at all
    n = 4000
    m = measure_dropout_variance(h, p, kind, n_masks=n)
    f = variance_factor(kind, p)
    torch.testing.assert_close(m["theory"], f * h.double() ** 2)
    live = h > 0
    assert torch.equal(m["measured"][~live], torch.zeros(int((~live).sum()), dtype=torch.float64))
    assert torch.isnan(m["rel_err"][~live]).all()
    # the sampling error predicted from the fourth moment (plus an O(1/n) term: at p = 0.5 the
    # two-point mask makes s² nearly exact and the error is second order in the sample mean) ...
    re, se = m["rel_err"][live], m["rel_se"][live]
    assert (re.abs() <= 5 * se + 10 / n).all()
    # ... agrees with the textbook one for Bernoulli masks: Var(s²)/σ⁴ ≈ (κ - 1)/n
    if kind == "bernoulli" and p != 0.5:
        q = 1 - p
        kappa = p * p / q + q * q / p
        torch.testing.assert_close(se, torch.full_like(se, ((kappa - 1) / n) ** 0.5),
                                   rtol=0.2, atol=0)
    # the mean is h: dropout is inverted
    sd_mean = (f * h.double() ** 2 / n).sqrt()
    assert ((m["mean"] - h.double()).abs() <= 5 * sd_mean + 1e-12).all()


def test_variance_of_next_layer_preactivation():
    torch.manual_seed(1)
    h = torch.rand(30)
    W = torch.randn(8, 30)
    m = measure_dropout_variance(h, 0.5, "bernoulli", n_masks=6000, weight=W)
    theory = 1.0 * (h.double() ** 2) @ (W.double() ** 2).t()
    torch.testing.assert_close(m["theory"], theory)
    assert (m["rel_err"].abs() <= 5 * m["rel_se"]).all()
    torch.testing.assert_close(m["mean"], W.double() @ h.double(), atol=0.1, rtol=0)
