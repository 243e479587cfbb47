"""rnndrop.fast: same results and gradients as the autograd references in rnndrop._recurrence."""
import importlib.util
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from rnndrop import _recurrence, fast
from rnndrop.fast import _cext, _gemm

CUDA = torch.cuda.is_available()
SIZES = [(5, 3, 7), (1, 2, 4), (8, 4, 16), (3, 1, 1), (6, 5, 33)]
MASKS = ["none", "tied", "untied"]


def _close(a, b, tol=1e-5):
    """Max abs difference relative to the reference's largest magnitude (float32 rounding)."""
    assert a.shape == b.shape, (a.shape, b.shape)
    scale = max(1.0, b.abs().max().item())
    err = (a - b).abs().max().item() if a.numel() else 0.0
    assert err <= tol * scale, f"max abs err {err:.3g} > {tol:.1g} * {scale:.3g}"


def _mask(kind, G, B, H, device="cpu", dtype=torch.float32, p=0.4):
    if kind == "none":
        return None
    shape = (B, H) if kind == "tied" else (G, B, H)
    return torch.bernoulli(torch.full(shape, 1 - p, device=device, dtype=dtype)) / (1 - p)


def _inputs(T, B, H, G, device="cpu", dtype=torch.float32, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)

    def r(*s, scale=1.0):
        return (torch.randn(*s, generator=g, dtype=dtype) * scale).to(device).requires_grad_()
    return r(T, B, G * H), r(B, H), r(B, H), r(G * H, H, scale=H ** -0.5), r(G * H)


def _compare_lstm(T, B, H, kind, device="cpu", tol=1e-5, seed=0):
    torch.manual_seed(seed)
    xp, h0, c0, w, _ = _inputs(T, B, H, 4, device, seed=seed)
    m = _mask(kind, 4, B, H, device)
    outs = fast.lstm_recurrence(xp, h0, c0, w, m)
    refs = _recurrence.lstm_recurrence(xp, h0, c0, w, m)
    gouts = [torch.randn_like(o) for o in refs]
    gf = torch.autograd.grad(outs, (xp, h0, c0, w), gouts)
    gr = torch.autograd.grad(refs, (xp, h0, c0, w), gouts)
    for a, b in zip(list(outs) + list(gf), list(refs) + list(gr)):
        _close(a, b, tol)


def _compare_gru(T, B, H, kind, bias=True, device="cpu", tol=1e-5, seed=0):
    torch.manual_seed(seed)
    xp, h0, _, w, b = _inputs(T, B, H, 3, device, seed=seed)
    b = b[:3 * H].detach().requires_grad_() if bias else None
    m = _mask(kind, 3, B, H, device)
    ins = (xp, h0, w) + ((b,) if bias else ())
    outs = fast.gru_recurrence(xp, h0, w, b, m)
    refs = _recurrence.gru_recurrence(xp, h0, w, b, m)
    gouts = [torch.randn_like(o) for o in refs]
    gf = torch.autograd.grad(outs, ins, gouts)
    gr = torch.autograd.grad(refs, ins, gouts)
    for a, c in zip(list(outs) + list(gf), list(refs) + list(gr)):
        _close(a, c, tol)


@pytest.fixture(params=["cgemm+C", "cgemm-bwd+C", "onednn+C", "onednn", "onednn-blocks+C",
                        "onednn-blocks-packed+C", "torch+C", "torch"])
def cpu_impl(request, monkeypatch):
    """Every CPU implementation: the per-step products through the C kernel ``SmallGemm``
    ("cgemm", with the C gate kernels: the default where they build for AVX-512, forced here
    on any build; "cgemm-bwd": the tied forward product through oneDNN, as above
    ``SmallGemm.FWD_MAX_H`` units), through oneDNN (when this
    torch has the ops) or torch.mm, gate math in the fused C kernels (when they build) or in
    torch ops.
    "onednn-blocks": untied masks' per-gate products through oneDNN at every size (by default
    only from ``BlockLinear.BLOCKS_MIN`` units, larger than the sizes tested here), the backward
    blocks as views; "-packed": the backward blocks packed too (by default from
    ``BlockLinear.PACK_MIN`` units)."""
    products, _, c = request.param.partition("+")
    monkeypatch.setenv("RNNDROP_FAST_CGEMM", "1" if products.startswith("cgemm") else "0")
    if products == "cgemm-bwd":   # the tied forward product through oneDNN, as from FWD_MAX_H
        monkeypatch.setattr(_gemm.SmallGemm, "FWD_MAX_H", 0)
    if products.startswith(("onednn", "cgemm")):   # cgemm: the other products through oneDNN
        if not _gemm.packed_ok():
            pytest.skip("oneDNN packed linear ops unavailable in this torch build")
        monkeypatch.delenv("RNNDROP_FAST_NO_MKLDNN", raising=False)
        if products.startswith("onednn-blocks"):
            monkeypatch.setattr(_gemm.BlockLinear, "BLOCKS_MIN", 0)
        if products == "onednn-blocks-packed":
            monkeypatch.setattr(_gemm.BlockLinear, "PACK_MIN", 0)
    else:
        monkeypatch.setenv("RNNDROP_FAST_NO_MKLDNN", "1")
    if c:
        monkeypatch.setenv("RNNDROP_FAST_CEXT", "1")
        if _cext.kernels() is None:
            pytest.skip("fused C kernels unavailable (no C compiler?)")
    else:
        monkeypatch.setenv("RNNDROP_FAST_CEXT", "0")
    return request.param


