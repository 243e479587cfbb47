"""The language model: one meaning per recipe field, the config route and the keyword route."""
import dataclasses
import inspect

import pytest
import torch

from rnndrop.config import ModelConfig, RunConfig, apply_overrides
from rnndrop.data.text import Vocabulary
from rnndrop.models.lm import RNNLanguageModel


def test_every_model_config_field_is_a_constructor_argument_with_its_default():
    params = inspect.signature(RNNLanguageModel.__init__).parameters
    for f in dataclasses.fields(ModelConfig):
        assert f.name in params, f"ModelConfig.{f.name} is not an RNNLanguageModel argument"
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        assert list(params[f.name].default) == default if isinstance(default, list) \
            else params[f.name].default == default, f.name
    assert set(params) - {"self", "vocab"} == {f.name for f in dataclasses.fields(ModelConfig)}


def test_from_config_equals_the_keyword_form():
    cfg = apply_overrides(RunConfig(), ["model.hidden_size=12", "model.num_layers=1",
                                        "model.scheme=variational", "model.dropout_hidden=0.3",
                                        "model.tied_masks=false"]).model
    torch.manual_seed(0)
    a = RNNLanguageModel.from_config(cfg, 30)
    torch.manual_seed(0)
    b = RNNLanguageModel(30, hidden_size=12, num_layers=1, scheme="variational",
                         dropout_hidden=0.3, tied_masks=False)
    assert repr(a) == repr(b)
    for (n, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), n
    assert a.rnn.tied is False and a.rnn.dropout_hidden == 0.3


def test_vocabulary_counts_reach_a_unigram_sampler():
    vocab = Vocabulary(["a", "b", "c", "d"], [10, 5, 1, 0])
    m = RNNLanguageModel(vocab, hidden_size=4, num_layers=1, output="sampled", num_sampled=2,
                         sampler="unigram", alpha=1.0)
    expected = torch.tensor([11.0, 6, 2, 1], dtype=torch.float64)
    torch.testing.assert_close(m.decoder.sampler.probs, expected / expected.sum())
    with pytest.raises(ValueError, match="counts"):
        RNNLanguageModel(4, hidden_size=4, output="sampled", sampler="unigram")


@pytest.mark.parametrize("kwargs, message", [
    (dict(scheme="none", dropout_hidden=0.2), "scheme 'none' takes no dropout"),
    (dict(scheme="zaremba", dropout_output=0.2), "scheme 'zaremba' uses only dropout="),
    (dict(scheme="variational", dropout=0.2), "scheme 'variational' uses"),
    (dict(scheme="gal"), "scheme must be one of"),
    (dict(tie_weights=True, emb_size=7), "tie_weights needs emb_size == hidden_size"),
])
def test_inconsistent_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RNNLanguageModel(10, hidden_size=8, **kwargs)


@pytest.mark.parametrize("kwargs", [
    dict(scheme="variational", dropout_embedding=0.3, dropout_input=0.4, dropout_hidden=0.3,
         dropout_output=0.4, tied_masks=False),
    dict(scheme="variational", dropout_embedding=0.3, dropout_hidden=0.3, learn_dropout=True),
    dict(scheme="zaremba", dropout=0.5),
])
def test_replicas_equal_the_repeated_batch(kwargs):
    """``model(tokens, state, replicas=R)`` (MC dropout's one embedding lookup for R samples)
    is ``model(tokens.repeat(1, R), state)`` bit for bit from the same seed, state included."""
    torch.manual_seed(0)
    model = RNNLanguageModel(30, hidden_size=6, num_layers=2, **kwargs).train()
    tokens, R = torch.randint(0, 30, (7, 3)), 4
    state = model.init_state(3 * R)
    torch.manual_seed(1)
    want, want_state = model(tokens.repeat(1, R), state)
    torch.manual_seed(1)
    got, got_state = model(tokens, state, replicas=R)
    assert got.shape == (7, 3 * R, 6)
    assert torch.equal(got, want)
    assert all(torch.equal(a, b) for a, b in zip(got_state, want_state))
