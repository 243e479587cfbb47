"""The D2L 3.13 dropout MLP: shapes, from-scratch vs concise agreement, DropConnect, eval mode."""
import pytest
import torch
import torch.nn.functional as F

from rnndrop.models.mlp import KINDS, MLP, DropConnectLinear, MLPScratch, init_params

SMALL = dict(num_inputs=20, num_hiddens1=16, num_hiddens2=12, num_outputs=5)


@pytest.mark.parametrize("cls", [MLP, MLPScratch])
@pytest.mark.parametrize("shape", [(7, 28, 28), (7, 1, 28, 28), (7, 784)])
def test_shapes(cls, shape):
    torch.manual_seed(0)
    m = cls()
    out = m(torch.rand(shape))
    assert out.shape == (7, 10)
    out.sum().backward()
    params = m.parameters() if cls is MLPScratch else list(m.parameters())
    assert [tuple(p.shape) for p in params] == (
        [(784, 256), (256,), (256, 256), (256,), (256, 10), (10,)] if cls is MLPScratch else
        [(256, 784), (256,), (256, 256), (256,), (10, 256), (10,)])
    assert all(p.grad is not None for p in params)


def test_init_is_d2l_and_equal_for_both_forms():
    torch.manual_seed(3)
    s = MLPScratch()
    torch.manual_seed(3)
    c = MLP()
    for k, v in c.state_dict().items():
        assert torch.equal(v, s.state_dict()[k]), k
    W = s.W1.detach()
    assert abs(W.std().item() - 0.01) < 5e-4 and abs(W.mean().item()) < 1e-4
    assert not s.b1.any() and not c.linear3.bias.any()
    assert isinstance(c.linear1, DropConnectLinear) and isinstance(c.dropout1, torch.nn.Module)


