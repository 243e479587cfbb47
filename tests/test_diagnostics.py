"""Gradient-flow diagnostics: hook-measured gradient norms against direct autograd, Jacobian
products, spectral norms, saturation, decay rate, clipping, plots and tables."""
import math

import pytest
import torch
import torch.nn as nn

from rnndrop import diagnostics as D
from rnndrop.diagnostics._rerun import _spec
from rnndrop.rnn import GRU, LSTM, RNN

TORCH_CELLS = {"RNN": torch.rnn_tanh_cell, "LSTM": torch.lstm_cell, "GRU": torch.gru_cell}


def _hand_loop(module, x, kind, hx=None):
    """Independent reference: torch's own cell functions, one per step and layer; returns the
    last layer's output and the list of per-layer lists of h_t."""
    L, H = module.num_layers, module.hidden_size
    B = x.shape[1]
    hs = []
    inp = x
    for k in range(L):
        w = [getattr(module, f"{n}_l{k}") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        if kind == "LSTM":
            state = (hx[0][k], hx[1][k]) if hx is not None else (x.new_zeros(B, H), x.new_zeros(B, H))
        else:
            state = hx[k] if hx is not None else x.new_zeros(B, H)
        h_k = []
        for t in range(x.shape[0]):
            state = TORCH_CELLS[kind](inp[t], state, *w)
            h_k.append(state[0] if kind == "LSTM" else state)
        hs.append(h_k)
        inp = torch.stack(h_k)
    return inp, hs


def _make(kind, layers, seed=0, **kw):
    torch.manual_seed(seed)
    return {"RNN": nn.RNN, "LSTM": nn.LSTM, "GRU": nn.GRU}[kind](4, 6, num_layers=layers, **kw)


def _loss_fn(T, B, H, seed=1):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(T, B, H, generator=g)
    return lambda out: (out * w).sum() + 0.5 * out[-1].square().sum()


def _snapshot(model):
    return {
        "params": {n: p.detach().clone() for n, p in model.named_parameters()},
        "grads": {n: (None if p.grad is None else p.grad.clone()) for n, p in model.named_parameters()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "hooks": [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks),
                   len(getattr(m, "_backward_pre_hooks", {}))) for m in model.modules()],
        "param_hooks": {n: p._backward_hooks for n, p in model.named_parameters()},
        "training": model.training,
    }


def _assert_same(a, b):
    assert a["params"].keys() == b["params"].keys()
    for n in a["params"]:
        assert torch.equal(a["params"][n], b["params"][n])
        ga, gb = a["grads"][n], b["grads"][n]
        assert (ga is None and gb is None) or torch.equal(ga, gb)
    for k in ("requires_grad", "hooks", "param_hooks", "training"):
        assert a[k] == b[k], k


