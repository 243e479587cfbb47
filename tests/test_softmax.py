"""Tests for rnndrop.softmax: samplers, sampled softmax loss, output layers."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from rnndrop.softmax import (AdaptiveSoftmax, CategoricalSampler, FullSoftmax, LogUniformSampler,
                             SampledSoftmax, UniformSampler, UnigramSampler,
                             compute_sampled_logits, make_output_layer, make_sampler,
                             sampled_softmax_loss)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------------------------
# Samplers
# ----------------------------------------------------------------------------------------------

def test_log_uniform_probs_formula():
    V = 7
    s = LogUniformSampler(V)
    k = torch.arange(V, dtype=torch.float64)
    expected = (torch.log(k + 2) - torch.log(k + 1)) / math.log(V + 1)
    torch.testing.assert_close(s.probs, expected)
    torch.testing.assert_close(s.prob(torch.tensor([0, 6])), expected[[0, 6]])
    assert abs(s.probs.sum().item() - 1) < 1e-12


@settings(max_examples=40, deadline=None)
@given(V=st.integers(1, 3000))
def test_log_uniform_probs_sum_to_one(V):
    p = LogUniformSampler(V).probs
    assert (p > 0).all()
    assert abs(p.sum().item() - 1.0) < 1e-9
    assert (p[1:] <= p[:-1]).all()                      # Zipfian: decreasing in the id


@settings(max_examples=60, deadline=None)
@given(counts=st.lists(st.integers(0, 10**6), min_size=1, max_size=300),
       alpha=st.floats(0.0, 3.0, allow_nan=False))
def test_unigram_probs_sum_to_one(counts, alpha):
    if alpha > 0 and max(counts) == 0:
        with pytest.raises(ValueError, match="counts"):
            UnigramSampler(counts, alpha)
        return
    s = UnigramSampler(counts, alpha)
    p = s.probs
    assert p.shape == (len(counts),)
    assert (p >= 0).all() and torch.isfinite(p).all()
    assert abs(p.sum().item() - 1.0) < 1e-9
    c = torch.tensor(counts, dtype=torch.float64)
    if alpha > 0:
        ref = c ** alpha
        torch.testing.assert_close(p, ref / ref.sum())
    else:
        torch.testing.assert_close(p, torch.full_like(p, 1 / len(counts)))


def _check_frequencies(sampler, n=100_000, seed=0):
    ids = sampler.sample(n, generator=_gen(seed))
    assert ids.dtype == torch.long and ids.shape == (n,)
    assert ids.min() >= 0 and ids.max() < sampler.num_classes
    freq = torch.bincount(ids, minlength=sampler.num_classes).double() / n
    p = sampler.probs
    se = (p * (1 - p) / n).sqrt()
    assert ((freq - p).abs() <= 5 * se + 1e-12).all()   # 5 standard errors per class
    return freq


@pytest.mark.parametrize("sampler", [LogUniformSampler(20), UniformSampler(9),
                                     UnigramSampler([5, 0, 1, 30, 2, 0, 7], alpha=0.75),
                                     CategoricalSampler([0.1, 0.0, 0.6, 0.3])])
def test_samples_follow_probs(sampler):
    freq = _check_frequencies(sampler)
    assert (freq[sampler.probs == 0] == 0).all()        # zero-probability classes never drawn


def test_sampling_is_reproducible_with_generator():
    s = LogUniformSampler(1000)
    assert torch.equal(s.sample(50, generator=_gen(3)), s.sample(50, generator=_gen(3)))


def test_log_q_with_replacement_is_log_expected_count():
    s = UnigramSampler([1, 2, 3, 4], alpha=1.0)
    ids = torch.tensor([0, 3])
    torch.testing.assert_close(s.log_q(ids), torch.log(s.probs[ids]))
    torch.testing.assert_close(s.log_q(ids, num_tries=5), torch.log(5 * s.probs[ids]))
    # empirical mean count of each id in k draws with replacement equals k * P
    k, reps = 6, 20_000
    draws = s.sample(k * reps, generator=_gen(1)).view(reps, k)
    mean_count = torch.stack([(draws == j).sum(1).double().mean() for j in range(4)])
    torch.testing.assert_close(mean_count, k * s.probs, atol=0.03, rtol=0)


def test_unique_sampling_and_correction():
    s = LogUniformSampler(30)
    ids, tries = s.sample(10, generator=_gen(2), unique=True, return_num_tries=True)
    assert ids.numel() == 10 and ids.unique().numel() == 10 and tries >= 10
    torch.testing.assert_close(s.log_q(ids, tries, unique=True),
                               torch.log(1 - (1 - s.probs[ids]) ** tries))
    # all classes of a uniform proposal
    u = UniformSampler(8)
    assert sorted(u.sample(8, generator=_gen(0), unique=True).tolist()) == list(range(8))
    # TF's approximation: the inclusion frequency of each id over repeated unique samples is close
    # to the average of 1-(1-p)^num_tries (measured max gap 0.02 over 4000 repeats; the binomial
    # standard error with 2000 repeats is <= 0.011, hence atol 0.05)
    g, R = _gen(7), 2000
    inc = torch.zeros(30, dtype=torch.float64)
    q = torch.zeros(30, dtype=torch.float64)
    for _ in range(R):
        ids, n = s.sample(10, generator=g, unique=True, return_num_tries=True)
        inc[ids] += 1
        q += s.expected_count(torch.arange(30), n, unique=True)
    torch.testing.assert_close(inc / R, q / R, atol=0.05, rtol=0)
    with pytest.raises(ValueError, match="num_sampled"):
        UnigramSampler([1, 0, 1], alpha=1.0).sample(3, unique=True)


def test_make_sampler():
    assert isinstance(make_sampler("log_uniform", 5), LogUniformSampler)
    assert isinstance(make_sampler("uniform", 5), UniformSampler)
    assert isinstance(make_sampler("unigram", 3, counts=[1, 2, 3]), UnigramSampler)
    assert isinstance(make_sampler(torch.ones(5), 5), CategoricalSampler)
    with pytest.raises(ValueError, match="sampler"):
        make_sampler("zipfian-ish", 5)
    with pytest.raises(ValueError, match="classes"):
        make_sampler(LogUniformSampler(4), 5)


# ----------------------------------------------------------------------------------------------
# Functional sampled softmax
# ----------------------------------------------------------------------------------------------

def _problem(N=6, H=5, V=12, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(N, H, generator=g, dtype=dtype)
    weight = torch.randn(V, H, generator=g, dtype=dtype)
    bias = torch.randn(V, generator=g, dtype=dtype)
    targets = torch.randint(V, (N,), generator=g)
    return hidden, targets, weight, bias


def test_all_negatives_uniform_equals_full_cross_entropy():
    """Every class sampled (each exactly once) under a uniform proposal: log Q is the same constant
    for all classes, so it cancels in the softmax; removing the accidental hit leaves exactly the
    full softmax over V classes with the target at index 0."""
    hidden, targets, weight, bias = _problem()
    V = weight.shape[0]
    full = F.cross_entropy(F.linear(hidden, weight, bias), targets)
    u = UniformSampler(V)
    ids = torch.arange(V)
    for tries in (V, 3 * V):                            # any constant expected count
        lq = u.log_q(ids, tries, unique=True)
        sv = (ids, u.log_q(targets, tries, unique=True), lq)
        loss = sampled_softmax_loss(hidden, targets, weight, bias, None, None,
                                    sampled_values=sv)
        torch.testing.assert_close(loss, full, rtol=1e-12, atol=1e-12)
    # per row, k = V-1: all *other* classes sampled, nothing to remove
    for n in range(hidden.shape[0]):
        others = torch.tensor([j for j in range(V) if j != targets[n]])
        sv = (others, u.log_q(targets[n:n + 1], V - 1), u.log_q(others, V - 1))
        for rah in (True, False):
            loss = sampled_softmax_loss(hidden[n:n + 1], targets[n:n + 1], weight, bias, V - 1,
                                        u, remove_accidental_hits=rah, sampled_values=sv)
            torch.testing.assert_close(
                loss, F.cross_entropy(F.linear(hidden[n:n + 1], weight, bias), targets[n:n + 1]),
                rtol=1e-12, atol=1e-12)


def test_unique_uniform_k_equals_V_minus_1_through_the_sampler():
    """Real sampling path: k = V-1 distinct ids from a uniform proposal miss exactly one class m.
    The row loss is then exactly -z_t + logsumexp(z over all classes but m) (= the full CE when
    t == m, since the hit removal drops nothing and the constant log Q cancels)."""
    hidden, targets, weight, bias = _problem(N=40, V=6, seed=1)
    V = weight.shape[0]
    z = F.linear(hidden, weight, bias)
    for seed in range(4):
        logits, sampled = compute_sampled_logits(hidden, targets, weight, bias, V - 1,
                                                 UniformSampler(V), generator=_gen(seed),
                                                 unique=True)
        assert sampled.unique().numel() == V - 1
        (m,) = set(range(V)) - set(sampled.tolist())
        loss = F.cross_entropy(logits, torch.zeros(len(targets), dtype=torch.long),
                               reduction="none")
        keep = torch.ones(V, dtype=torch.bool)
        keep[m] = False
        keep_rows = keep.expand(len(targets), V).clone()
        keep_rows[torch.arange(len(targets)), targets] = True
        ref = -z.gather(1, targets[:, None])[:, 0] + torch.logsumexp(
            z.masked_fill(~keep_rows, float("-inf")), 1)
        torch.testing.assert_close(loss, ref, rtol=1e-12, atol=1e-12)
        at_m = targets == m
        assert at_m.any()
        torch.testing.assert_close(loss[at_m], F.cross_entropy(z[at_m], targets[at_m],
                                                               reduction="none"))


def test_logits_and_correction_match_definition():
    hidden, targets, weight, bias = _problem()
    s = LogUniformSampler(weight.shape[0])
    k = 5
    logits, sampled = compute_sampled_logits(hidden, targets, weight, bias, k, s, unique=False,
                                             remove_accidental_hits=False, generator=_gen(4))
    assert logits.shape == (hidden.shape[0], 1 + k) and sampled.shape == (k,)
    assert torch.equal(sampled, s.sample(k, generator=_gen(4)))   # same draw
    z = F.linear(hidden, weight, bias)
    lq_true = torch.log(k * s.probs[targets])
    lq_samp = torch.log(k * s.probs[sampled])
    torch.testing.assert_close(logits[:, 0], z.gather(1, targets[:, None])[:, 0] - lq_true)
    torch.testing.assert_close(logits[:, 1:], z[:, sampled] - lq_samp)
    loss = sampled_softmax_loss(hidden, targets, weight, bias, k, s, unique=False,
                                remove_accidental_hits=False, generator=_gen(4))
    torch.testing.assert_close(loss, F.cross_entropy(logits, torch.zeros(len(targets)).long()))
    # reduction="none" keeps the target shape; leading dims are flattened
    per = sampled_softmax_loss(hidden.view(2, 3, -1), targets.view(2, 3), weight, bias, k, s,
                               generator=_gen(4), reduction="none")
    assert per.shape == (2, 3)
    # unique (default): log Q = log(1 - (1-P)^num_tries) with the sampler's num_tries
    logits, sampled = compute_sampled_logits(hidden, targets, weight, bias, k, s,
                                             remove_accidental_hits=False, generator=_gen(4))
    ids, tries = s.sample(k, generator=_gen(4), unique=True, return_num_tries=True)
    assert torch.equal(sampled, ids) and sampled.unique().numel() == k
    q = lambda i: 1 - (1 - s.probs[i]) ** tries                   # noqa: E731
    torch.testing.assert_close(logits[:, 0], z.gather(1, targets[:, None])[:, 0] - q(targets).log())
    torch.testing.assert_close(logits[:, 1:], z[:, sampled] - q(sampled).log())


def test_accidental_hits_are_masked():
    hidden, targets, weight, bias = _problem(N=3, V=10)
    targets = torch.tensor([2, 7, 2])
    sampled = torch.tensor([7, 2, 5, 2])               # hits: row0 cols 1,3; row1 col 0; row2 1,3
    s = LogUniformSampler(10)
    sv = (sampled, s.log_q(targets, 4), s.log_q(sampled, 4))
    logits, _ = compute_sampled_logits(hidden, targets, weight, bias, 4, s, sampled_values=sv)
    neg = logits[:, 1:]
    hits = targets[:, None] == sampled[None, :]
    assert torch.isneginf(neg[hits]).all()
    assert torch.isfinite(neg[~hits]).all() and torch.isfinite(logits[:, 0]).all()
    # the loss equals the cross-entropy over the non-hit columns only, and is finite
    hidden.requires_grad_(True)
    loss = sampled_softmax_loss(hidden, targets, weight, bias, 4, s, sampled_values=sv,
                                reduction="none")
    for n in range(3):
        row = torch.cat([logits[n, :1], neg[n][~hits[n]]])
        torch.testing.assert_close(loss[n], -row[0] + torch.logsumexp(row, 0))
    loss.sum().backward()
    assert torch.isfinite(hidden.grad).all()
    # without removal the hit columns stay finite
    logits2, _ = compute_sampled_logits(hidden, targets, weight, bias, 4, s, sampled_values=sv,
                                        remove_accidental_hits=False)
    assert torch.isfinite(logits2).all()


def test_accidental_hit_through_sampler():
    """A sampler that always proposes the target: the hit column is -inf, the loss is finite."""
    s = CategoricalSampler([0.0, 1.0, 0.0, 0.0])       # always draws id 1
    hidden, _, weight, bias = _problem(N=2, V=4)
    targets = torch.tensor([1, 3])
    logits, sampled = compute_sampled_logits(hidden, targets, weight, bias, 2, s,
                                             generator=_gen(0), unique=False)
    assert sampled.tolist() == [1, 1]
    assert torch.isneginf(logits[0, 1:]).all() and torch.isfinite(logits[1]).all()
    loss = sampled_softmax_loss(hidden, targets, weight, bias, 2, s, generator=_gen(0),
                                unique=False, reduction="none")
    assert loss[0].item() == 0.0 and torch.isfinite(loss).all()


def test_only_needed_weight_rows_get_gradient():
    hidden, targets, weight, bias = _problem(N=4, V=500)
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    s = LogUniformSampler(500)
    sampled_softmax_loss(hidden, targets, weight, bias, 8, s, generator=_gen(5)).backward()
    used = set(targets.tolist()) | set(s.sample(8, generator=_gen(5), unique=True).tolist())
    touched = set(torch.nonzero(weight.grad.abs().sum(1)).flatten().tolist())
    assert touched <= used and len(used) < 500
    assert set(torch.nonzero(bias.grad).flatten().tolist()) <= used


def _grad_errors(ks, M=500, **kw):
    """Relative error ||mean over M draws of d(sampled loss)/dz - d(full CE)/dz|| / ||full||.

    Toy: V=50, weight = I (so hidden = logits z), z = log P_proposal + N(0, 1) noise, log-uniform
    proposal, 4 rows with frequent and rare targets."""
    V = 50
    s = LogUniformSampler(V)
    g = torch.Generator().manual_seed(0)
    z0 = s.probs.log() + torch.randn(4, V, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 3, 10, 40])
    W = torch.eye(V, dtype=torch.float64)
    full = (torch.softmax(z0, 1) - F.one_hot(t, V)) / len(t)     # d mean-CE / d z
    draw_gen = _gen(1)
    errs = {}
    for k in ks:
        acc = torch.zeros_like(z0)
        for _ in range(M):
            z = z0.clone().requires_grad_(True)
            sampled_softmax_loss(z, t, W, None, k, s, generator=draw_gen, **kw).backward()
            acc += z.grad
        errs[k] = ((acc / M - full).norm() / full.norm()).item()
    return errs


def test_gradient_approaches_full_softmax_as_k_grows():
    """Defaults (unique sampling, accidental hits removed, as TF).

    The sampled gradient is a self-normalised importance-sampling estimate of softmax(z): biased,
    the bias shrinking as k grows. Measured on this toy with 3000 draws (3 noise seeds): relative
    error 0.36-0.41, 0.12-0.14, 0.004-0.009 at k = 2, 8, 32, with Monte Carlo standard errors
    0.010, 0.006, 0.002 at M = 3000, i.e. about 0.025, 0.015, 0.005 at M = 500. The tolerance 0.03
    at k = 32 is the bias (<0.01) plus 4 standard errors, and 10x below the k = 2 error.
    """
    errs = _grad_errors((2, 8, 32))
    assert errs[2] > errs[8] > errs[32], errs
    assert errs[8] < 0.6 * errs[2] and errs[32] < 0.5 * errs[8], errs
    assert errs[32] < 0.03, errs


def test_gradient_with_replacement_without_hit_removal_converges():
    """unique=False, remove_accidental_hits=False: E[normaliser estimate] = Z + e^{z_t}/(kP(t)),
    so the bias is O(1/k). Measured (3000 draws): 0.37-0.43, 0.17-0.18, 0.033-0.041 at k = 2, 8, 48;
    standard error at M = 500 about 0.01 at k = 48, hence the tolerance 0.08."""
    errs = _grad_errors((2, 8, 48), unique=False, remove_accidental_hits=False)
    assert errs[2] > errs[8] > errs[48], errs
    assert errs[48] < 0.08, errs


def test_functional_bad_arguments():
    hidden, targets, weight, bias = _problem(V=12)
    s = LogUniformSampler(12)
    for k in (0, -3):
        with pytest.raises(ValueError, match="num_sampled"):
            sampled_softmax_loss(hidden, targets, weight, bias, k, s)
    for k in (12, 20):
        with pytest.raises(ValueError, match="num_sampled"):
            sampled_softmax_loss(hidden, targets, weight, bias, k, s)
    with pytest.raises(ValueError, match="reduction"):
        sampled_softmax_loss(hidden, targets, weight, bias, 3, s, reduction="avg")
    with pytest.raises(ValueError, match="classes"):
        sampled_softmax_loss(hidden, targets, weight, bias, 3, LogUniformSampler(11))
    with pytest.raises(ValueError, match="hidden"):
        sampled_softmax_loss(hidden[:, :3], targets, weight, bias, 3, s)


# ----------------------------------------------------------------------------------------------
# Modules
# ----------------------------------------------------------------------------------------------

def test_full_softmax_matches_linear_cross_entropy():
    torch.manual_seed(0)
    m = FullSoftmax(5, 11)
    assert m.weight.shape == (11, 5) and m.bias.shape == (11,)
    assert set(m.state_dict()) == {"weight", "bias"}
    h = torch.randn(2, 3, 5)
    y = torch.randint(11, (2, 3))
    lp = m.log_prob(h)
    assert lp.shape == (2, 3, 11)
    torch.testing.assert_close(lp.exp().sum(-1), torch.ones(2, 3))
    ref = F.cross_entropy(F.linear(h, m.weight, m.bias).view(-1, 11), y.view(-1))
    torch.testing.assert_close(m.loss(h, y), ref)
    torch.testing.assert_close(m(h, y), ref)
    torch.testing.assert_close(m(h), lp)
    assert m.loss(h, y, reduction="none").shape == (2, 3)


def test_sampled_softmax_modes():
    torch.manual_seed(0)
    m = SampledSoftmax(5, 40, num_sampled=6)
    h, y = torch.randn(8, 5), torch.randint(40, (8,))
    full = F.cross_entropy(F.linear(h, m.weight, m.bias), y)
    m.train()
    a = m.loss(h, y, generator=_gen(0))
    b = m.loss(h, y, generator=_gen(0))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, full)
    torch.testing.assert_close(a, sampled_softmax_loss(h, y, m.weight, m.bias, 6, m.sampler,
                                                       generator=_gen(0)))
    torch.testing.assert_close(m.log_prob(h), F.log_softmax(F.linear(h, m.weight, m.bias), -1))
    m.eval()
    torch.testing.assert_close(m.loss(h, y), full)
    torch.testing.assert_close(m(h, y), full)
    # other samplers / unique sampling train without error and get finite gradients
    for kw in ({"sampler": "unigram", "counts": torch.arange(40) + 1},
               {"sampler": "uniform", "unique": False, "remove_accidental_hits": False}):
        mm = SampledSoftmax(5, 40, 10, **kw)
        mm.loss(h, y).backward()
        assert torch.isfinite(mm.weight.grad).all()


def test_state_dict_interchange_full_sampled():
    torch.manual_seed(0)
    full = FullSoftmax(6, 30)
    samp = SampledSoftmax(6, 30, num_sampled=5)
    assert set(full.state_dict()) == set(samp.state_dict()) == {"weight", "bias"}
    samp.load_state_dict(full.state_dict())              # strict
    h = torch.randn(4, 6)
    torch.testing.assert_close(samp.log_prob(h), full.log_prob(h))
    full2 = FullSoftmax(6, 30)
    with torch.no_grad():
        samp.weight.add_(1.0)
    full2.load_state_dict(samp.state_dict())
    torch.testing.assert_close(full2.log_prob(h), samp.log_prob(h))
    # no bias on either side also interchanges
    FullSoftmax(6, 30, bias=False).load_state_dict(
        SampledSoftmax(6, 30, 5, bias=False).state_dict())


@pytest.mark.parametrize("kind", ["full", "sampled"])
def test_weight_tying(kind):
    emb = torch.nn.Embedding(25, 8)
    params = {"weight": emb.weight}
    if kind == "sampled":
        params["num_sampled"] = 4
    out = make_output_layer(kind, 8, 25, **params)
    assert out.weight is emb.weight
    x = torch.randint(25, (5,))
    out.loss(emb(x), x).backward()
    assert emb.weight.grad is not None and torch.isfinite(emb.weight.grad).all()

    class LM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = emb
            self.out = out
    assert sum(1 for _ in LM().parameters()) == 2        # weight shared once, plus the bias
    with pytest.raises(ValueError, match="weight"):
        make_output_layer(kind, 7, 25, **params)         # wrong shape
    with pytest.raises(ValueError, match="weight"):
        make_output_layer(kind, 8, 25, **{**params, "weight": torch.zeros(25, 8)})


def test_adaptive_matches_torch():
    torch.manual_seed(0)
    m = AdaptiveSoftmax(16, 100, cutoffs=[10, 40], div_value=2.0)
    ref = torch.nn.AdaptiveLogSoftmaxWithLoss(16, 100, [10, 40], div_value=2.0)
    ref.load_state_dict(m.asm.state_dict())
    h, y = torch.randn(12, 16), torch.randint(100, (12,))
    torch.testing.assert_close(m.loss(h, y), ref(h, y).loss)
    torch.testing.assert_close(m(h, y), ref(h, y).loss)
    torch.testing.assert_close(m.log_prob(h), ref.log_prob(h))
    torch.testing.assert_close(m.loss(h, y, reduction="sum"), ref(h, y).loss * 12)
    torch.testing.assert_close(m.loss(h, y, reduction="none"), -ref(h, y).output)
    torch.testing.assert_close(m.log_prob(h).exp().sum(-1), torch.ones(12))
    # leading dims
    assert m.log_prob(h.view(3, 4, 16)).shape == (3, 4, 100)
    assert m.loss(h.view(3, 4, 16), y.view(3, 4), reduction="none").shape == (3, 4)
    # same seed -> same parameters as torch's own construction
    torch.manual_seed(1)
    a = AdaptiveSoftmax(16, 100, cutoffs=[10, 40])
    torch.manual_seed(1)
    b = torch.nn.AdaptiveLogSoftmaxWithLoss(16, 100, [10, 40], div_value=4.0)
    torch.testing.assert_close(a(h, y), b(h, y).loss)


def test_factory():
    assert isinstance(make_output_layer("full", 4, 10), FullSoftmax)
    s = make_output_layer("sampled", 4, 10, num_sampled=3, sampler="unigram",
                          counts=list(range(1, 11)), alpha=0.5)
    assert isinstance(s, SampledSoftmax) and isinstance(s.sampler, UnigramSampler)
    assert s.sampler.alpha == 0.5
    assert isinstance(make_output_layer("adaptive", 4, 10, cutoffs=[3]), AdaptiveSoftmax)
    with pytest.raises(ValueError, match="kind"):
        make_output_layer("hierarchical", 4, 10)
    with pytest.raises(ValueError, match="num_sampled"):
        make_output_layer("sampled", 4, 10)
    with pytest.raises(ValueError, match="cutoffs"):
        make_output_layer("adaptive", 4, 10)


@pytest.mark.parametrize("make, match", [
    (lambda: SampledSoftmax(4, 10, num_sampled=10), "num_sampled"),
    (lambda: SampledSoftmax(4, 10, num_sampled=11), "num_sampled"),
    (lambda: SampledSoftmax(4, 10, num_sampled=0), "num_sampled"),
    (lambda: SampledSoftmax(4, 10, num_sampled=-1), "num_sampled"),
    (lambda: SampledSoftmax(4, 10, num_sampled=2.5), "num_sampled"),
    (lambda: SampledSoftmax(4, 10, 3, sampler="unigram"), "counts"),
    (lambda: SampledSoftmax(4, 10, 3, sampler="unigram", counts=[1] * 9), "counts"),
    (lambda: SampledSoftmax(4, 10, 3, sampler="unigram", counts=[1] * 9 + [-1]), "counts"),
    (lambda: SampledSoftmax(4, 10, 3, sampler="unigram", counts=[1] * 10, alpha=-0.1), "alpha"),
    (lambda: SampledSoftmax(4, 10, 3, sampler="unigram", counts=[1] * 10,
                            alpha=float("nan")), "alpha"),
    (lambda: SampledSoftmax(4, 10, 3, sampler="softmax-tree"), "sampler"),
    (lambda: UnigramSampler([1, 2], alpha=-1), "alpha"),
    (lambda: UnigramSampler([1, float("nan")]), "counts"),
    (lambda: LogUniformSampler(0), "num_classes"),
    (lambda: AdaptiveSoftmax(4, 10, cutoffs=[5, 3]), "cutoffs"),
    (lambda: AdaptiveSoftmax(4, 10, cutoffs=[3, 3]), "cutoffs"),
    (lambda: AdaptiveSoftmax(4, 10, cutoffs=[3, 10]), "cutoffs"),
    (lambda: AdaptiveSoftmax(4, 10, cutoffs=[0, 5]), "cutoffs"),
    (lambda: AdaptiveSoftmax(4, 10, cutoffs=[]), "cutoffs"),
    (lambda: AdaptiveSoftmax(4, 10, cutoffs=[2.5]), "cutoffs"),
    (lambda: AdaptiveSoftmax(4, 10, cutoffs=[5], div_value=0), "div_value"),
    (lambda: FullSoftmax(0, 10), "hidden_size"),
    (lambda: FullSoftmax(4, 0), "vocab_size"),
    (lambda: make_output_layer("nope", 4, 10), "kind"),
])
def test_bad_parameters_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("kind,params", [("full", {}), ("sampled", {"num_sampled": 5}),
                                         ("adaptive", {"cutoffs": [10, 40]})])
def test_target_log_prob_equals_gathered_log_prob(kind, params, monkeypatch):
    """The targets' log-probabilities without the (*, V) block equal the gathered full
    log-softmax, in training mode too (sampled softmax's log_prob is always the full one),
    across row blocks (the block size set so that 7 rows make one: 50 rows, 8 blocks)."""
    import rnndrop.softmax.layers as layers
    monkeypatch.setattr(layers, "_TARGET_BLOCK", 7 * 100)
    torch.manual_seed(0)
    m = make_output_layer(kind, 16, 100, **params)
    h, y = torch.randn(5, 10, 16, requires_grad=True), torch.randint(100, (5, 10))
    got = m.target_log_prob(h, y)
    assert got.shape == (5, 10)
    want = m.log_prob(h).gather(-1, y.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(got, want)
    got.sum().backward()                      # differentiable, not only an eval shortcut
    assert h.grad is not None and torch.isfinite(h.grad).all()
    if kind != "adaptive":
        with pytest.raises(ValueError, match="rows"):
            m.target_log_prob(h, y[:, :3])
