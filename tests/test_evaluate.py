"""Perplexity: the standard dropout approximation and MC dropout."""
import math

import pytest
import torch

from rnndrop.data.text import batchify
from rnndrop.evaluate import _token_logp, perplexity
from rnndrop.models.lm import RNNLanguageModel


@pytest.fixture
def corpus(lm_corpus):
    return lm_corpus


def test_uniform_model_perplexity_is_vocab_size(corpus):
    model = RNNLanguageModel(corpus.vocab, hidden_size=8, num_layers=1)
    with torch.no_grad():
        model.decoder.weight.zero_()
        model.decoder.bias.zero_()
    ppl = perplexity(model, batchify(corpus.test, 2), bptt=5)
    assert ppl == pytest.approx(len(corpus.vocab), rel=1e-5)


def test_mc_with_p0_equals_deterministic(corpus):
    torch.manual_seed(0)
    model = RNNLanguageModel(corpus.vocab, hidden_size=8, num_layers=2, scheme="variational")
    data = batchify(corpus.valid, 2)
    det = perplexity(model, data, bptt=5)
    mc = perplexity(model, data, bptt=5, mc_samples=3, mc_batch=2)
    assert mc == pytest.approx(det, rel=1e-5)


@pytest.mark.parametrize("mc_batch", [4, 1, 3])
def test_mc_dropout_averages_probabilities(corpus, mc_batch):
    """MC perplexity is exp(-mean log p̄) with p̄ the mean of the S samples' *probabilities*,
    however the S samples are split into passes of ``mc_batch``: recomputed by hand from the
    same seeded passes (chunks of ``mc_batch``), it fails if log-probabilities were averaged or
    a chunk were lost or counted twice."""
    torch.manual_seed(0)
    model = RNNLanguageModel(corpus.vocab, hidden_size=8, num_layers=1, scheme="variational",
                             dropout_hidden=0.5, dropout_output=0.5, init_range=1.0)
    data = batchify(corpus.valid, 2)     # large weights: the samples differ a lot
    S = 4
    torch.manual_seed(1)
    mc = perplexity(model, data, bptt=5, mc_samples=S, mc_batch=mc_batch)
    torch.manual_seed(1)
    model.train()
    with torch.no_grad():
        logp = torch.cat([_token_logp(model, data, 5, min(mc_batch, S - k), False)
                          for k in range(0, S, mc_batch)]).double()          # (S, N, B)
    p_bar = logp.exp().mean(0)
    assert mc == pytest.approx(math.exp(-p_bar.log().mean().item()), rel=1e-6)
    log_mean = math.exp(-logp.mean(0).mean().item())       # the wrong average: log-probs
    assert abs(mc - log_mean) > 1e-3 * mc
    assert mc != perplexity(model, data, bptt=5)


def test_perplexity_past_exp_range_is_inf(corpus):
    model = RNNLanguageModel(corpus.vocab, hidden_size=8, num_layers=1)
    with torch.no_grad():
        model.decoder.weight.zero_()
        model.decoder.bias.fill_(-2000.0)
        model.decoder.bias[0] = 2000.0
    assert perplexity(model, batchify(corpus.test, 2), bptt=5) == math.inf
