"""Recurrent layers: agreement with torch.nn, gradcheck with dropout, mask semantics, errors."""
import doctest
import inspect
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import rnndrop
from rnndrop import _recurrence, rnn as rnn_mod
from rnndrop.dropout import bernoulli_mask
from rnndrop.rnn import GRU, LSTM, RNN

CASES = [(LSTM, nn.LSTM, {}), (GRU, nn.GRU, {}), (RNN, nn.RNN, {}),
         (RNN, nn.RNN, {"nonlinearity": "relu"})]


def _grads(params):
    return [p.grad.clone() for p in params]


@pytest.mark.parametrize("cls,tcls,kw", CASES)
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_matches_torch_forward_and_gradients(cls, tcls, kw, layers, batch_first, bias):
    torch.manual_seed(0)
    ref = tcls(5, 7, num_layers=layers, batch_first=batch_first, bias=bias, **kw)
    ours = cls.from_torch(ref)
    assert list(ours.state_dict()) == list(ref.state_dict())
    x = torch.randn((3, 4, 5) if batch_first else (4, 3, 5))
    h0 = torch.randn(layers, 3, 7)
    hx = (h0, torch.randn(layers, 3, 7)) if cls is LSTM else h0
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    o1, s1 = ref(x1, hx)
    o2, s2 = ours(x2, hx)
    torch.testing.assert_close(o2, o1, atol=1e-5, rtol=0)
    for a, b in zip(torch.utils._pytree.tree_leaves(s1), torch.utils._pytree.tree_leaves(s2)):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=0)
    (o1.square().sum() + sum(s.sum() for s in torch.utils._pytree.tree_leaves(s1))).backward()
    (o2.square().sum() + sum(s.sum() for s in torch.utils._pytree.tree_leaves(s2))).backward()
    torch.testing.assert_close(x2.grad, x1.grad, atol=1e-5, rtol=0)
    for g1, g2 in zip(_grads(ref.parameters()), _grads(ours.parameters())):
        torch.testing.assert_close(g2, g1, atol=1e-5, rtol=0)


@pytest.mark.parametrize("cls,tcls,kw", CASES)
def test_unbatched_input(cls, tcls, kw):
    torch.manual_seed(0)
    ref = tcls(3, 4, num_layers=2, **kw)
    ours = cls.from_torch(ref)
    x = torch.randn(6, 3)
    o1, s1 = ref(x)
    o2, s2 = ours(x)
    torch.testing.assert_close(o2, o1, atol=1e-5, rtol=0)


@pytest.mark.parametrize("cls,tcls,kw", CASES)
def test_reference_loop_matches_torch(cls, tcls, kw):
    """The loop path (used whenever a per-sample recurrent mask is on) agrees with torch when the
    mask is all ones."""
    torch.manual_seed(0)
    ref = tcls(5, 6, **kw)
    x = torch.randn(4, 3, 5)
    w_ih, w_hh, b_ih, b_hh = ref.weight_ih_l0, ref.weight_hh_l0, ref.bias_ih_l0, ref.bias_hh_l0
    h0 = torch.randn(3, 6)
    ones = torch.ones(3, 6)
    if cls is LSTM:
        c0 = torch.randn(3, 6)
        out, h, c = _recurrence.lstm_recurrence(x @ w_ih.t() + b_ih + b_hh, h0, c0, w_hh, ones)
        o_ref, _ = ref(x, (h0[None], c0[None]))
    elif cls is GRU:
        out, h = _recurrence.gru_recurrence(x @ w_ih.t() + b_ih, h0, w_hh, b_hh, ones)
        o_ref, _ = ref(x, h0[None])
    else:
        act = rnn_mod.ACTIVATIONS[ref.nonlinearity]
        out, h = _recurrence.rnn_recurrence(x @ w_ih.t() + b_ih + b_hh, h0, w_hh, act, ones)
        o_ref, _ = ref(x, h0[None])
    torch.testing.assert_close(out, o_ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("activation", ["sigmoid", "leaky_relu"])
def test_other_activations_match_manual_loop(activation):
    torch.manual_seed(0)
    m = RNN(3, 5, activation=activation)
    x = torch.randn(6, 2, 3)
    act = torch.sigmoid if activation == "sigmoid" else (lambda z: F.leaky_relu(z, 0.01))
    h = torch.zeros(2, 5)
    outs = []
    for t in range(6):
        h = act(x[t] @ m.weight_ih_l0.t() + m.bias_ih_l0 + h @ m.weight_hh_l0.t() + m.bias_hh_l0)
        outs.append(h)
    torch.testing.assert_close(m(x)[0], torch.stack(outs))
    assert RNN(3, 5, nonlinearity="relu").activation == "relu"


DROP_CONFIGS = [
    dict(dropout_input=0.3, dropout_hidden=0.3, dropout_output=0.3, dropout_between=0.3),
    dict(dropout_input=0.3, dropout_hidden=0.3, dropout_between=0.3, tied=False),
    dict(dropout_input=0.3, dropout_output=0.3, dropout_between=0.3, variational=False),
    dict(dropout_hidden=0.4, hidden_mask="batch", weight_dropout=0.2),
    dict(dropout_hidden=0.3, skip=True),
]


@pytest.mark.parametrize("cls,kw", [(LSTM, {}), (GRU, {}), (RNN, {}),
                                    (RNN, {"activation": "sigmoid"})])
@pytest.mark.parametrize("drop", DROP_CONFIGS)
def test_gradcheck_with_dropout(cls, kw, drop):
    torch.manual_seed(0)
    m = cls(3, 4, num_layers=2, dtype=torch.float64, **kw, **drop)
    x = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 2, 4, dtype=torch.float64, requires_grad=True)
    params = list(m.parameters())

    def f(x, h0, *ps):
        torch.manual_seed(123)  # the same masks at every evaluation
        hx = (h0, h0 * 0.5) if cls is LSTM else h0
        out, _ = torch.func.functional_call(m, {n: p for (n, _), p in zip(m.named_parameters(), ps)},
                                            (x, hx))
        return out

    assert torch.autograd.gradcheck(f, (x, h0, *params), eps=1e-6, atol=1e-5)


