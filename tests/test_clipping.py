"""Clipping that reports what it did, and the monitor the trainer keeps."""
import pytest
import torch
import torch.nn as nn

from rnndrop import clipping as C


def _with_grads(scale):
    torch.manual_seed(0)
    ps = [nn.Parameter(torch.zeros(3, 4)), nn.Parameter(torch.zeros(5)), nn.Parameter(torch.zeros(2))]
    for p in ps[:2]:
        p.grad = scale * torch.randn_like(p)
    return ps                                                   # ps[2] has no grad


def _total(ps):
    return float(torch.sqrt(sum(p.grad.square().sum() for p in ps if p.grad is not None)))


def test_clip_grad_norm():
    ps = _with_grads(10.0)
    before = _total(ps)
    st = C.clip_grad_norm(ps, 1.0)
    assert st.clipped and st.finite and st.total_norm == pytest.approx(before, rel=1e-6)
    assert _total(ps) == pytest.approx(1.0, rel=1e-5)
    assert st.scale == pytest.approx(1.0 / before, rel=1e-5)
    ps = _with_grads(0.01)
    grads = [p.grad.clone() for p in ps[:2]]
    st = C.clip_grad_norm(iter(ps), 1.0)
    assert not st.clipped and st.scale == 1.0
    assert all(torch.equal(p.grad, g) for p, g in zip(ps, grads))


def test_clip_grad_value():
    p = nn.Parameter(torch.zeros(4))
    p.grad = torch.tensor([0.5, -2.0, 3.0, 0.1])
    st = C.clip_grad_value([p, nn.Parameter(torch.zeros(1))], 1.0)
    assert (st.num_clipped, st.numel, st.fraction_clipped, st.max_abs) == (2, 4, 0.5, 3.0)
    torch.testing.assert_close(p.grad, torch.tensor([0.5, -1.0, 1.0, 0.1]))


def test_clip_monitor():
    mon = C.ClipMonitor()
    norms = []
    for scale in (10.0, 0.01, 20.0, 0.02):
        ps = _with_grads(scale)
        norms.append(_total(ps))
        mon.clip_grad_norm(ps, 1.0)
    mon.update(C.ClipStats(float("inf"), 1.0, False, float("nan"), finite=False))
    s = mon.summary()
    assert (s["steps"], s["clipped"], s["nonfinite"]) == (5, 2, 1)
    assert s["fraction_clipped"] == pytest.approx(0.4)
    assert s["mean_norm"] == pytest.approx(sum(norms) / 4, rel=1e-5)
    assert s["max_norm"] == pytest.approx(max(norms), rel=1e-5)
    assert s["mean_scale"] == pytest.approx((1 / norms[0] + 1 / norms[2]) / 2, rel=1e-4)
    p = nn.Parameter(torch.zeros(4))
    p.grad = torch.tensor([0.5, -2.0, 3.0, 0.1])
    mon.clip_grad_value([p], 1.0)
    assert mon.summary()["value_fraction_clipped"] == 0.5
    other = C.ClipMonitor()
    other.load_state_dict(mon.state_dict())
    assert other.summary() == pytest.approx(mon.summary(), nan_ok=True)
    mon.reset()
    assert mon.summary()["steps"] == 0 and "ClipMonitor(" in repr(mon)


def test_clip_grad_norm_tensor_reads_nothing_back_and_records_the_same():
    """The deferred form clips exactly as clip_grad_norm and returns the norm as a 0-d tensor;
    ClipStats.of on it later gives the same record (a NaN norm: not finite, not clipped)."""
    a, b = _with_grads(10.0), _with_grads(10.0)
    st = C.clip_grad_norm(a, 1.0)
    norm = C.clip_grad_norm_tensor(b, 1.0)
    assert isinstance(norm, torch.Tensor) and norm.dim() == 0
    assert all(torch.equal(p.grad, q.grad) for p, q in zip(a[:2], b[:2]))
    assert C.ClipStats.of(float(norm), 1.0) == st
    bad = C.ClipStats.of(float("nan"), 1.0)
    assert not bad.finite and not bad.clipped
