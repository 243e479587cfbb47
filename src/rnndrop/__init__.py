"""rnndrop: dropout done right for recurrent networks."""
from .dropout import (Dropout, EmbeddingDropout, GaussianDropout, LockedDropout,
                      ThreeValueDropout, WeightDrop, dropout, embedding_dropout,
                      gaussian_dropout, locked_dropout, three_value_dropout, weight_dropout)
from .rnn import GRU, LSTM, RNN

__version__ = "0.1.0"