def test_variational_masks_constant_over_time_zaremba_fresh():
    torch.manual_seed(0)
    T = 12
    x = torch.randn(T, 16, 8)
    var = LSTM(8, 32, dropout_output=0.5)
    out, _ = var(x)
    zeros = out == 0
    assert torch.equal(zeros, zeros[:1].expand_as(zeros))
    zar = LSTM(8, 32, dropout_output=0.5, variational=False)
    out, _ = zar(x)
    zeros = out == 0
    assert not torch.equal(zeros, zeros[:1].expand_as(zeros))


def test_hidden_dropout_changes_training_output_not_eval():
    torch.manual_seed(0)
    m = LSTM(4, 6, num_layers=2, dropout_hidden=0.5)
    ref = nn.LSTM(4, 6, num_layers=2)
    ref.load_state_dict(m.state_dict())
    x = torch.randn(5, 3, 4)
    assert not torch.allclose(m(x)[0], ref(x)[0])
    m.eval()
    torch.testing.assert_close(m(x)[0], ref(x)[0], atol=1e-6, rtol=0)


def test_untied_masks_match_explicit_per_gate_computation():
    """Untied: gate g sees x ∘ z_g and h ∘ m_g with its own masks (draw order: input, hidden)."""
    torch.manual_seed(0)
    T, B, I, H, p = 5, 3, 4, 6, 0.4
    m = LSTM(I, H, dropout_input=p, dropout_hidden=p, tied=False)
    x = torch.randn(T, B, I)
    torch.manual_seed(7)
    out, _ = m(x)
    torch.manual_seed(7)
    z = bernoulli_mask((4, 1, B, I), p)[:, 0]      # (4, B, I)
    mh = bernoulli_mask((4, B, H), p)
    W_ih, W_hh = m.weight_ih_l0.view(4, H, I), m.weight_hh_l0.view(4, H, H)
    b = (m.bias_ih_l0 + m.bias_hh_l0).view(4, H)
    h = c = torch.zeros(B, H)
    outs = []
    for t in range(T):
        pre = [(x[t] * z[g]) @ W_ih[g].t() + (h * mh[g]) @ W_hh[g].t() + b[g] for g in range(4)]
        i, f, g_, o = torch.sigmoid(pre[0]), torch.sigmoid(pre[1]), torch.tanh(pre[2]), torch.sigmoid(pre[3])
        c = f * c + i * g_
        h = o * torch.tanh(c)
        outs.append(h)
    torch.testing.assert_close(out, torch.stack(outs))


