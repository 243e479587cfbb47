"""Zoneout (Krueger et al., 2016) in the layers, the reference loops and the fast CPU loops."""
import pytest
import torch
from torch import nn

from rnndrop import GRU, LSTM, RNN, _recurrence, fast
from rnndrop.fast import _cext, _gru, _lstm
from rnndrop.fast._common import Impl
from rnndrop.fast._gemm import use_packed

T, B, H, I = 5, 3, 4, 3


@pytest.fixture(params=["C", "torch ops"])
def impl(request):
    """The CPU float32 loops with zoneout: gate math in the fused C kernels, or in torch ops."""
    if request.param == "C":
        lib = _cext.kernels()
        if lib is None:
            pytest.skip("no C compiler: the fused kernels do not build")
        return Impl(packed=use_packed(torch.zeros(1)), lib=lib)
    return Impl(packed=use_packed(torch.zeros(1)))


def _weights(shape, kind, z, dtype, gen):
    """Zoneout weights: Bernoulli(z) per step or per sequence, or the constant z (eval)."""
    if kind == "eval":
        return torch.full(shape[-2:], z, dtype=dtype)
    shp = shape if kind == "step" else shape[-2:]
    return torch.bernoulli(torch.full(shp, z, dtype=dtype), generator=gen)


def _mask(kind, G, dtype, gen):
    if kind == "none":
        return None
    shape = (B, H) if kind == "tied" else (G, B, H)
    return torch.bernoulli(torch.full(shape, 0.7, dtype=dtype), generator=gen) / 0.7


def _inputs(G, dtype, gen):
    r = lambda *s: torch.randn(*s, dtype=dtype, generator=gen).requires_grad_()
    w = (torch.randn(G * H, H, dtype=dtype, generator=gen) * 0.5).requires_grad_()
    return r(T, B, G * H), r(B, H), r(B, H), w, r(G * H)