# ----------------------------------------------------------------------------- grad norms
@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("layers", [1, 2])
def test_hook_norms_match_direct_autograd(kind, layers):
    model = _make(kind, layers)
    T, B, H = 5, 3, 6
    x = torch.randn(T, B, 4)
    hx = torch.randn(layers, B, H)
    hx = (hx, torch.randn(layers, B, H)) if kind == "LSTM" else hx
    loss_fn = _loss_fn(T, B, H)

    out, hs = _hand_loop(model, x, kind, hx)
    torch.testing.assert_close(out, model(x, hx)[0], atol=1e-5, rtol=0)
    flat = [h for layer in hs for h in layer]
    grads = torch.autograd.grad(loss_fn(out), flat)
    ref = torch.stack([g.norm() for g in grads]).view(layers, T).double()
    ref_sample = torch.stack([g.norm(dim=1).mean() for g in grads]).view(layers, T).double()

    res = D.grad_norms_over_time(model, x, loss_fn, hx)
    assert res.norms.shape == (layers, T)
    torch.testing.assert_close(res.norms, ref, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(res.sample_norms, ref_sample, rtol=1e-5, atol=1e-7)
    assert res.loss == pytest.approx(float(loss_fn(out).detach()), rel=1e-5)
    top = D.grad_norms_over_time(model, x, loss_fn, hx, per_layer=False)
    torch.testing.assert_close(top.norms, ref[-1], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("make", [
    lambda: nn.LSTM(3, 5, num_layers=2, batch_first=True),
    lambda: nn.RNN(3, 5, nonlinearity="relu", batch_first=True),
    lambda: RNN(3, 5, num_layers=2, activation="sigmoid", batch_first=True),
    lambda: RNN(3, 5, activation="leaky_relu", batch_first=True),
    lambda: GRU(3, 5, num_layers=2, batch_first=True, dropout_hidden=0.3),
    lambda: LSTM(3, 5, num_layers=3, batch_first=True, skip=True),
])
def test_rerun_matches_module_forward(make):
    """The step-by-step re-run computes what the module computes in eval mode."""
    torch.manual_seed(0)
    model = make().eval()
    x = torch.randn(2, 4, 3)
    seen = {}
    D.grad_norms_over_time(model, x, lambda out: seen.setdefault("out", out).sum())
    torch.testing.assert_close(seen["out"], model(x)[0], atol=1e-5, rtol=0)
    # unbatched input
    D.grad_norms_over_time(model, x[0], lambda out: seen.setdefault("u", out).sum())
    torch.testing.assert_close(seen["u"], model(x[0])[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("a", [0.5, 0.9, 1.25])
def test_linear_rnn_decay_equals_a(a):
    """h_t = a·h_{t-1} + W_ih x_t, loss on the last step: ‖∂L/∂h_t‖ = a^{T-t} ‖∂L/∂h_T‖."""
    T = 12
    torch.manual_seed(0)
    model = nn.RNN(3, 4)
    with torch.no_grad():
        model.weight_hh_l0.copy_(a * torch.eye(4))
    x = torch.randn(T, 2, 3)
    res = D.grad_norms_over_time(model, x, lambda out: out[-1].square().sum(), activation="linear")
    assert D.decay_rate(res) == pytest.approx(a, abs=1e-4)
    assert res.decay_rate() == pytest.approx(a, abs=1e-4)
    expected = res.top[-1] * a ** torch.arange(T - 1, -1, -1, dtype=torch.float64)
    torch.testing.assert_close(res.top, expected, rtol=1e-5, atol=0)

    # the same recurrence written by hand, as a cell callable
    W = a * torch.eye(4)
    res2 = D.grad_norms_over_time(lambda x_t, h: h @ W.t() + x_t @ model.weight_ih_l0.t(), x,
                                  lambda out: out[-1].square().sum(), hx=torch.zeros(2, 4))
    assert D.decay_rate(res2) == pytest.approx(a, abs=1e-4)


def test_torch_cells_accepted():
    torch.manual_seed(0)
    lstm = nn.LSTM(3, 5)
    cell = nn.LSTMCell(3, 5)
    cell.load_state_dict({k.replace("_l0", ""): v for k, v in lstm.state_dict().items()})
    x = torch.randn(6, 2, 3)
    loss_fn = _loss_fn(6, 2, 5)
    a = D.grad_norms_over_time(lstm, x, loss_fn)
    b = D.grad_norms_over_time(cell, x, loss_fn)
    torch.testing.assert_close(b.norms, a.norms, rtol=1e-5, atol=1e-7)


def test_model_left_unchanged():
    torch.manual_seed(0)
    model = nn.LSTM(3, 5, num_layers=2)
    model(torch.randn(4, 2, 3))[0].sum().backward()   # pre-existing .grad must survive as is
    model.weight_ih_l1.requires_grad_(False)
    model.train()
    before = _snapshot(model)
    x = torch.randn(4, 2, 3)
    D.grad_norms_over_time(model, x, lambda o: o.sum())
    D.jacobian_products(model, x, layer=1)
    D.saturation_report(model, x)
    D.spectral_norms(model, per_gate=True)
    _assert_same(before, _snapshot(model))
    # fully frozen model still measurable
    for p in model.parameters():
        p.requires_grad_(False)
    res = D.grad_norms_over_time(model, x, lambda o: o.sum())
    assert torch.all(res.norms > 0)
    assert all(not p.requires_grad for p in model.parameters())


def test_unused_steps_have_zero_norm_and_scalar_check():
    model = _make("GRU", 1)
    x = torch.randn(5, 2, 4)
    res = D.grad_norms_over_time(model, x, lambda o: o[2].sum())
    assert torch.all(res.top[3:] == 0) and torch.all(res.top[:3] > 0)
    with pytest.raises(ValueError, match="scalar"):
        D.grad_norms_over_time(model, x, lambda o: o.sum(0))


# ----------------------------------------------------------------------------- decay rate
def test_decay_rate_basic():
    n = 3.0 * 0.8 ** torch.arange(9, -1, -1, dtype=torch.float64)   # grows with t
    assert D.decay_rate(n) == pytest.approx(0.8, rel=1e-12)
    assert D.decay_rate([1.0, 2.0, 4.0, 0.0]) == pytest.approx(0.5)   # zero left out
    assert math.isnan(D.decay_rate([1.0]))
    with pytest.raises(ValueError):
        D.decay_rate(torch.ones(2, 3))


# -------------------------------------------------------------------------------- jacobians
@pytest.mark.parametrize("shape", [(8, 8), (24, 6), (5, 13), (3, 4, 5)])
def test_spectral_norm_matches_linalg(shape):
    torch.manual_seed(0)
    W = torch.randn(*shape)
    ref = float(torch.linalg.matrix_norm(W.reshape(shape[0], -1).double(), ord=2))
    assert D.spectral_norm(W) == pytest.approx(ref, rel=1e-4)
    assert D.spectral_norm(torch.zeros(3, 3)) == 0.0


def test_spectral_norms_of_module():
    model = _make("LSTM", 2)
    s = D.spectral_norms(model)
    assert set(s) == {"weight_hh_l0", "weight_hh_l1"}
    ref = float(torch.linalg.matrix_norm(model.weight_hh_l1.detach().double(), ord=2))
    assert s["weight_hh_l1"] == pytest.approx(ref, rel=1e-4)
    g = D.spectral_norms(nn.Sequential(model), per_gate=True)
    assert set(g) == {f"0.weight_hh_l{k}.{n}" for k in (0, 1) for n in "ifgo"}
    blk = model.weight_hh_l0.detach()[6:12].double()   # rows of gate f (H = 6)
    assert g["0.weight_hh_l0.f"] == pytest.approx(float(torch.linalg.matrix_norm(blk, ord=2)), rel=1e-4)


def test_jacobian_products_linear_rnn():
    a, T = 0.7, 6
    model = nn.RNN(2, 3)
    with torch.no_grad():
        model.weight_hh_l0.copy_(a * torch.eye(3))
    x = torch.randn(T, 2)                                       # unbatched
    j = D.jacobian_products(model, x, activation="linear")
    torch.testing.assert_close(j, a ** torch.arange(T, -1, -1, dtype=torch.float64), rtol=1e-5, atol=0)
    jf = D.jacobian_products(model, x, activation="linear", norm="fro")
    torch.testing.assert_close(jf, math.sqrt(3) * j, rtol=1e-5, atol=0)


def _brute_force(step, x, s0, t):
    """‖∂s_T/∂s_t‖₂ by differentiating the unrolled map s_t -> s_T."""
    s = s0
    for k in range(t):
        s = step(x[k], s)
    def unroll(s_):
        for k in range(t, x.shape[0]):
            s_ = step(x[k], s_)
        return s_
    J = torch.autograd.functional.jacobian(unroll, s)
    return float(torch.linalg.matrix_norm(J.double(), ord=2))


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_jacobian_products_match_brute_force(kind):
    model = _make(kind, 2)
    T = 5
    x = torch.randn(T, 2, 4)
    j = D.jacobian_products(model, x, layer=1)
    assert j.shape == (2, T + 1)
    out0, hs = _hand_loop(model, x, kind)
    layer_in = torch.stack(hs[0])                               # input of layer 1
    w = [getattr(model, f"{n}_l1") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    H = 6
    if kind == "LSTM":
        step = lambda x_t, s: torch.cat(torch.lstm_cell(x_t[None], (s[None, :H], s[None, H:]), *w), 1)[0]
        s0 = torch.zeros(2 * H)
    else:
        step = lambda x_t, s: TORCH_CELLS[kind](x_t[None], s[None], *w)[0]
        s0 = torch.zeros(H)
    for b in range(2):
        for t in (0, 2, T - 1, T):
            assert float(j[b, t]) == pytest.approx(_brute_force(step, layer_in[:, b], s0, t), rel=1e-4)


def test_jacobian_products_cell_equals_module():
    torch.manual_seed(0)
    rnn = nn.RNN(3, 4)
    cell = nn.RNNCell(3, 4)
    cell.load_state_dict({k.replace("_l0", ""): v for k, v in rnn.state_dict().items()})
    x = torch.randn(5, 2, 3)
    h0 = torch.randn(2, 4)
    torch.testing.assert_close(D.jacobian_products(cell, x, h0), D.jacobian_products(rnn, x, h0[None]))
    lstm = nn.LSTM(3, 4)
    full = D.jacobian_products(lstm, x[:, 0], part="full")
    hblk = D.jacobian_products(lstm, x[:, 0], part="h")
    assert full[-1] == pytest.approx(1.0) and hblk[-1] == pytest.approx(1.0)
    assert torch.all(hblk <= full + 1e-9)


# ------------------------------------------------------------------------------ saturation
def test_saturation_on_constructed_preactivations():
    z = torch.tensor([[0.0, 5.0], [-5.0, 1.0]])
    assert D.saturation(z, "tanh") == 0.5                       # |tanh'(±5)| ≈ 1.8e-4
    # σ'(4) ≈ 0.018 (not saturated), σ'(±5) ≈ 0.0066 (saturated)
    assert D.saturation(torch.tensor([0.0, 4.0, 5.0, -6.0]), "sigmoid") == 0.5
    relu = torch.tensor([[[-1.0, 2.0, 0.0]], [[-3.0, -1.0, -0.5]]])   # (T, B, H)
    assert D.saturation(relu, "relu") == pytest.approx(2 / 3)   # units 0 and 2 dead
    assert D.saturation(relu, "leaky_relu") == pytest.approx(2 / 3)
    assert D.saturation(z, "linear") == 0.0
    assert D.saturation(z, "tanh", threshold=0.5) == 0.75   # tanh'(1) ≈ 0.42
    torch.testing.assert_close(D.activation_derivative(torch.tensor([-2.0, 3.0]), "leaky_relu", 0.1),
                               torch.tensor([0.1, 1.0]))


def test_collect_preactivations_and_report():
    torch.manual_seed(0)
    lstm = nn.LSTM(3, 5, num_layers=2, batch_first=True)
    x = torch.randn(2, 7, 3)
    pre = D.collect_preactivations(lstm, x)
    assert len(pre) == 2 and set(pre[0]) == set("ifgoc")
    assert pre[1]["f"].shape == (7, 2, 5)                       # time-major
    c_last = pre[1]["c"][-1]
    torch.testing.assert_close(c_last, lstm(x)[1][1][-1], atol=1e-5, rtol=0)
    rep = D.saturation_report(lstm, x)
    assert set(rep) == {f"l{k}.{g}" for k in (0, 1) for g in "ifgoc"}
    assert all(0.0 <= v <= 1.0 for v in rep.values())

    big = RNN(3, 8, activation="sigmoid")
    with torch.no_grad():
        big.weight_ih_l0.mul_(1000)
    assert D.saturation_report(big, torch.randn(6, 4, 3))["l0.h"] > 0.9
    relu = nn.RNN(3, 4, nonlinearity="relu")
    with torch.no_grad():
        relu.bias_ih_l0.fill_(-100.0)
    assert D.saturation_report(relu, torch.randn(5, 2, 3))["l0.h"] == 1.0
    gru = nn.GRU(3, 4)
    assert set(D.saturation_report(gru, torch.randn(5, 2, 3))) == {"l0.r", "l0.z", "l0.n"}


# --------------------------------------------------------------------------- plot / table
def test_plot_and_table(tmp_path):
    model = _make("RNN", 2)
    x = torch.randn(8, 2, 4)
    res = D.grad_norms_over_time(model, x, lambda o: o[-1].sum())
    results = {"rnn": res, "geom": 0.5 ** torch.arange(8, 0, -1, dtype=torch.float64),
               "flat": [1.0] * 8}
    path = D.plot_grad_norms(results, tmp_path / "sub" / "norms.png", title="t")
    assert path.exists() and path.stat().st_size > 1000
    table = D.summary_table(results)
    lines = table.splitlines()
    assert len(lines) == 2 + 4                                  # header, rule, 2 layers + 2
    assert "rnn (layer 1)" in table and "decay/step" in lines[0]
    geom = next(l for l in lines if l.startswith("geom"))
    assert "0.5000" in geom


def test_errors():
    with pytest.raises(ValueError, match="bidirectional"):
        D.grad_norms_over_time(nn.LSTM(2, 3, bidirectional=True), torch.randn(3, 1, 2), lambda o: o.sum())
    with pytest.raises(ValueError, match="vanilla"):
        D.collect_preactivations(nn.GRU(2, 3), torch.randn(3, 1, 2), activation="linear")
    with pytest.raises(ValueError, match="activation"):
        D.saturation(torch.zeros(2), "swish")
    with pytest.raises(ValueError, match="hx is required"):
        D.grad_norms_over_time(lambda x, h: h, torch.randn(3, 1, 2), lambda o: o.sum())


def test_zoneout_layers_are_refused_by_the_rerun():
    with pytest.raises(ValueError, match="zoneout"):
        _spec(LSTM(3, 4, zoneout_cell=0.5))
    assert _spec(LSTM(3, 4, zoneout_cell=0.0)).kind == "LSTM"
