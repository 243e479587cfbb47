"""rnndrop.data.batching: padded batches trimmed to their longest row, balanced subsets."""
import pytest
import torch

from rnndrop.data.batching import Encoded, balanced_indices, iterate_batches


def _data(n=20, T=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, T + 1, (n,), generator=g)
    tokens = torch.randint(2, 30, (n, T), generator=g)
    tokens[torch.arange(T).unsqueeze(0) >= lengths.unsqueeze(1)] = 0
    return Encoded(tokens, lengths, torch.randint(0, 2, (n,), generator=g))


@pytest.mark.parametrize("kw", [dict(), dict(shuffle=True), dict(shuffle=True, bucket=2),
                                dict(shuffle=True, bucket=20)])
def test_iterate_batches_covers_all_and_trims(kw):
    data = _data()
    g = torch.Generator().manual_seed(1)
    seen = []
    for x, lengths, y in iterate_batches(data, 6, generator=g, **kw):
        assert x.shape[1] == int(lengths.max())          # trimmed to the longest review
        assert x.shape[0] == len(lengths) == len(y) <= 6
        for row, L, t in zip(x, lengths, y):
            i = next(j for j in range(len(data)) if j not in seen and data.lengths[j] == L
                     and torch.equal(data.tokens[j, :x.shape[1]], row) and data.targets[j] == t)
            seen.append(i)
    assert sorted(seen) == list(range(len(data)))


def test_balanced_indices():
    labels = [0] * 30 + [1] * 10
    g = torch.Generator().manual_seed(0)
    idx = balanced_indices(labels, 12, g)
    assert len(set(idx)) == 12 and sum(labels[i] for i in idx) == 6
    rest = balanced_indices(labels, 8, g, exclude=set(idx))
    assert not set(rest) & set(idx) and sum(labels[i] for i in rest) == 4
    with pytest.raises(ValueError):
        balanced_indices(labels, 30, g)


def test_iterate_batches_in_order_without_shuffle_and_buckets_sort_lengths():
    data = _data(n=24)
    rows = torch.cat([y for _, _, y in iterate_batches(data, 5)])
    assert torch.equal(rows, data.targets)
    g = torch.Generator().manual_seed(0)
    for _, lengths, _ in iterate_batches(data, 4, shuffle=True, generator=g, bucket=6):
        assert lengths.tolist() == sorted(lengths.tolist())     # one sorted pool: sorted batches
    sub = data.subset(torch.tensor([3, 1]))
    assert len(sub) == 2 and torch.equal(sub.tokens, data.tokens[[3, 1]])


def test_balanced_indices_odd_count_and_determinism():
    labels = [1, 0] * 10
    a = balanced_indices(labels, 5, torch.Generator().manual_seed(3))
    b = balanced_indices(labels, 5, torch.Generator().manual_seed(3))
    assert a == b and sorted(labels[i] for i in a) == [0, 0, 0, 1, 1]   # the extra: class 0
