"""SentimentClassifier / SentimentRegressor: shapes, the last-real-token gather, output range."""
import pytest
import torch

from rnndrop.models.classifiers import (ENCODERS, REGRESSION_SCHEMES, SentimentClassifier,
                                        SentimentRegressor, last_real_step, make_encoder)
from rnndrop.rnn import GRU, LSTM, RNN

V = 50


def _batch(B=4, T=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([T, 1, 5, 3])[:B]
    tokens = torch.randint(1, V, (B, T), generator=g)
    tokens[torch.arange(T).unsqueeze(0) >= lengths.unsqueeze(1)] = 0
    return tokens, lengths


@pytest.mark.parametrize("encoder", ENCODERS)
def test_classifier_shapes_and_backward(encoder):
    torch.manual_seed(0)
    m = SentimentClassifier(V, encoder, embedding_dim=8, hidden_size=6, head_size=10,
                            dropout=0.3)
    tokens, lengths = _batch()
    logits = m(tokens, lengths)
    assert logits.shape == (4, 2)
    assert torch.isfinite(logits).all()
    logits.sum().backward()
    assert m.embedding.weight.grad is not None and m.encoder.weight_hh_l0.grad is not None
    assert m.fc.out_features == 10 and m.out.out_features == 2


def test_encoder_types():
    assert isinstance(make_encoder("lstm", 3, 4), LSTM)
    assert isinstance(make_encoder("gru", 3, 4), GRU)
    for act in ("tanh", "relu", "sigmoid", "leaky_relu"):
        enc = make_encoder(f"rnn_{act}", 3, 4)
        assert isinstance(enc, RNN) and enc.activation == act and enc.batch_first
    with pytest.raises(ValueError):
        make_encoder("transformer", 3, 4)
    with pytest.raises(ValueError):
        make_encoder("lstm", 3, 4, batch_first=False)


def test_last_real_step_picks_last_token():
    out = torch.arange(2 * 5 * 3, dtype=torch.float32).view(2, 5, 3)
    got = last_real_step(out, torch.tensor([2, 5]))
    assert torch.equal(got[0], out[0, 1]) and torch.equal(got[1], out[1, 4])
    with pytest.raises(ValueError):
        last_real_step(out, torch.tensor([0, 5]))
    with pytest.raises(ValueError):
        last_real_step(out, torch.tensor([2, 6]))
    with pytest.raises(ValueError):
        last_real_step(out, torch.tensor([2]))


@pytest.mark.parametrize("encoder", ENCODERS)
def test_gather_reads_last_real_token_and_padding_changes_nothing(encoder):
    torch.manual_seed(1)
    m = SentimentClassifier(V, encoder, embedding_dim=8, hidden_size=6).eval()
    tokens, lengths = _batch()
    feats = m.features(tokens, lengths)
    # the feature of each row is the encoder state of that row run alone on its real tokens
    for b in range(tokens.shape[0]):
        L = int(lengths[b])
        alone = m.encoder(m.embedding(tokens[b:b + 1, :L]))[0][0]
        H = m.hidden_size      # bidirectional: the reverse direction's output at the first token
        want = alone[-1] if m.encoder.num_directions == 1 else torch.cat([alone[-1, :H], alone[0, H:]])
        torch.testing.assert_close(feats[b], want)
    # ... and is not the final state h_n (which ran over the padding) for the short rows
    out, hn = m.encoder(m.embedding(tokens))
    hn = hn[0] if isinstance(hn, tuple) else hn
    assert not torch.allclose(feats[1, :6], hn[0, 1])        # (forward direction)
    # replacing the padding after the last real token by other words changes nothing
    noisy = tokens.clone()
    pad = torch.arange(tokens.shape[1]).unsqueeze(0) >= lengths.unsqueeze(1)
    noisy[pad] = torch.randint(1, V, (int(pad.sum()),))
    torch.testing.assert_close(m(noisy, lengths), m(tokens, lengths))
    # ... and so does extra padding on the right
    longer = torch.cat([tokens, torch.zeros(4, 7, dtype=tokens.dtype)], 1)
    torch.testing.assert_close(m(longer, lengths), m(tokens, lengths))
    # changing the last real token does change the output
    changed, last = tokens.clone(), int(lengths[2]) - 1
    changed[2, last] = tokens[2, last] % (V - 1) + 1          # another word id in [1, V)
    assert changed[2, last] != tokens[2, last]
    assert not torch.allclose(m(changed, lengths)[2], m(tokens, lengths)[2])


def test_gather_gradient_stops_at_last_real_token():
    torch.manual_seed(2)
    m = SentimentClassifier(V, "rnn_tanh", embedding_dim=8, hidden_size=6).eval()
    tokens, lengths = _batch()
    emb = m.embedding(tokens).detach().requires_grad_(True)
    m.head(m.features_from_embeddings(emb, lengths)).sum().backward()
    g = emb.grad.abs().sum(-1)                      # (B, T)
    pad = torch.arange(tokens.shape[1]).unsqueeze(0) >= lengths.unsqueeze(1)
    assert (g[pad] == 0).all()
    assert (g[~pad] > 0).all()


@pytest.mark.parametrize("encoder", ["lstm", "bigru", "rnn_relu"])
def test_packed_and_padded_encoders_agree_on_the_features(encoder):
    """packed=True skips the padding; unidirectional features are the same either way (the
    last real step), while a bidirectional encoder run over the padding reads its reverse
    direction from the padding in."""
    torch.manual_seed(3)
    packed = SentimentClassifier(V, encoder, embedding_dim=8, hidden_size=6).eval()
    padded = SentimentClassifier(V, encoder, embedding_dim=8, hidden_size=6, packed=False).eval()
    padded.load_state_dict(packed.state_dict())
    tokens, lengths = _batch()
    a, b = packed.features(tokens, lengths), padded.features(tokens, lengths)
    assert a.shape == (4, 6 * packed.encoder.num_directions) and packed.feature_size == a.shape[1]
    if encoder.startswith("bi"):
        torch.testing.assert_close(a[0], b[0])          # full length: no padding to read
        assert not torch.allclose(a[1], b[1])
    else:
        torch.testing.assert_close(a, b)


def test_bidirectional_encoders_and_regressor():
    enc = make_encoder("bilstm", 3, 4, dropout_hidden=0.2)
    assert isinstance(enc, LSTM) and enc.bidirectional and enc.num_directions == 2
    reg = SentimentRegressor(V, "bigru", embedding_dim=8, hidden_size=5)
    assert reg.out.in_features == 10
    tokens, lengths = _batch()
    assert reg(tokens, lengths).shape == (4,)


def test_encoder_options_pass_through():
    m = SentimentClassifier(V, "lstm", embedding_dim=8, hidden_size=6,
                            encoder_options=dict(dropout_input=0.2, dropout_hidden=0.3,
                                                 variational=True))
    assert m.encoder.dropout_hidden == 0.3 and m.encoder.dropout_input == 0.2
    tokens, lengths = _batch()
    assert m.train()(tokens, lengths).shape == (4, 2)


def test_head_activation_and_dropout_checks():
    with pytest.raises(ValueError):
        SentimentClassifier(V, head_activation="softplus")
    with pytest.raises(ValueError):
        SentimentClassifier(V, dropout=1.0)
    m = SentimentClassifier(V, "gru", embedding_dim=4, hidden_size=4, head_activation="tanh",
                            dropout=0.5)
    tokens, lengths = _batch()
    m.eval()
    torch.testing.assert_close(m(tokens, lengths), m(tokens, lengths))   # no dropout in eval


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("scheme", REGRESSION_SCHEMES)
def test_regressor_in_unit_interval(cell, scheme):
    torch.manual_seed(3)
    m = SentimentRegressor(V, cell, scheme, p=0.5, embedding_dim=8, hidden_size=6)
    tokens, lengths = _batch()
    for mode in (True, False):
        m.train(mode)
        y = m(tokens, lengths)
        assert y.shape == (4,)
        assert ((y >= 0) & (y <= 1)).all()
    y.sum().backward()


def test_regressor_schemes_configure_dropout():
    none = SentimentRegressor(V, "lstm", "none", p=0.5)
    assert none.encoder.dropout_input == 0 and none.embedding.dropout == 0
    naive = SentimentRegressor(V, "gru", "naive", p=0.5)
    assert not naive.encoder.variational and naive.encoder.dropout_hidden == 0
    assert naive.encoder.dropout_input == 0.5 and naive.encoder.dropout_output == 0.5
    assert naive.embedding.dropout == 0
    var = SentimentRegressor(V, "lstm", "variational", p=0.25, p_embedding=0.1)
    assert var.encoder.variational and var.encoder.dropout_hidden == 0.25
    assert var.embedding.dropout == 0.1
    with pytest.raises(ValueError):
        SentimentRegressor(V, "rnn_tanh")
    with pytest.raises(ValueError):
        SentimentRegressor(V, scheme="zoneout")


def test_learned_rates_and_their_regulariser_through_encoder_options():
    torch.manual_seed(0)
    m = SentimentClassifier(30, "lstm", embedding_dim=6, hidden_size=5,
                            encoder_options=dict(dropout_hidden=0.4, dropout_output=0.3,
                                                 zoneout=0.1, learn_dropout=True))
    assert m.dropout_rates() == pytest.approx({"hidden_l0": 0.4, "output": 0.3})
    assert m.encoder.zoneout_hidden == 0.1
    torch.testing.assert_close(m.regularizer(1e-2, 1e-3),
                               m.encoder.regularizer(1e-2, 1e-3, m.fc.weight))
    tokens = torch.randint(1, 30, (4, 7))
    lengths = torch.tensor([7, 3, 5, 1])
    (m(tokens, lengths).sum() + m.regularizer(1e-2, 1e-3)).backward()
    assert m.encoder.concrete_hidden[0].p_logit.grad.abs().item() > 0
    plain = SentimentClassifier(30, "gru", embedding_dim=6, hidden_size=5)
    assert plain.dropout_rates() == {} and plain.regularizer(1e-2, 1e-3).item() == 0.0


@pytest.mark.parametrize("packed", [True, False])
@pytest.mark.parametrize("make", [
    lambda packed: SentimentClassifier(
        V, "bilstm", embedding_dim=8, hidden_size=6, dropout=0.3, dropout_embedding=0.3,
        encoder_options=dict(dropout_input=0.2, dropout_hidden=0.3, variational=True,
                             tied=False), packed=packed),
    lambda packed: SentimentRegressor(V, "gru", p=0.3, embedding_dim=8, hidden_size=5,
                                      packed=packed),
])
def test_replicas_equal_the_repeated_batch(make, packed):
    """``model(tokens, lengths, replicas=R)`` (MC dropout's samples with one lookup) is
    ``model(tokens.repeat(R, 1), lengths.repeat(R))`` bit for bit from the same seed."""
    torch.manual_seed(0)
    m = make(packed).train()
    tokens, lengths = _batch()
    R = 3
    torch.manual_seed(1)
    want = m(tokens.repeat(R, 1), lengths.repeat(R))
    torch.manual_seed(1)
    got = m(tokens, lengths, replicas=R)
    assert got.shape[0] == R * tokens.shape[0]
    assert torch.equal(got, want)
    with pytest.raises(ValueError, match="replicas must be an integer >= 1"):
        m(tokens, lengths, replicas=0)