@pytest.mark.parametrize("mask", ["none", "tied", "untied"])
@pytest.mark.parametrize("kind", ["step", "seq", "eval"])
@pytest.mark.parametrize("which", ["both", "hidden", "cell"])
def test_fast_lstm_equals_reference_for_the_same_masks(impl, mask, kind, which):
    gen = torch.Generator().manual_seed(0)
    xp, h0, c0, w, _ = _inputs(4, torch.float32, gen)
    m = _mask(mask, 4, torch.float32, gen)
    zh = _weights((T, B, H), kind, 0.4, torch.float32, gen) if which != "cell" else None
    zc = _weights((T, B, H), kind, 0.5, torch.float32, gen) if which != "hidden" else None
    chosen = fast.select("LSTM", xp, h0, c0, w, m, zh, zc)
    assert chosen.func is _lstm.recurrence and chosen.args[0].lib is _cext.kernels()
    got = _lstm.recurrence(impl, xp, h0, c0, w, m, zh, zc)
    want = _recurrence.lstm_recurrence(xp, h0, c0, w, m, zh, zc)
    gouts = [torch.randn(o.shape, generator=gen) for o in want]
    ins = (xp, h0, c0, w)
    for a, b in zip(list(got) + list(torch.autograd.grad(got, ins, gouts)),
                    list(want) + list(torch.autograd.grad(want, ins, gouts))):
        torch.testing.assert_close(a, b, atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("mask", ["none", "tied", "untied"])
@pytest.mark.parametrize("kind", ["step", "seq", "eval"])
@pytest.mark.parametrize("bias", [True, False])
def test_fast_gru_equals_reference_for_the_same_masks(impl, mask, kind, bias):
    gen = torch.Generator().manual_seed(1)
    xp, h0, _, w, b = _inputs(3, torch.float32, gen)
    b = b[:3 * H].detach().requires_grad_() if bias else None
    m = _mask(mask, 3, torch.float32, gen)
    zh = _weights((T, B, H), kind, 0.4, torch.float32, gen)
    got = _gru.recurrence(impl, xp, h0, w, b, m, zh)
    want = _recurrence.gru_recurrence(xp, h0, w, b, m, zh)
    gouts = [torch.randn(o.shape, generator=gen) for o in want]
    ins = (xp, h0, w) + ((b,) if bias else ())
    for a, c in zip(list(got) + list(torch.autograd.grad(got, ins, gouts)),
                    list(want) + list(torch.autograd.grad(want, ins, gouts))):
        torch.testing.assert_close(a, c, atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("mask", ["none", "tied", "untied"])
@pytest.mark.parametrize("kind", ["step", "eval"])
def test_gradcheck_float64(mask, kind):
    gen = torch.Generator().manual_seed(2)
    xp, h0, c0, w, b = _inputs(4, torch.float64, gen)
    m = _mask(mask, 4, torch.float64, gen)
    zh = _weights((T, B, H), kind, 0.4, torch.float64, gen)
    zc = _weights((T, B, H), kind, 0.5, torch.float64, gen)
    impl = Impl()  # float64: the torch-op loops
    assert torch.autograd.gradcheck(
        lambda *a: _lstm.recurrence(impl, *a, m, zh, zc), (xp, h0, c0, w))
    xg, hg, _, wg, bg = _inputs(3, torch.float64, gen)
    mg = _mask(mask, 3, torch.float64, gen)
    bg = bg[:3 * H].detach().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda *a: _gru.recurrence(impl, *a, mg, zh), (xg, hg, wg, bg))
    xr, hr, _, wr, _ = _inputs(1, torch.float64, gen)
    assert torch.autograd.gradcheck(
        lambda *a: _recurrence.rnn_recurrence(*a, torch.tanh, None, zh), (xr, hr, wr))


CELLS = [(LSTM, nn.LSTM, dict(zoneout_hidden=0.3, zoneout_cell=0.5)),
         (GRU, nn.GRU, dict(zoneout=0.3)), (RNN, nn.RNN, dict(zoneout=0.3))]


@pytest.mark.parametrize("cls,tcls,kw", CELLS)
@pytest.mark.parametrize("variational", [False, True])
def test_layer_fast_route_equals_reference_route(monkeypatch, cls, tcls, kw, variational):
    torch.manual_seed(0)
    layer = cls(I, H, num_layers=2, bidirectional=True, dropout_hidden=0.3, dropout_input=0.2,
                zoneout_variational=variational, **kw)
    x = torch.randn(T, B, I)
    params = list(layer.parameters())

    def run():
        torch.manual_seed(7)
        out, state = layer(x, lengths=torch.tensor([5, 2, 4]))
        states = list(state) if cls is LSTM else [state]
        loss = out.square().sum() + sum(s.sum() for s in states)
        return [out, *states, *torch.autograd.grad(loss, params)]

    got = run()
    monkeypatch.setattr(fast, "select",
                        lambda c, *a: getattr(_recurrence, f"{c.lower()}_recurrence"))
    want = run()
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cls,tcls,kw", CELLS)
def test_zero_zoneout_is_no_zoneout_bitwise_and_torch_at_no_dropout(cls, tcls, kw):
    zero = {k: 0.0 for k in kw}
    torch.manual_seed(0)
    plain = cls(I, H, num_layers=2, dropout_hidden=0.3, dropout_input=0.2)
    zoned = cls(I, H, num_layers=2, dropout_hidden=0.3, dropout_input=0.2, **zero)
    zoned.load_state_dict(plain.state_dict())
    x = torch.randn(T, B, I)
    for train in (True, False):
        plain.train(train), zoned.train(train)
        torch.manual_seed(3)
        a = plain(x)
        torch.manual_seed(3)
        b = zoned(x)
        assert torch.equal(a[0], b[0])
    ref = tcls(I, H, num_layers=2)
    ours = cls.from_torch(ref, **zero)
    for train in (True, False):
        ref.train(train), ours.train(train)
        assert torch.equal(ours(x)[0], ref(x)[0])


@pytest.mark.parametrize("cls,tcls,kw", CELLS)
def test_zoneout_one_in_training_keeps_the_initial_state(cls, tcls, kw):
    ones = {k: 1.0 for k in kw}
    layer = cls(I, H, num_layers=2, dropout_hidden=0.3, **ones)
    x = torch.randn(T, B, I)
    h0 = torch.randn(2, B, H)
    c0 = torch.randn(2, B, H)
    out, state = layer(x, (h0, c0) if cls is LSTM else h0)
    assert torch.equal(out, h0[1].expand(T, B, H))
    if cls is LSTM:
        assert torch.equal(state[0], h0) and torch.equal(state[1], c0)
    else:
        assert torch.equal(state, h0)
    layer.eval()  # at eval the expectation, z = 1: still the initial state
    assert torch.equal(layer(x, (h0, c0) if cls is LSTM else h0)[0], h0[1].expand(T, B, H))


@pytest.mark.parametrize("cls,tcls,kw", CELLS)
def test_eval_is_the_expectation(cls, tcls, kw):
    torch.manual_seed(0)
    layer = cls(I, H, **kw).eval()
    x, h0, c0 = torch.randn(T, B, I), torch.randn(B, H), torch.randn(B, H)
    cell = {LSTM: nn.LSTMCell, GRU: nn.GRUCell, RNN: nn.RNNCell}[cls](I, H)
    cell.load_state_dict({k[:-3]: v for k, v in layer.state_dict().items()})
    zh = kw.get("zoneout", kw.get("zoneout_hidden"))
    zc = kw.get("zoneout_cell", 0.0)
    h, c, outs = h0, c0, []
    with torch.no_grad():
        for t in range(T):
            if cls is LSTM:
                hn, cn = cell(x[t], (h, c))
                h, c = zh * h + (1 - zh) * hn, zc * c + (1 - zc) * cn
            else:
                h = zh * h + (1 - zh) * cell(x[t], h)
            outs.append(h)
        out, state = layer(x, (h0[None], c0[None]) if cls is LSTM else h0[None])
    torch.testing.assert_close(out, torch.stack(outs))
    if cls is LSTM:
        torch.testing.assert_close(state[1][0], c)
    # not the training function: in training the masks make the output random
    layer.train()
    torch.manual_seed(1)
    assert not torch.allclose(layer(x, (h0[None], c0[None]) if cls is LSTM else h0[None])[0], out)


@pytest.mark.parametrize("cls,tcls,kw", CELLS)
def test_lengths_and_bidirectional_at_eval_equal_separate_runs(cls, tcls, kw):
    torch.manual_seed(0)
    layer = cls(I, H, num_layers=2, bidirectional=True, **kw).eval()
    x = torch.randn(T, B, I)
    lengths = [5, 2, 4]
    out, state = layer(x, lengths=torch.tensor(lengths))
    hn = state[0] if cls is LSTM else state
    for b, n in enumerate(lengths):
        o, s = layer(x[:n, b:b + 1])
        torch.testing.assert_close(out[:n, b:b + 1], o, atol=1e-6, rtol=1e-5)
        assert torch.equal(out[n:, b], torch.zeros_like(out[n:, b]))
        torch.testing.assert_close(hn[:, b:b + 1], s[0] if cls is LSTM else s, atol=1e-6, rtol=1e-5)
        if cls is LSTM:
            torch.testing.assert_close(state[1][:, b:b + 1], s[1], atol=1e-6, rtol=1e-5)


def test_training_with_lengths_freezes_the_state_past_each_end():
    """z = 1 after the end would be the same as frozen: h_n and c_n are those of the last real
    step, whatever the masks drew afterwards (the same draw with the whole length)."""
    torch.manual_seed(0)
    layer = LSTM(I, H, zoneout_hidden=0.4, zoneout_cell=0.6)
    x = torch.randn(T, 1, I)
    torch.manual_seed(5)
    out, (h, c) = layer(x, lengths=torch.tensor([3]))
    torch.manual_seed(5)
    full, _ = layer(x)
    torch.testing.assert_close(out[:3], full[:3])
    torch.testing.assert_close(h[0], out[2])
    assert torch.equal(out[3:], torch.zeros_like(out[3:]))


def _kept_from_start(out, h0):
    """(T, B, H) bool: the unit still holds h0 at step t."""
    return out == h0.unsqueeze(0)


def test_per_sequence_masks_are_constant_over_time(monkeypatch):
    torch.manual_seed(0)
    h0 = torch.randn(1, 8, 16)
    x = torch.randn(12, 8, I)
    layer = GRU(I, 16, zoneout=0.5, zoneout_variational=True)
    seen = []
    real = fast.select
    monkeypatch.setattr(fast, "select", lambda c, *a: seen.append(a[5].shape) or real(c, *a))
    out, _ = layer(x, h0)
    assert seen == [(8, 16)]            # one (B, H) mask for the whole sequence
    kept = _kept_from_start(out, h0[0])
    # a unit zoned out at step 0 is zoned out at every step; the others move at once
    assert torch.equal(kept, kept[0].expand_as(kept))
    assert 0 < kept[0].float().mean() < 1
    fresh = GRU(I, 16, zoneout=0.5)     # per step: masks change over time
    fresh.load_state_dict(layer.state_dict())
    seen.clear()
    kept = _kept_from_start(fresh(x, h0)[0], h0[0])
    assert seen == [(12, 8, 16)]
    assert not torch.equal(kept, kept[0].expand_as(kept))


def test_fresh_masks_keep_units_at_rate_z():
    torch.manual_seed(0)
    layer = GRU(I, 64, zoneout=0.3)
    h0 = torch.randn(1, 32, 64)
    x = torch.randn(1, 32, I)
    kept = (layer(x, h0)[0][0] == h0[0]).float().mean().item()
    assert abs(kept - 0.3) < 0.05


@pytest.mark.parametrize("cls,kwargs,match", [
    (GRU, dict(zoneout=1.5), "zoneout must"),
    (RNN, dict(zoneout=-0.1), "zoneout must"),
    (LSTM, dict(zoneout_hidden=2.0), "zoneout_hidden must"),
    (LSTM, dict(zoneout_cell=-1.0), "zoneout_cell must"),
    (LSTM, dict(zoneout_cell=float("nan")), "zoneout_cell must"),
    (GRU, dict(zoneout_cell=0.2), "zoneout_cell is for the LSTM only"),
    (LSTM, dict(zoneout=0.1, zoneout_hidden=0.2), "not both"),
])
def test_bad_zoneout_is_a_one_line_value_error(cls, kwargs, match):
    with pytest.raises(ValueError, match=match) as e:
        cls(I, H, **kwargs)
    assert "\n" not in str(e.value)


def test_lstm_accepts_zoneout_as_its_hidden_zoneout_and_repr_shows_it():
    layer = LSTM(I, H, zoneout=0.1, zoneout_cell=0.5, zoneout_variational=True)
    assert layer.zoneout_hidden == layer.zoneout == 0.1
    assert "zoneout_hidden=0.1, zoneout_cell=0.5" in repr(layer)
    assert "zoneout_variational=True" in repr(layer)