@pytest.mark.parametrize("T,B,H", SIZES)
@pytest.mark.parametrize("kind", MASKS)
def test_lstm_matches_reference(cpu_impl, T, B, H, kind):
    _compare_lstm(T, B, H, kind)


@pytest.mark.parametrize("T,B,H", SIZES)
@pytest.mark.parametrize("kind", MASKS)
@pytest.mark.parametrize("bias", [True, False])
def test_gru_matches_reference(cpu_impl, T, B, H, kind, bias):
    _compare_gru(T, B, H, kind, bias)


@pytest.mark.parametrize("kind", ["tied", "untied"])
def test_lstm_saturated_gates(cpu_impl, kind):
    """Pre-activations far in the tails (|x| up to ~150): no overflow/NaN in the kernels."""
    torch.manual_seed(9)
    T, B, H = 6, 3, 5
    xp = (torch.randn(T, B, 4 * H) * 50).requires_grad_()
    h0, c0 = torch.randn(B, H, requires_grad=True), torch.randn(B, H, requires_grad=True)
    w = torch.randn(4 * H, H, requires_grad=True)
    m = _mask(kind, 4, B, H)
    outs = fast.lstm_recurrence(xp, h0, c0, w, m)
    refs = _recurrence.lstm_recurrence(xp, h0, c0, w, m)
    gf = torch.autograd.grad(sum(o.sum() for o in outs), (xp, h0, c0, w))
    gr = torch.autograd.grad(sum(o.sum() for o in refs), (xp, h0, c0, w))
    for a, b in zip(list(outs) + list(gf), list(refs) + list(gr)):
        assert torch.isfinite(a).all()
        _close(a, b, 2e-5)


def test_lstm_medium_size_float32():
    _compare_lstm(12, 20, 200, "tied", tol=2e-5)
    _compare_lstm(6, 20, 96, "untied", tol=2e-5)


@pytest.mark.parametrize("kind", MASKS)
def test_lstm_gradcheck_float64(kind):
    torch.manual_seed(1)
    T, B, H = 4, 2, 3
    xp, h0, c0, w, _ = _inputs(T, B, H, 4, dtype=torch.float64)
    m = _mask(kind, 4, B, H, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda *a: fast.lstm_recurrence(*a, m), (xp, h0, c0, w))


@pytest.mark.parametrize("kind", MASKS)
def test_gru_gradcheck_float64(kind):
    torch.manual_seed(2)
    T, B, H = 4, 2, 3
    xp, h0, _, w, b = _inputs(T, B, H, 3, dtype=torch.float64)
    b = b[:3 * H].detach().requires_grad_()
    m = _mask(kind, 3, B, H, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda *a: fast.gru_recurrence(*a, m), (xp, h0, w, b))