def test_batch_hidden_mask_runs_fused_kernel(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("loop path used")
    # every loop (fast or the reference) is chosen by fast.select
    monkeypatch.setattr(rnn_mod.fast, "select", boom)
    m = LSTM(4, 6, num_layers=2, dropout_hidden=0.5, hidden_mask="batch", dropout_input=0.3,
             dropout_between=0.3, weight_dropout=0.2)
    out, _ = m(torch.randn(5, 3, 4))
    assert out.shape == (5, 3, 6)
    with pytest.raises(AssertionError, match="loop path"):
        LSTM(4, 6, dropout_hidden=0.5)(torch.randn(5, 3, 4))


def test_import_leaves_warning_filters_alone():
    """Importing rnndrop (torch imported first: its filters are its own) adds no warning filter;
    running a fused layer leaves the filters as they were, too."""
    code = ("import warnings, torch\n"
            "before = list(warnings.filters)\n"
            "import rnndrop\n"
            "assert warnings.filters == before, warnings.filters[:len(warnings.filters) - len(before)]\n"
            "rnndrop.LSTM(3, 4, dropout_input=0.2)(torch.randn(5, 2, 3))\n"
            "assert warnings.filters == before\n"
            "print('ok')\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "ok" in res.stdout, res.stdout + res.stderr


@pytest.mark.parametrize("cls", [RNN, LSTM, GRU])
def test_docstrings_document_every_argument_and_their_examples_run(cls):
    doc = inspect.getdoc(cls)
    for section in ("Args:", "Inputs:", "Outputs:", "Attributes:", "Examples::"):
        assert section in doc, section
    names = [n for n in inspect.signature(rnn_mod._RNNBase.__init__).parameters if n != "self"]
    names += ["nonlinearity"] if cls is RNN else []
    for name in names:
        if cls is not RNN and name == "activation":
            continue
        assert f"\n    {name}: " in doc, name
    test = doctest.DocTestParser().get_doctest(doc, {"rnndrop": rnndrop, "torch": torch},
                                               cls.__name__, None, 0)
    assert test.examples
    result = doctest.DocTestRunner().run(test, out=lambda s: None)
    assert result.failed == 0


def test_skip_connection_is_residual_sum():
    torch.manual_seed(0)
    m = GRU(5, 5, num_layers=2, skip=True)
    l0, l1 = nn.GRU(5, 5), nn.GRU(5, 5)
    l0.weight_ih_l0, l0.weight_hh_l0, l0.bias_ih_l0, l0.bias_hh_l0 = m.weight_ih_l0, m.weight_hh_l0, m.bias_ih_l0, m.bias_hh_l0
    l1.weight_ih_l0, l1.weight_hh_l0, l1.bias_ih_l0, l1.bias_hh_l0 = m.weight_ih_l1, m.weight_hh_l1, m.bias_ih_l1, m.bias_hh_l1
    x = torch.randn(4, 2, 5)
    y0, _ = l0(x)
    y1, _ = l1(y0)
    torch.testing.assert_close(m(x)[0], y1 + y0)


def test_seed_makes_run_bitwise_repeatable():
    m = LSTM(4, 6, num_layers=2, dropout_input=0.3, dropout_hidden=0.3, tied=False)
    x = torch.randn(5, 3, 4)
    torch.manual_seed(3)
    a = m(x)[0]
    torch.manual_seed(3)
    b = m(x)[0]
    assert torch.equal(a, b)


@pytest.mark.parametrize("kwargs,match", [
    (dict(dropout_hidden=1.2), "dropout_hidden must"),
    (dict(dropout_input=-0.1), "dropout_input must"),
    (dict(dropout_hidden=0.3, variational=False), "Zaremba"),
    (dict(tied=False, variational=False), "untied"),
    (dict(hidden_mask="row"), "hidden_mask"),
    (dict(dropout=0.2, dropout_between=0.3), "not both"),
])
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LSTM(3, 4, **kwargs)


def test_bad_inputs_give_clear_errors():
    m = LSTM(3, 4, num_layers=2)
    with pytest.raises(ValueError, match="input_size. Expected 3, got 5"):
        m(torch.randn(2, 2, 5))
    with pytest.raises(ValueError, match="h_0 of shape"):
        m(torch.randn(2, 2, 3), (torch.zeros(1, 2, 4), torch.zeros(2, 2, 4)))
    with pytest.raises(TypeError, match="hx=\\(h_0, c_0\\)"):
        m(torch.randn(2, 2, 3), torch.zeros(2, 2, 4))
    with pytest.raises(TypeError, match="floating-point"):
        m(torch.ones(2, 2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="activation must"):
        RNN(3, 4, activation="softplus")
    with pytest.raises(ValueError, match="RNN only"):
        LSTM(3, 4, activation="relu")
    with pytest.raises(ValueError, match="hidden_size"):
        LSTM(3, 0)


@pytest.mark.parametrize("cls,tcls", [(LSTM, nn.LSTM), (GRU, nn.GRU)])
def test_from_torch_and_back_with_learned_rates(cls, tcls):
    # learn_dropout adds rate parameters torch.nn has no counterpart of: from_torch copies the
    # weights and leaves the rates at their start values, to_torch leaves the rates behind
    torch.manual_seed(0)
    ref = tcls(3, 4, num_layers=2, bidirectional=True)
    ours = cls.from_torch(ref, dropout_hidden=0.2, dropout_between=0.3, learn_dropout=True)
    rates = {k for k in ours.state_dict() if k not in ref.state_dict()}
    assert rates and all(k.startswith("concrete_") for k in rates)
    assert all(abs(float(m.p) - want) < 1e-6 for m, want in
               [(ours.concrete_hidden[0], 0.2), (ours.concrete_between[0], 0.3)])
    x = torch.randn(5, 2, 3)
    torch.testing.assert_close(ours.eval()(x)[0], ref(x)[0], atol=1e-5, rtol=0)
    back = ours.to_torch()
    assert back.state_dict().keys() == ref.state_dict().keys()
    for k, v in ref.state_dict().items():
        assert torch.equal(back.state_dict()[k], v)


def test_from_torch_rejects_a_layer_of_another_shape():
    ref = nn.LSTM(3, 4, num_layers=2)
    ref.register_parameter("weight_extra", nn.Parameter(torch.zeros(1)))
    with pytest.raises(ValueError, match="unexpected.*weight_extra"):
        LSTM.from_torch(ref)
