"""torch.nn parity of the recurrent layers beyond the plain padded batch: bidirectional layers,
variable-length batches (PackedSequence, or a padded tensor with lengths=) and autocast; the
fast loops equal the reference loop with the same masks, and are the ones that run."""
import pytest
import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnndrop
from rnndrop import _recurrence, fast, rnn as rnn_mod
from rnndrop.fast import _cext

CELLS = [("LSTM", {}), ("GRU", {}), ("RNN", {"nonlinearity": "tanh"}),
         ("RNN", {"nonlinearity": "relu"})]


def _torch_and_ours(cell, kw, I=5, H=6, layers=2, bidirectional=True, batch_first=False, seed=0,
                    **ours):
    torch.manual_seed(seed)
    ref = getattr(nn, cell)(I, H, num_layers=layers, bidirectional=bidirectional,
                            batch_first=batch_first, **kw)
    mine = getattr(rnndrop, cell).from_torch(ref, **ours)
    return ref, mine


def _states(state):
    return list(state) if isinstance(state, tuple) else [state]


def _outputs_and_grads(module, inp, params, hx=None, lengths=None):
    """Output (padded), states and the gradients of a loss that weighs every output and state."""
    kw = {} if lengths is None else {"lengths": lengths}
    out, state = module(inp, hx, **kw) if hx is not None else module(inp, **kw)
    if isinstance(out, torch.nn.utils.rnn.PackedSequence):
        out = pad_packed_sequence(out, batch_first=module.batch_first)[0]
    g = torch.Generator().manual_seed(3)
    loss = (out * torch.randn(out.shape, generator=g)).sum()
    for s in _states(state):
        loss = loss + (s * torch.randn(s.shape, generator=g)).sum()
    return [out, *_states(state), *torch.autograd.grad(loss, params)]


def _close(a, b, tol=1e-5):
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)


LENGTHS = [[7, 3, 1, 5], [1, 7, 7, 2]]      # with 1 and T, unsorted