def _train_both(kw, wd=0.0, steps=5, seed=0):
    g = torch.Generator().manual_seed(123)
    X, y = torch.rand(32, 20, generator=g), torch.randint(0, 5, (32,), generator=g)
    torch.manual_seed(seed)
    s = MLPScratch(**SMALL, **kw)
    torch.manual_seed(seed)
    c = MLP(**SMALL, **kw)
    opt = torch.optim.SGD(c.param_groups(wd), lr=0.5)
    torch.manual_seed(seed + 1)      # the masks: the same global stream for both forms
    ls = []
    for _ in range(steps):
        loss = F.cross_entropy(s(X), y)
        loss.backward()
        s.sgd_step(0.5, wd)
        ls.append(loss.item())
    torch.manual_seed(seed + 1)
    lc = []
    for _ in range(steps):
        loss = F.cross_entropy(c(X), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        lc.append(loss.item())
    return s, c, ls, lc


@pytest.mark.parametrize("kw,wd", [
    (dict(), 0.0),
    (dict(p1=0.3, p2=0.6), 1e-2),
    (dict(kind="gaussian"), 0.0),
    (dict(kind="three_value"), 0.0),
    (dict(p1=0.0, p2=0.0, dropconnect=(0.1, 0.3, 0.5)), 0.0),
])
def test_scratch_and_concise_agree_with_same_seed(kw, wd):
    s, c, ls, lc = _train_both(kw, wd)
    assert ls == pytest.approx(lc, rel=1e-6, abs=1e-7)
    assert len(set(ls)) == len(ls)           # they trained (losses change)
    for k, v in c.state_dict().items():
        torch.testing.assert_close(s.state_dict()[k], v, rtol=1e-5, atol=1e-6)


def test_different_seed_different_masks():
    _, _, l0, _ = _train_both({}, seed=0)
    _, _, l1, _ = _train_both({}, seed=7)
    assert l0 != l1


@pytest.mark.parametrize("cls", [MLP, MLPScratch])
def test_dropconnect_leaves_stored_weights_untouched(cls):
    torch.manual_seed(0)
    m = cls(**SMALL, p1=0.0, p2=0.0, dropconnect=(0.5, 0.5, 0.5))
    params = m.parameters() if cls is MLPScratch else list(m.parameters())
    before = [p.detach().clone() for p in params]
    X = torch.rand(8, 20)
    m.train()
    outs = [m(X) for _ in range(3)]
    sum(o.sum() for o in outs).backward()
    for b, p in zip(before, params):
        assert torch.equal(b, p.detach())
    assert not torch.allclose(outs[0], outs[1])       # fresh weight masks each call
    m.eval()
    torch.manual_seed(0)
    plain = cls(**SMALL, p1=0.0, p2=0.0).eval()       # same init, no DropConnect
    assert torch.equal(m(X), plain(X))                 # eval uses the stored weights as they are


def test_dropconnect_linear_masks_weight_elements():
    torch.manual_seed(0)
    lin = DropConnectLinear(6, 4, p=0.5)
    W = lin.weight.detach().clone()
    x = torch.eye(6)                    # row i of the output = column i of the used weight + b
    out = lin(x) - lin.bias
    used = out.t().detach()
    kept = used != 0
    assert 0 < kept.sum() < kept.numel()
    torch.testing.assert_close(used[kept], 2 * W[kept])
    assert torch.equal(lin.weight, W)
    lin.eval()
    torch.testing.assert_close((lin(x) - lin.bias).t().detach(), W)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("cls", [MLP, MLPScratch])
def test_eval_mode_is_deterministic_and_dropout_free(cls, kind):
    torch.manual_seed(0)
    m = cls(**SMALL, kind=kind, dropconnect=(0.2, 0.2, 0.2))
    X = torch.rand(9, 20)
    m.eval()
    a, b = m(X), m(X)
    assert torch.equal(a, b)
    # identical to the same network with no dropout at all
    torch.manual_seed(0)
    ref = cls(**SMALL, p1=0.0, p2=0.0).eval()
    torch.testing.assert_close(a, ref(X))
    m.train()
    assert not torch.equal(m(X), m(X))


def test_training_mode_drops_units():
    torch.manual_seed(0)
    m = MLP(**SMALL, p1=0.5, p2=0.0)
    X = torch.rand(64, 20)
    h1, h2 = m.hidden(X)                       # h1 before its dropout, h2 after dropout(h1)
    h1b, h2b = m.hidden(X)
    assert torch.equal(h1, h1b) and not torch.equal(h2, h2b)
    d = m.dropout1(torch.ones(10_000))
    assert set(d.unique().tolist()) == {0.0, 2.0}
    assert abs((d == 0).float().mean().item() - 0.5) < 0.03
    m.eval()
    assert torch.equal(m.hidden(X)[1], m.hidden(X)[1])


def test_weight_decay_only_on_weights():
    m = MLP(**SMALL)
    g = m.param_groups(0.1)
    assert g[0]["weight_decay"] == 0.1 and all(p.dim() == 2 for p in g[0]["params"])
    assert g[1]["weight_decay"] == 0.0 and all(p.dim() == 1 for p in g[1]["params"])
    s = MLPScratch(**SMALL)
    for p in s.parameters():
        p.grad = torch.zeros_like(p)
    s.b1.data.fill_(1.0)
    W1 = s.W1.detach().clone()
    s.sgd_step(0.5, weight_decay=0.1)
    torch.testing.assert_close(s.W1.detach(), W1 * (1 - 0.05))
    assert torch.equal(s.b1.detach(), torch.ones(16))
    assert s.W1.grad is None


def test_init_params_shapes():
    ps = init_params((5, 4, 3))
    assert [(tuple(W.shape), tuple(b.shape)) for W, b in ps] == [((5, 4), (4,)), ((4, 3), (3,))]


@pytest.mark.parametrize("cls", [MLP, MLPScratch])
def test_bad_arguments(cls):
    with pytest.raises(ValueError, match="kind"):
        cls(kind="uniform")
    with pytest.raises(ValueError, match="p1"):
        cls(p1=1.5)
    with pytest.raises(ValueError, match="p2"):
        cls(kind="gaussian", p2=1.0)
    with pytest.raises(ValueError, match="dropconnect"):
        cls(dropconnect=(0.1, 0.2))
    with pytest.raises(ValueError, match="num_hiddens1"):
        cls(num_hiddens1=0)
