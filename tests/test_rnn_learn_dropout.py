"""Learned dropout rates in the layers (``learn_dropout=True``, Concrete dropout)."""
import pytest
import torch

from rnndrop import GRU, LSTM, _recurrence, fast
from rnndrop.dropout import concrete_regularizer
from rnndrop.fast import _cext, _gru, _lstm
from rnndrop.fast._common import Impl
from rnndrop.fast._gemm import use_packed

KW = dict(num_layers=2, dropout_input=0.5, dropout_between=0.3, dropout_hidden=0.2,
          dropout_output=0.4)


@pytest.mark.parametrize("cls", [LSTM, GRU])
def test_rates_start_where_given_and_all_get_gradients(cls):
    torch.manual_seed(0)
    layer = cls(3, 4, bidirectional=True, learn_dropout=True, **KW)
    rates = layer.dropout_rates()
    assert rates == pytest.approx({"input": 0.5, "between_l1": 0.3, "hidden_l0": 0.2,
                                   "hidden_l1": 0.2, "output": 0.4})
    x = torch.randn(6, 3, 3)
    out = layer(x, lengths=torch.tensor([6, 2, 4]))[0]
    (out.square().sum() + layer.regularizer(1e-3, 1e-2)).backward()
    logits = {n: p for n, p in layer.named_parameters() if n.startswith("concrete_")}
    assert len(logits) == 5
    for name, p in logits.items():
        assert p.grad is not None and p.grad.abs().item() > 0, name


def test_recurrent_mask_with_a_gradient_runs_the_fast_loop_on_cpu(monkeypatch):
    picked = []
    real = fast.select
    monkeypatch.setattr(fast, "select", lambda c, *a: picked.append(real(c, *a)) or picked[-1])
    LSTM(3, 4, dropout_hidden=0.3, learn_dropout=True)(torch.randn(4, 2, 3))
    assert picked[0].func is _lstm.recurrence


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
@pytest.mark.parametrize("mask", ["tied", "untied"])
@pytest.mark.parametrize("zoneout", [False, True])
@pytest.mark.parametrize("lib", ["C", "torch ops"])
def test_fast_loops_give_the_mask_the_reference_gradient(cell, mask, zoneout, lib):
    G = 4 if cell == "LSTM" else 3
    T, B, H = 5, 3, 4
    gen = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=gen).requires_grad_()
    xp, h0, c0, w, b = r(T, B, G * H), r(B, H), r(B, H), r(G * H, H), r(G * H)
    shape = (B, H) if mask == "tied" else (G, B, H)
    m = (torch.rand(shape, generator=gen) + 0.5).requires_grad_()   # a relaxed mask
    zh = torch.bernoulli(torch.full((T, B, H), 0.3), generator=gen) if zoneout else None
    kernels = _cext.kernels() if lib == "C" else None
    if lib == "C" and kernels is None:
        pytest.skip("no C compiler")
    impl = Impl(packed=use_packed(xp), lib=kernels)
    if cell == "LSTM":
        ins = (xp, h0, c0, w, m)
        got = _lstm.recurrence(impl, xp, h0, c0, w, m, zh, None)
        want = _recurrence.lstm_recurrence(xp, h0, c0, w, m, zh, None)
    else:
        ins = (xp, h0, w, b, m)
        got = _gru.recurrence(impl, xp, h0, w, b[:3 * H], m, zh)
        want = _recurrence.gru_recurrence(xp, h0, w, b[:3 * H], m, zh)
    gouts = [torch.randn(o.shape, generator=gen) for o in want]
    for a, c in zip(torch.autograd.grad(got, ins, gouts), torch.autograd.grad(want, ins, gouts)):
        torch.testing.assert_close(a, c, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mask", ["tied", "untied"])
def test_mask_gradient_gradcheck_float64(mask):
    T, B, H = 4, 2, 3
    gen = torch.Generator().manual_seed(1)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64).requires_grad_()
    for G, rec in ((4, _lstm.recurrence), (3, _gru.recurrence)):
        m = (torch.rand((B, H) if mask == "tied" else (G, B, H), generator=gen,
                        dtype=torch.float64) + 0.5).requires_grad_()
        xp, h0, w = r(T, B, G * H), r(B, H), r(G * H, H)
        if G == 4:
            c0 = r(B, H)
            fn = lambda xp, h0, c0, w, m: rec(Impl(), xp, h0, c0, w, m)
            assert torch.autograd.gradcheck(fn, (xp, h0, c0, w, m))
        else:
            b = r(G * H)
            fn = lambda xp, h0, w, b, m: rec(Impl(), xp, h0, w, b, m)
            assert torch.autograd.gradcheck(fn, (xp, h0, w, b, m))


def test_eval_is_the_plain_layer_and_deterministic():
    torch.manual_seed(0)
    learned = LSTM(3, 4, learn_dropout=True, **KW).eval()
    plain = LSTM(3, 4, **KW).eval()
    plain.load_state_dict({k: v for k, v in learned.state_dict().items()
                           if not k.startswith("concrete_")})
    x = torch.randn(5, 2, 3)
    assert torch.equal(learned(x)[0], plain(x)[0])
    assert torch.equal(learned(x)[0], learned(x)[0])


def test_regularizer_is_the_sum_over_sites_with_their_weights():
    torch.manual_seed(0)
    layer = LSTM(3, 4, learn_dropout=True, **KW)
    dec = torch.randn(9, 4)
    wr, dr = 1e-2, 1e-3
    c = lambda m, ws, K: concrete_regularizer(m.p_logit, ws, K, wr, dr)
    want = (c(layer.concrete_input, [layer.weight_ih_l0], 3)
            + c(layer.concrete_between[0], [layer.weight_ih_l1], 4)
            + c(layer.concrete_hidden[0], [layer.weight_hh_l0], 4)
            + c(layer.concrete_hidden[1], [layer.weight_hh_l1], 4)
            + c(layer.concrete_output, [dec], 4))
    torch.testing.assert_close(layer.regularizer(wr, dr, dec), want)
    assert LSTM(3, 4).regularizer(wr, dr).item() == 0.0


def test_learned_rates_survive_reset_and_sites_at_zero_have_none():
    layer = LSTM(3, 4, dropout_hidden=0.25, learn_dropout=True)
    layer.reset_parameters()
    assert layer.dropout_rates() == pytest.approx({"hidden_l0": 0.25})
    assert "learn_dropout=True" in repr(layer)
    assert LSTM(3, 4).dropout_rates() == {}


@pytest.mark.parametrize("kwargs", [dict(variational=False), dict(tied=False),
                                    dict(hidden_mask="batch")])
def test_learn_dropout_needs_variational_tied_sample_masks(kwargs):
    with pytest.raises(ValueError, match="learn_dropout needs"):
        LSTM(3, 4, learn_dropout=True, **kwargs)