@pytest.mark.parametrize("cell, kw", CELLS)
@pytest.mark.parametrize("form", ["padded", "packed-sorted", "packed-unsorted", "lengths"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_p0_equals_torch(cell, kw, form, batch_first):
    """Dropout 0: output, final states and every gradient as torch.nn's bidirectional layer on
    the same weights, for padded tensors, PackedSequences (sorted and not) and lengths=."""
    ref, mine = _torch_and_ours(cell, kw, batch_first=batch_first)
    T, B = 7, 4
    x = torch.randn((B, T, 5) if batch_first else (T, B, 5), requires_grad=True)
    lengths = torch.tensor(sorted(LENGTHS[0], reverse=True) if form == "packed-sorted"
                           else LENGTHS[1])
    hx = torch.randn(4, B, 6)
    hx = (hx, torch.randn(4, B, 6)) if cell == "LSTM" else hx
    pack = lambda: pack_padded_sequence(x, lengths, batch_first=batch_first,
                                        enforce_sorted=form == "packed-sorted")
    if form == "padded":
        inputs = (x, x)
    else:
        inputs = (pack(), pack() if form != "lengths" else x)
    theirs = _outputs_and_grads(ref, inputs[0], [x, *ref.parameters()], hx)
    ours = _outputs_and_grads(mine, inputs[1], [x, *mine.parameters()], hx,
                              lengths=lengths if form == "lengths" else None)
    for a, b in zip(ours, theirs):
        _close(a, b)


@pytest.mark.parametrize("cell, kw", CELLS)
def test_unbatched_bidirectional_equals_torch(cell, kw):
    ref, mine = _torch_and_ours(cell, kw)
    x = torch.randn(6, 5, requires_grad=True)
    for a, b in zip(_outputs_and_grads(mine, x, [x, *mine.parameters()]),
                    _outputs_and_grads(ref, x, [x, *ref.parameters()])):
        _close(a, b)


@pytest.fixture
def ones_masks(monkeypatch):
    """Every dropout mask all ones: the loop paths run (training, p > 0) but compute exactly
    what torch.nn does without dropout."""
    monkeypatch.setattr(rnn_mod, "bernoulli_mask",
                        lambda shape, p, dtype=None, device=None: torch.ones(shape, dtype=dtype,
                                                                             device=device))


@pytest.mark.parametrize("cell, kw", CELLS)
@pytest.mark.parametrize("untied", [False, True])
def test_loop_paths_with_lengths_equal_torch_packed(cell, kw, untied, ones_masks):
    """The variable-length loops (segments, frozen steps past each end, reverse from the last
    real token) against torch's packed kernels, through the fast loops and the reference."""
    if untied and cell == "RNN":
        pytest.skip("one gate: untied is tied")
    ref, mine = _torch_and_ours(cell, kw, dropout_hidden=0.3, dropout_input=0.2,
                                dropout_between=0.2, tied=not untied)
    mine.train()
    T, B = 9, 6
    lengths = torch.tensor([9, 2, 5, 1, 9, 4])
    x = torch.randn(T, B, 5, requires_grad=True)
    pack = lambda: pack_padded_sequence(x, lengths, enforce_sorted=False)
    theirs = _outputs_and_grads(ref, pack(), [x, *ref.parameters()])
    ours = _outputs_and_grads(mine, pack(), [x, *mine.parameters()])
    for a, b in zip(ours, theirs):
        _close(a, b)


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
@pytest.mark.parametrize("tied", [True, False])
def test_fast_loops_equal_the_reference_with_the_same_masks(cell, tied, monkeypatch):
    """p > 0, both directions, variable lengths: the fast loops (which run: asserted) and the
    autograd reference give the same outputs and gradients for the same seeded masks."""
    from test_fast import _spy_loops
    monkeypatch.setenv("RNNDROP_FAST_CEXT", "1")
    torch.manual_seed(0)
    layer = getattr(rnndrop, cell)(4, 5, num_layers=2, bidirectional=True, dropout_input=0.3,
                                   dropout_hidden=0.4, dropout_between=0.2, dropout_output=0.2,
                                   tied=tied, batch_first=True)
    x = torch.randn(6, 11, 4, requires_grad=True)
    lengths = torch.tensor([11, 3, 8, 1, 11, 6])
    params = [x, *layer.parameters()]

    def run():
        torch.manual_seed(11)
        return _outputs_and_grads(layer, x, params, lengths=lengths)

    calls = _spy_loops(monkeypatch)
    got = run()
    suffix = "_c" if _cext.kernels() is not None else ""
    tag = "_" + cell.lower()
    assert f"{tag}._forward_loop{suffix}" in calls and f"{tag}._backward_loop{suffix}" in calls
    assert set(calls) <= {f"{tag}._forward_loop{suffix}", f"{tag}._backward_loop{suffix}"}
    reference = getattr(_recurrence, f"{cell.lower()}_recurrence")
    monkeypatch.setattr(fast, "select", lambda c, *a: reference)
    n = len(calls)
    want = run()
    assert len(calls) == n
    for a, b in zip(got, want):
        _close(a, b)
    out = got[0]
    for b, n_b in enumerate(lengths.tolist()):
        assert out[b, n_b:].abs().max() == 0 if n_b < 11 else True   # zero past each end


def test_gradcheck_bidirectional_packed_float64():
    torch.manual_seed(0)
    layer = rnndrop.LSTM(3, 2, bidirectional=True, dropout_hidden=0.3, dropout_input=0.2,
                         tied=False, dtype=torch.float64)
    x = torch.randn(5, 3, 3, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([5, 2, 4])

    def f(x, *params):
        torch.manual_seed(1)       # the same masks at every evaluation
        out, (h, c) = torch.func.functional_call(
            layer, dict(zip([n for n, _ in layer.named_parameters()], params)), (x,),
            {"lengths": lengths})
        return out, h, c
    assert torch.autograd.gradcheck(f, (x, *[p.detach().requires_grad_() for p in
                                             layer.parameters()]))


def test_each_direction_draws_its_own_masks_fixed_over_time(monkeypatch):
    drawn = []
    real = rnn_mod.bernoulli_mask
    monkeypatch.setattr(rnn_mod, "bernoulli_mask",
                        lambda shape, p, **k: drawn.append((tuple(shape), p)) or real(shape, p, **k))
    layer = rnndrop.LSTM(4, 3, num_layers=2, bidirectional=True, dropout_input=0.1,
                         dropout_between=0.2, dropout_hidden=0.3)
    layer(torch.randn(7, 2, 4))
    # per layer and direction: the input mask (1, B, F) (one per sequence), then the recurrent
    # mask (B, H); the second layer's input is the 2H-wide output of the first
    assert drawn == [((1, 2, 4), 0.1), ((2, 3), 0.3), ((1, 2, 4), 0.1), ((2, 3), 0.3),
                     ((1, 2, 6), 0.2), ((2, 3), 0.3), ((1, 2, 6), 0.2), ((2, 3), 0.3)]


def test_parameter_names_init_and_round_trip():
    ref = nn.GRU(4, 3, num_layers=2, bidirectional=True)
    mine = rnndrop.GRU(4, 3, num_layers=2, bidirectional=True)
    assert [n for n, _ in mine.named_parameters()] == [n for n, _ in ref.named_parameters()]
    assert all(a.shape == b.shape for a, b in zip(mine.parameters(), ref.parameters()))
    bound = 1 / 3 ** 0.5
    assert all(float(p.detach().abs().max()) <= bound for p in mine.parameters())
    back = rnndrop.GRU.from_torch(ref, dropout_hidden=0.2).to_torch()
    assert isinstance(back, nn.GRU) and back.bidirectional
    for a, b in zip(back.state_dict().values(), ref.state_dict().values()):
        assert torch.equal(a, b)
    assert "bidirectional=True" in repr(mine)


@pytest.mark.parametrize("bad, message", [
    (dict(lengths=[3, 9]), r"lengths must lie in \[1, 5\]"),
    (dict(lengths=[0, 2]), r"lengths must lie in \[1, 5\]"),
    (dict(lengths=[1, 2, 3]), r"lengths must have shape \(2,\)"),
    (dict(lengths=[1.0, 2.0]), "lengths must be integers"),
])
def test_bad_lengths_name_the_argument(bad, message):
    layer = rnndrop.LSTM(4, 3, bidirectional=True)
    with pytest.raises((ValueError, TypeError), match=message):
        layer(torch.randn(5, 2, 4), **bad)


def test_packed_input_of_the_wrong_size_names_it():
    layer = rnndrop.GRU(4, 3)
    packed = pack_padded_sequence(torch.randn(5, 2, 6), [5, 3])
    with pytest.raises(ValueError, match="input.size\\(-1\\) must be equal to input_size. "
                                         "Expected 4, got 6"):
        layer(packed)
    with pytest.raises(ValueError, match="lengths= is for padded tensors"):
        layer(pack_padded_sequence(torch.randn(5, 2, 4), [5, 3]), lengths=[5, 3])


@pytest.mark.parametrize("cell, kw", CELLS[:3])
@pytest.mark.parametrize("path", ["fused", "loop"])
@pytest.mark.parametrize("packed", [False, True])
def test_autocast_bf16_dtypes_as_torch_and_gradients_near_fp32(cell, kw, path, packed):
    ref, mine = _torch_and_ours(cell, kw, dropout_hidden=0.3 if path == "loop" else 0.0)
    mine.train()
    x = torch.randn(6, 3, 5, requires_grad=True)
    make = lambda: pack_padded_sequence(x, [6, 4, 2]) if packed else x

    def run(module, autocast):
        torch.manual_seed(0)
        inp = make()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out, state = module(inp)
        data = out.data if packed else out
        return data, _states(state), torch.autograd.grad(
            data.float().sum() + sum(s.float().sum() for s in _states(state)),
            [x, *module.parameters()])

    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            want = ref(make())
        want_dtype = (want[0].data if packed else want[0]).dtype
    except RuntimeError:
        # torch's own bf16 kernel is missing on CPUs without avx512 (oneDNN "could not create a
        # primitive descriptor"): ours then runs and returns the parameters' dtype
        want_dtype = torch.float32
    out, states, grads = run(mine, True)
    assert out.dtype == want_dtype and all(s.dtype == want_dtype for s in states)
    _, _, grads32 = run(mine, False)
    for g, g32 in zip(grads, grads32):   # bf16 has 8 bits of mantissa
        torch.testing.assert_close(g.float(), g32, rtol=0.05, atol=0.05)


@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_elman_with_lengths_runs_torch_kernel_per_segment(act, monkeypatch):
    """p = 0, an Elman RNN with lengths on a CPU: torch's padded kernel runs each segment (no
    reference loop, no packed kernel), and the result is torch's packed one."""
    ref, mine = _torch_and_ours("RNN", {"nonlinearity": act})
    fn = getattr(torch, f"rnn_{act}")
    calls = []
    # torch's padded call has the state (b, H) second, its packed one the batch sizes (T,)
    monkeypatch.setattr(torch, f"rnn_{act}", lambda *a: calls.append(a[1].dim() == 3) or fn(*a))
    monkeypatch.setattr(rnn_mod.fast, "select", lambda *a: pytest.fail("a loop ran"))
    lengths = torch.tensor([9, 2, 5, 1, 9, 4])
    x = torch.randn(9, 6, 5, requires_grad=True)
    pack = lambda: pack_padded_sequence(x, lengths, enforce_sorted=False)
    ours = _outputs_and_grads(mine, pack(), [x, *mine.parameters()])
    n_ours = len(calls)
    assert n_ours >= 2 * 2 * 2 and all(calls)     # 2 layers, 2 directions, 2+ segments each
    theirs = _outputs_and_grads(ref, pack(), [x, *ref.parameters()])
    for a, b in zip(ours, theirs):
        _close(a, b)