@pytest.mark.parametrize("kind", ["tied", "untied"])
def test_masks_of_ones_reproduce_torch_lstm(cpu_impl, kind):
    torch.manual_seed(3)
    T, B, I, H = 7, 3, 5, 6
    ref = torch.nn.LSTM(I, H)
    x = torch.randn(T, B, I)
    h0, c0 = torch.randn(1, B, H), torch.randn(1, B, H)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    o1, (h1, c1) = ref(x1, (h0, c0))
    w_ih, w_hh, b_ih, b_hh = (p.detach().clone().requires_grad_() for p in
                              (ref.weight_ih_l0, ref.weight_hh_l0, ref.bias_ih_l0, ref.bias_hh_l0))
    ones = torch.ones((B, H) if kind == "tied" else (4, B, H))
    xp = fast.linear(x2, w_ih, b_ih + b_hh)
    o2, h2, c2 = fast.lstm_recurrence(xp, h0[0], c0[0], w_hh, ones)
    for a, b in [(o2, o1), (h2, h1[0]), (c2, c1[0])]:
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    (o1.square().sum() + h1.sum() + c1.sum()).backward()
    (o2.square().sum() + h2.sum() + c2.sum()).backward()
    torch.testing.assert_close(x2.grad, x1.grad, atol=1e-5, rtol=0)
    for ours, theirs in [(w_ih, ref.weight_ih_l0), (w_hh, ref.weight_hh_l0),
                         (b_ih, ref.bias_ih_l0), (b_hh, ref.bias_hh_l0)]:
        torch.testing.assert_close(ours.grad, theirs.grad, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shape", [(4, 3, 5), (2, 6), (2, 3, 4, 5)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_functional(cpu_impl, shape, bias):
    torch.manual_seed(4)
    x = torch.randn(*shape, requires_grad=True)
    w = torch.randn(7, shape[-1], requires_grad=True)
    b = torch.randn(7, requires_grad=True) if bias else None
    ins = (x, w) + ((b,) if bias else ())
    y1, y2 = fast.linear(x, w, b), F.linear(x, w, b)
    g = torch.randn_like(y2)
    _close(y1, y2)
    for a, c in zip(torch.autograd.grad(y1, ins, g), torch.autograd.grad(y2, ins, g)):
        _close(a, c)


def test_partial_requires_grad_and_no_grad():
    torch.manual_seed(5)
    T, B, H = 4, 3, 5
    xp, h0, c0, w, b = _inputs(T, B, H, 4)
    m = _mask("tied", 4, B, H)
    # only xp needs a gradient; states and weight are constants
    xp2 = xp.detach().requires_grad_()
    out, _, _ = fast.lstm_recurrence(xp2, h0.detach(), c0.detach(), w.detach(), m)
    ref, _, _ = _recurrence.lstm_recurrence(xp2, h0.detach(), c0.detach(), w.detach(), m)
    _close(torch.autograd.grad(out.sum(), xp2)[0], torch.autograd.grad(ref.sum(), xp2)[0])
    # only the weight; output only through h_T
    _, hT, _ = fast.lstm_recurrence(xp.detach(), h0.detach(), c0.detach(), w, m)
    _, rT, _ = _recurrence.lstm_recurrence(xp.detach(), h0.detach(), c0.detach(), w, m)
    _close(torch.autograd.grad(hT.sum(), w)[0], torch.autograd.grad(rT.sum(), w)[0])
    with torch.no_grad():
        o1 = fast.lstm_recurrence(xp, h0, c0, w, m)[0]
        o2 = fast.gru_recurrence(xp[..., :3 * H], h0, w[:3 * H], b[:3 * H], m)[0]
    assert not o1.requires_grad and not o2.requires_grad
    _close(o1, _recurrence.lstm_recurrence(xp, h0, c0, w, m)[0].detach())


def test_bad_shapes_raise():
    xp, h0, c0, w, _ = _inputs(3, 2, 4, 4)
    with pytest.raises(ValueError):
        fast.lstm_recurrence(xp[..., :-1], h0, c0, w)
    with pytest.raises(ValueError):
        fast.lstm_recurrence(xp, h0, c0, w, torch.ones(3, 2, 4))
    with pytest.raises(ValueError):
        fast.gru_recurrence(xp, h0, w, None)


def test_mixed_dtypes_behave_like_the_reference():
    """Mixed dtypes go to the reference loop: same error as plain torch ops, no silent cast."""
    xp, h0, c0, w, _ = _inputs(3, 2, 4, 4)
    for fn in (fast.lstm_recurrence, _recurrence.lstm_recurrence):
        with pytest.raises(RuntimeError):
            fn(xp.double(), h0, c0, w)


def test_c_kernels_build_in_build_dir_or_fall_back(tmp_path, monkeypatch):
    """The C kernels compile into RNNDROP_FAST_BUILD_DIR; without a compiler: one warning,
    None, and the recurrences still run (torch ops)."""
    monkeypatch.setattr(_cext, "_LIB", None)
    monkeypatch.setenv("RNNDROP_FAST_CEXT", "1")
    monkeypatch.setenv("RNNDROP_FAST_BUILD_DIR", str(tmp_path / "ok"))
    if _cext.kernels() is not None:
        assert list((tmp_path / "ok").glob("lstm_kernels_*.so"))
    monkeypatch.setattr(_cext, "_LIB", None)
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("RNNDROP_FAST_BUILD_DIR", str(tmp_path / "bad"))
    with pytest.warns(RuntimeWarning, match="fused CPU kernels unavailable"):
        assert _cext.kernels() is None
    _compare_lstm(4, 3, 5, "tied")
    _compare_gru(4, 3, 5, "untied")
    monkeypatch.setattr(_cext, "_LIB", None)  # let later tests build/load again


def _spy_loops(monkeypatch):
    """Record each call of a fast loop (fused C or torch ops, LSTM or GRU) as "_cell.name"."""
    from rnndrop.fast import _gru, _lstm
    calls = []
    for mod in (_lstm, _gru):
        for name in ("_forward_loop", "_backward_loop", "_forward_loop_c", "_backward_loop_c"):
            real = getattr(mod, name)
            tag = f"{mod.__name__.rsplit('.', 1)[1]}.{name}"
            monkeypatch.setattr(mod, name, lambda *a, _r=real, _t=tag: calls.append(_t) or _r(*a))
    return calls


@pytest.mark.parametrize("kind", MASKS)
def test_c_loops_are_the_ones_running(monkeypatch, kind):
    """With the kernels built, float32 CPU LSTM and GRU go through the fused C loops (so the
    "+C" comparisons above test them), forward and backward."""
    monkeypatch.setenv("RNNDROP_FAST_CEXT", "1")
    if _cext.kernels() is None:
        pytest.skip("fused C kernels unavailable (no C compiler?)")
    calls = _spy_loops(monkeypatch)
    _compare_lstm(3, 2, 4, kind)
    _compare_gru(3, 2, 4, kind)
    assert calls == ["_lstm._forward_loop_c", "_lstm._backward_loop_c",
                     "_gru._forward_loop_c", "_gru._backward_loop_c"]


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_untied_input_masks_without_hidden_dropout_take_the_fast_loop(monkeypatch, cell):
    """Untied input masks and no recurrent dropout: no mask_h, but no fused kernel either (one
    input mask per gate). The layer runs the fast loops, not the autograd reference, and gives
    the reference's output and gradients."""
    import rnndrop
    monkeypatch.setenv("RNNDROP_FAST_CEXT", "1")
    suffix = "_c" if _cext.kernels() is not None else ""
    torch.manual_seed(0)
    layer = getattr(rnndrop, cell)(4, 6, num_layers=2, dropout_input=0.4, dropout_between=0.3,
                                   tied=False, dropout_hidden=0.0)
    x = torch.randn(5, 3, 4, requires_grad=True)
    params = [x, *layer.parameters()]

    def run():
        torch.manual_seed(7)  # the same masks in both runs
        out, state = layer(x)
        states = list(state) if cell == "LSTM" else [state]  # (h_n, c_n) or h_n
        loss = out.square().sum() + sum(s.sum() for s in states)
        return [out, *states, *torch.autograd.grad(loss, params)]

    calls = _spy_loops(monkeypatch)
    got = run()
    tag = "_" + cell.lower()
    assert calls == [f"{tag}._forward_loop{suffix}"] * 2 + [f"{tag}._backward_loop{suffix}"] * 2
    reference = getattr(_recurrence, f"{cell.lower()}_recurrence")
    monkeypatch.setattr(fast, "select", lambda c, *a: reference)
    want = run()
    assert len(calls) == 4  # the second run went through the reference only
    for a, b in zip(got, want):
        _close(a, b)


def test_select_is_the_one_choice(monkeypatch):
    """fast.select: the reference for RNN and for mixed dtypes, else the fast Function with its
    implementation fixed for the call (C kernels on CPU float32, torch ops for float64)."""
    from rnndrop.fast import _gru, _lstm
    xp, h0, c0, w, b = _inputs(3, 2, 4, 4)
    assert fast.select("RNN", xp[..., :4], h0, w[:4], torch.tanh, None) is _recurrence.rnn_recurrence
    assert fast.select("LSTM", xp.double(), h0, c0, w, None) is _recurrence.lstm_recurrence
    monkeypatch.setenv("RNNDROP_FAST_CEXT", "1")
    rec = fast.select("LSTM", xp, h0, c0, w, None)
    assert rec.func is _lstm.recurrence and not rec.args[0].triton
    assert rec.args[0].lib is _cext.kernels()
    xp64, h64, w64, b64 = (t.double() for t in (xp[..., :12], h0, w[:12], b[:12]))
    rec = fast.select("GRU", xp64, h64, w64, b64, None)
    assert rec.func is _gru.recurrence and rec.args[0].lib is None and not rec.args[0].packed
    with pytest.raises(ValueError, match="cell"):
        fast.select("lstm", xp, h0, c0, w, None)
    with pytest.raises(ValueError, match="mask_h"):  # the mask's layout is decoded in one place
        _recurrence.lstm_recurrence(xp, h0, c0, w, torch.ones(4))


def test_available():
    assert fast.available("cpu")
    assert fast.available(torch.device("cuda")) == CUDA


def test_lstm_layer_stack_backward_accumulates(cpu_impl):
    """Two stacked layers sharing nothing but the graph: grads equal the reference's."""
    torch.manual_seed(6)
    T, B, H = 5, 4, 8
    x = torch.randn(T, B, H, requires_grad=True)
    ws = [[(torch.randn(4 * H, H) * H ** -0.5).requires_grad_() for _ in range(2)]
          for _ in range(2)]
    masks = [_mask("tied", 4, B, H) for _ in range(2)]
    z = torch.zeros(B, H)

    def run(rec, proj):
        inp = x
        for (w_ih, w_hh), m in zip(ws, masks):
            inp = rec(proj(inp, w_ih, None), z, z, w_hh, m)[0]
        return inp

    params = [x] + [w for pair in ws for w in pair]
    g1 = torch.autograd.grad(run(fast.lstm_recurrence, fast.linear).square().sum(), params)
    g2 = torch.autograd.grad(run(_recurrence.lstm_recurrence, F.linear).square().sum(), params)
    for a, b in zip(g1, g2):
        _close(a, b, 2e-5)


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed")
def test_triton_kernels_under_interpreter():
    """The CUDA kernels' arithmetic, run on CPU by Triton's interpreter (subprocess: the
    interpreter is chosen when the kernels are defined)."""
    code = (
        "import sys; sys.path.insert(0, %r)\n"
        "import test_fast as t\n"
        "from rnndrop.fast import _triton\n"
        "assert _triton.use_triton(t.torch.zeros(1))\n"
        "for kind in t.MASKS:\n"
        "    for T, B, H in [(5, 3, 7), (2, 2, 4)]:\n"
        "        t._compare_lstm(T, B, H, kind)\n"
        "print('ok')\n" % os.path.dirname(__file__))
    env = dict(os.environ, TRITON_INTERPRET="1", RNNDROP_FAST_TRITON="1")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0 and "ok" in res.stdout, res.stdout + res.stderr


# ---------------------------------------------------------------- CUDA
cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")


@pytest.fixture(params=["graphs", "eager"])
def cuda_graphs(request):
    prev = fast.cuda_graphs_enabled()
    fast.set_cuda_graphs(request.param == "graphs")
    yield request.param
    fast.set_cuda_graphs(prev)


@pytest.fixture
def no_tf32():
    flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("T,B,H", [(5, 3, 7), (8, 4, 16), (12, 20, 96)])
@pytest.mark.parametrize("kind", MASKS)
def test_cuda_lstm_matches_reference(cuda_graphs, no_tf32, T, B, H, kind):
    for seed in range(2):  # a second call replays the captured graph on new data
        _compare_lstm(T, B, H, kind, device="cuda", tol=2e-5, seed=seed)


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("kind", MASKS)
def test_cuda_gru_matches_reference(no_tf32, kind):
    _compare_gru(6, 4, 16, kind, device="cuda", tol=2e-5)


@pytest.mark.cuda
@cuda
def test_cuda_two_layers_same_shape(cuda_graphs, no_tf32):
    """Layers of the same size share one graph: outputs must be copies, not the static buffers."""
    torch.manual_seed(7)
    T, B, H = 6, 4, 16
    x = torch.randn(T, B, 4 * H, device="cuda", requires_grad=True)
    ws = [(torch.randn(4 * H, H, device="cuda") * H ** -0.5).requires_grad_() for _ in range(2)]
    wi = (torch.randn(4 * H, H, device="cuda") * H ** -0.5).requires_grad_()
    ms = [_mask("tied", 4, B, H, "cuda") for _ in range(2)]
    z = torch.zeros(B, H, device="cuda")

    def run(rec):
        o1 = rec(x, z, z, ws[0], ms[0])[0]
        o2 = rec(o1 @ wi.t(), z, z, ws[1], ms[1])[0]
        return o1, o2
    a = run(fast.lstm_recurrence)
    b = run(_recurrence.lstm_recurrence)
    for u, v in zip(a, b):
        _close(u, v, 2e-5)
    ga = torch.autograd.grad(sum(o.square().sum() for o in a), [x, wi] + ws)
    gb = torch.autograd.grad(sum(o.square().sum() for o in b), [x, wi] + ws)
    for u, v in zip(ga, gb):
        _close(u, v, 2e-5)


@pytest.mark.cuda
@cuda
def test_cuda_masks_of_ones_reproduce_cudnn(no_tf32):
    torch.manual_seed(8)
    T, B, H = 9, 5, 32
    ref = torch.nn.LSTM(H, H).cuda()
    x = torch.randn(T, B, H, device="cuda")
    o1, (h1, c1) = ref(x)
    z = torch.zeros(B, H, device="cuda")
    xp = F.linear(x, ref.weight_ih_l0, ref.bias_ih_l0 + ref.bias_hh_l0)
    o2, h2, c2 = fast.lstm_recurrence(xp, z, z, ref.weight_hh_l0, torch.ones(B, H, device="cuda"))
    torch.testing.assert_close(o2, o1, atol=1e-5, rtol=0)
    torch.testing.assert_close(c2, c1[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("packed", [True, False])
def test_block_linear_matches_bmm(monkeypatch, packed):
    """The untied masks' per-gate products: every block through oneDNN (packed once) or one
    bmm give x_k @ w_kᵀ, stacked (G, B, N), from a stacked input or a list of strided views."""
    if packed and not _gemm.packed_ok():
        pytest.skip("oneDNN packed linear ops unavailable in this torch build")
    monkeypatch.setattr(_gemm.BlockLinear, "BLOCKS_MIN", 0)
    torch.manual_seed(3)
    G, B, H = 3, 4, 7
    w = torch.randn(G * H, H)
    lin = _gemm.BlockLinear(w.view(G, H, H), B, packed)
    assert lin.packed == packed
    xs = torch.randn(G, B, H)
    ref = torch.stack([xs[k] @ w[k * H:(k + 1) * H].t() for k in range(G)])
    _close(lin(xs), ref, 1e-5)
    d = torch.randn(B, G * H)  # backward form: d_k @ W_k, d_k strided column blocks of d
    ref_t = torch.stack([d[:, k * H:(k + 1) * H] @ w[k * H:(k + 1) * H] for k in range(G)])
    for pack in (True, False):  # blocks packed, or handed over as transposed views
        lin_t = _gemm.BlockLinear(w.view(G, H, H).transpose(1, 2), B, packed, pack=pack)
        _close(lin_t([d[:, k * H:(k + 1) * H] for k in range(G)]), ref_t, 1e-5)
        _close(lin_t(d.view(B, G, H).transpose(0, 1)), ref_t, 1e-5)  # gate-major strided view
    monkeypatch.setattr(_gemm.BlockLinear, "BLOCKS_MIN", 8)
    assert not _gemm.BlockLinear(w.view(G, H, H), B, packed).packed  # under the size: bmm


@pytest.mark.parametrize("kind", MASKS)
def test_c_loops_on_two_threads(monkeypatch, kind):
    """The C loops with their step kernels and transposes on two OpenMP threads (from
    ``B * H >= 8192`` cells; the tests otherwise run on one): the same results as the reference
    for LSTM and GRU, with and without zoneout, and bitwise the same run to run."""
    if _cext.kernels() is None:
        pytest.skip("fused C kernels unavailable (no C compiler?)")
    monkeypatch.setenv("RNNDROP_FAST_CEXT", "1")
    monkeypatch.setenv("RNNDROP_FAST_CGEMM", "1")
    prev = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _compare_lstm(3, 16, 520, kind, tol=2e-5)
        _compare_gru(3, 16, 520, kind, tol=2e-5)
        xp, h0, c0, w, _ = _inputs(3, 16, 520, 4)
        m = _mask(kind, 4, 16, 520)
        zh = torch.full((16, 520), 0.3)
        runs = []
        for _ in range(2):
            out, hT, cT = fast.lstm_recurrence(xp, h0, c0, w, m, zh, None)
            runs.append([out, *torch.autograd.grad(out.square().sum(), (xp, w))])
        ref = _recurrence.lstm_recurrence(xp, h0, c0, w, m, zh, None)[0]
        _close(runs[0][0], ref, 2e-5)
        assert all(torch.equal(a, b) for a, b in zip(*runs))
    finally:
        torch.set_num_threads(prev)


@pytest.mark.parametrize("threads", [1, 2])
def test_small_gemm_matches_mm(threads):
    """``SmallGemm`` (the C loops' per-step products): ``A B`` for batches below, at and above
    a tile's rows and across two tiles, widths that leave a partial panel, ``B`` as a
    transposed view, a gate block and a contiguous matrix, a strided ``A`` (a gate's columns of
    ``dgates``), the mask post-multiply, and OpenMP threads."""
    lib = _cext.kernels()
    if lib is None:
        pytest.skip("fused C kernels unavailable (no C compiler?)")
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(0)
        for M, K, N in [(1, 5, 3), (6, 17, 33), (10, 40, 64), (11, 40, 70), (20, 33, 100),
                        (64, 50, 31)]:
            w = torch.randn(4 * N, K, generator=g)
            for b in (w[:N].t(), w[N:2 * N].t(), torch.randn(K, N, generator=g)):
                gm = _gemm.SmallGemm(lib, b)
                a_full = torch.randn(M, 3 * K, generator=g)
                a = a_full[:, K:2 * K]                       # row stride 3K
                c = torch.full((M, N + 5), float("nan"))
                gm.into(a.data_ptr(), a.stride(0), M, c.data_ptr(), c.stride(0))
                ref = a.double() @ b.double()
                torch.testing.assert_close(c[:, :N].double(), ref, atol=1e-4, rtol=1e-5)
                assert torch.isnan(c[:, N:]).all()           # nothing past N is written
                mul = torch.rand(M, N, generator=g)
                gm.into(a.data_ptr(), a.stride(0), M, c.data_ptr(), c.stride(0),
                        mul=mul.data_ptr(), ldm=mul.stride(0))
                torch.testing.assert_close(c[:, :N].double(), ref * mul.double(), atol=1e-4,
                                           rtol=1e-5)
            # G products in one call: the gate blocks of w, A_g the g-th column block of a
            G = 4
            gm = _gemm.SmallGemm(lib, *[w[k * N:(k + 1) * N].t() for k in range(G)])
            a = torch.randn(M, G * K, generator=g)
            c = torch.empty(G, M, N)
            gm.into(a.data_ptr(), G * K, M, c.data_ptr(), N, a_gs=K, c_gs=M * N)
            for k in range(G):
                ref = a[:, k * K:(k + 1) * K].double() @ w[k * N:(k + 1) * N].t().double()
                torch.testing.assert_close(c[k].double(), ref, atol=1e-4, rtol=1e-5)
    finally:
        torch.set_num_threads(prev)


@pytest.mark.parametrize("cext", ["1", "0"])
@pytest.mark.parametrize("shape,cols", [((300, 260), None), ((257, 300), None), ((300, 1000), 250),
                                        ((3, 5), None), ((1, 70000), None)])
def test_transposed_is_a_contiguous_transpose(monkeypatch, cext, shape, cols):
    """``_gemm.transposed`` (the weight gradients' left operand): exactly ``a.t().contiguous()``
    through the blocked C kernel or torch's copy, for full and partial 16 x 16 tiles, a strided
    column block (``cols``: the first ``cols`` columns, row stride ``shape[1]``), a tensor under
    ``TRANSPOSE_MIN`` and a single row."""
    monkeypatch.setenv("RNNDROP_FAST_CEXT", cext)
    if cext == "1" and _cext.kernels() is None:
        pytest.skip("fused C kernels unavailable (no C compiler?)")
    a = torch.randn(*shape)
    if cols is not None:
        a = a[:, 7:7 + cols]
    got = _gemm.transposed(a)
    assert got.is_contiguous() and got.shape == a.t().shape
    assert torch.equal(got, a.t())
    assert torch.equal(_gemm.transposed(a.double()), a.double().t())  # other dtypes: torch


@pytest.mark.parametrize("onednn", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_untied_linear_matches_the_definition(monkeypatch, onednn, bias):
    """Gate block g of the projection is (x ∘ z_g) W_gᵀ + b_g, forward and backward, through
    oneDNN (one product per block) or the einsum, also for strided masks (the first rows of a
    larger draw, as the packed-sequence path passes them) and a transposed input (batch_first)."""
    if onednn and not _gemm.packed_ok():
        pytest.skip("oneDNN packed linear ops unavailable in this torch build")
    monkeypatch.setenv("RNNDROP_FAST_NO_MKLDNN", "0" if onednn else "1")
    torch.manual_seed(4)
    T, B, I, H, G = 5, 6, 7, 3, 4
    x = torch.randn(B - 2, T, I).transpose(0, 1).requires_grad_()
    masks = ((torch.rand(G, 1, B, I) > 0.3).float() / 0.7)[:, :, :B - 2]
    w = torch.randn(G * H, I, requires_grad=True)
    b = torch.randn(G * H, requires_grad=True) if bias else None
    ins = (x, w) + ((b,) if bias else ())
    out = fast.untied_linear(x, masks, w, b)
    ref = torch.cat([(x * masks[g]) @ w[g * H:(g + 1) * H].t()
                     + (b[g * H:(g + 1) * H] if bias else 0) for g in range(G)], dim=-1)
    _close(out, ref)
    gy = torch.randn_like(ref)
    for a, c in zip(torch.autograd.grad(out, ins, gy), torch.autograd.grad(ref, ins, gy)):
        _close(a, c)


def test_untied_linear_gives_a_learned_mask_its_gradient():
    """A mask that needs a gradient (learned rates) takes the einsum, which gives it one."""
    torch.manual_seed(5)
    x, w = torch.randn(3, 2, 4), torch.randn(8, 4)
    masks = torch.rand(2, 1, 2, 4, requires_grad=True)
    out = fast.untied_linear(x, masks, w)
    (gm,) = torch.autograd.grad(out.sum(), masks)
    ref = torch.cat([(x * masks[g]) @ w[g * 4:(g + 1) * 4].t() for g in range(2)], dim=-1)
    (gr,) = torch.autograd.grad(ref.sum(), masks)
    _close(gm, gr)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_cross_entropy_gradcheck(monkeypatch, reduction, bias):
    """The fused loss (softmax - onehot made in place, block by block) in float64 against
    finite differences, with blocks of one row and of several, so the block loop is covered."""
    from rnndrop.fast import _xent
    torch.manual_seed(6)
    N, H, V = 7, 3, 5
    h = torch.randn(N, H, dtype=torch.float64, requires_grad=True)
    w = torch.randn(V, H, dtype=torch.float64, requires_grad=True)
    b = torch.randn(V, dtype=torch.float64, requires_grad=True) if bias else None
    y = torch.randint(0, V, (N,))
    ins = (h, w) + ((b,) if bias else ())
    for block in (8 * V, 3 * 8 * V):
        monkeypatch.setattr(_xent, "_BLOCK_BYTES", block)
        out = fast.linear_cross_entropy(h, w, b, y, reduction)
        assert type(out.grad_fn).__name__ == "_LinearCrossEntropyBackward"
        torch.testing.assert_close(out, F.cross_entropy(F.linear(h, w, b), y,
                                                        reduction=reduction))
        assert torch.autograd.gradcheck(
            lambda *a: fast.linear_cross_entropy(a[0], a[1], a[2] if bias else None, y,
                                                 reduction), ins)


@pytest.mark.parametrize("onednn", [True, False])
def test_linear_cross_entropy_float32_equals_autograd(monkeypatch, onednn):
    """float32 at a PTB-like shape (blocks of 13 rows over 10k words): the loss and every
    gradient as F.cross_entropy(F.linear(...)) gives them, through oneDNN or torch.mm, also
    into a weight tied to another use (its gradients add up) and after large logits."""
    if onednn and not _gemm.packed_ok():
        pytest.skip("oneDNN packed linear ops unavailable in this torch build")
    monkeypatch.setenv("RNNDROP_FAST_NO_MKLDNN", "0" if onednn else "1")
    torch.manual_seed(7)
    N, H, V = 60, 16, 10000
    h = torch.randn(N, H, requires_grad=True)
    w = (torch.randn(V, H) * 3).requires_grad_()            # logits in the hundreds
    b = torch.randn(V, requires_grad=True)
    y = torch.randint(0, V, (N,))
    got = fast.linear_cross_entropy(h, w, b, y) + w[:5].sum()
    want = F.cross_entropy(F.linear(h, w, b), y) + w[:5].sum()
    assert type(got.grad_fn).__name__ == "AddBackward0"
    _close(got.detach(), want.detach())
    for a, c in zip(torch.autograd.grad(got, (h, w, b)), torch.autograd.grad(want, (h, w, b))):
        _close(a, c)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("h_dtype", [torch.float32, torch.bfloat16])
def test_linear_cross_entropy_under_bf16_autocast_is_autocasts_loss(monkeypatch, reduction,
                                                                      h_dtype):
    """Under a CPU bfloat16 autocast the fused Function runs (bfloat16 products, float32
    softmax, blocks of several rows): its loss and gradients are autocast's
    F.cross_entropy(F.linear(...)) to bfloat16 rounding, each gradient in its input's dtype,
    and within bfloat16's error of the exact float64 values."""
    from rnndrop.fast import _xent
    monkeypatch.setattr(_xent, "_BLOCK_BYTES", 3 * 4 * 1000)         # 3 rows a block
    torch.manual_seed(8)
    N, H, V = 40, 24, 1000
    h = (torch.randn(N, H) * 2).to(h_dtype).requires_grad_()
    w = torch.randn(V, H, requires_grad=True)
    b = torch.randn(V, requires_grad=True)
    y = torch.randint(0, V, (N,))
    up = torch.rand(N) if reduction == "none" else torch.tensor(1.0)   # a weight per row

    def run(fn):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = fn(h, w, b, y, reduction)
        grads = torch.autograd.grad((out * up).sum(), (h, w, b))
        return out, grads, type(out.grad_fn).__name__
    got, g_got, name = run(fast.linear_cross_entropy)
    want, g_want, _ = run(lambda h, w, b, y, r: F.cross_entropy(F.linear(h, w, b), y, reduction=r))
    assert name in ("_LinearCrossEntropyBackward", "MeanBackward0", "SumBackward0")
    assert got.dtype == want.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2)
    for a, c, x in zip(g_got, g_want, (h, w, b)):
        assert a.dtype == x.dtype
        # bfloat16 outputs (8 bits of mantissa): a unit or two in their last place apart
        torch.testing.assert_close(a.float(), c.float(), rtol=5e-2,
                                   atol=1e-2 * float(c.abs().max()))
    # against the exact values: within bfloat16's rounding of the inputs and products
    hd, wd, bd = (t.detach().double().requires_grad_() for t in (h, w, b))
    exact = F.cross_entropy(F.linear(hd, wd, bd), y, reduction=reduction)
    torch.testing.assert_close(got.double(), exact.detach(), rtol=3e-2, atol=3e-2)
    g_exact = torch.autograd.grad((exact * up.double()).sum(), (hd, wd, bd))
    for a, c in zip(g_got, g_exact):
        torch.testing.assert_close(a.double(), c, rtol=1e-1, atol=2e-2 * float(c.abs().max()))


def test_linear_cross_entropy_bad_targets_and_no_grad():
    h, w = torch.randn(4, 3, requires_grad=True), torch.randn(6, 3)
    for bad in (6, -1):
        with pytest.raises(IndexError, match=f"Target {bad} is out of bounds"):
            fast.linear_cross_entropy(h, w, None, torch.tensor([0, 1, bad, 2]))
    with pytest.raises(TypeError, match="targets must be integer class indices"):
        fast.linear_cross_entropy(h, w, None, torch.zeros(4))
    with pytest.raises(ValueError, match="hidden has 4 rows but targets 3"):
        fast.linear_cross_entropy(h, w, None, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="reduction must be one of"):
        fast.linear_cross_entropy(h, w, None, torch.tensor([0, 1, 2, 3]), "avg")
    for dtype in (torch.int32, torch.uint8):   # other integer ids, with and without a gradient
        y = torch.tensor([0, 5, 2, 3], dtype=dtype)
        torch.testing.assert_close(fast.linear_cross_entropy(h, w, None, y),
                                   F.cross_entropy(h @ w.t(), y.long()))
        with torch.no_grad():
            torch.testing.assert_close(fast.linear_cross_entropy(h, w, None, y),
                                       F.cross_entropy(h @ w.t(), y.long()))
    with torch.no_grad():          # evaluation: the plain calls, same value
        y = torch.tensor([0, 5, 2, 3])
        out = fast.linear_cross_entropy(h, w, None, y)
        assert out.grad_fn is None
        torch.testing.assert_close(out, F.cross_entropy(h @ w.t(), y))
