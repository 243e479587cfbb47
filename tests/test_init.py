"""rnndrop.init: orthogonal recurrent weights of a given radius, gates biased open."""
import pytest
import torch

from rnndrop.init import init_recurrent, set_gate_bias
from rnndrop.rnn import GRU, LSTM, RNN

CELLS = {"rnn": RNN, "lstm": LSTM, "gru": GRU}


@pytest.mark.parametrize("cell,gates", [("rnn", 1), ("lstm", 4), ("gru", 3)])
def test_orthogonal_init_has_the_requested_radius(cell, gates):
    torch.manual_seed(0)
    rnn = CELLS[cell](2, 12, num_layers=2)
    before = {n: p.detach().clone() for n, p in rnn.named_parameters()}
    init_recurrent(rnn, "orthogonal", radius=1.5)
    for k in range(2):
        W = getattr(rnn, f"weight_hh_l{k}").detach().double().view(gates, 12, 12)
        for block in W:
            assert torch.allclose(block @ block.T, 2.25 * torch.eye(12, dtype=torch.float64), atol=1e-5)
            assert torch.linalg.eigvals(block).abs().max().item() == pytest.approx(1.5, rel=1e-5)
    for n, p in rnn.named_parameters():          # nothing else is touched
        if "weight_hh" not in n:
            assert torch.equal(p, before[n])


def test_default_init_leaves_the_weights_and_bad_init():
    rnn = LSTM(2, 4)
    before = rnn.weight_hh_l0.detach().clone()
    init_recurrent(rnn, "default")
    assert torch.equal(rnn.weight_hh_l0, before)
    with pytest.raises(ValueError, match="init must be"):
        init_recurrent(rnn, "xavier")


def test_gate_bias_opens_the_forget_gate():
    rnn = LSTM(2, 8)
    set_gate_bias(rnn, 3.0)
    b = rnn.bias_ih_l0 + rnn.bias_hh_l0
    assert torch.allclose(b[8:16], torch.full((8,), 3.0))
    gru = GRU(2, 8, num_layers=2)
    set_gate_bias(gru, 3.0)
    assert torch.allclose(gru.bias_ih_l1[8:16] + gru.bias_hh_l1[8:16], torch.full((8,), 3.0))
    with pytest.raises(ValueError, match="LSTM and GRU"):
        set_gate_bias(RNN(2, 4), 1.0)
