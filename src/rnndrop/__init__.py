"""rnndrop: dropout done right for recurrent networks.

Modules at the top (``rnndrop.LSTM``, ``rnndrop.LockedDropout``, ...), their functional forms in
:mod:`rnndrop.functional`; ``rnndrop.dropout`` is the module that defines the dropout family.
"""
from . import dropout, functional
from .dropout import (ConcreteDropout, Dropout, EmbeddingDropout, GaussianDropout,
                      LockedConcreteDropout, LockedDropout, ThreeValueDropout, WeightDrop)
from .rnn import GRU, LSTM, RNN

__version__ = "0.1.0"

__all__ = ["ConcreteDropout", "LockedConcreteDropout", "Dropout", "EmbeddingDropout", "GaussianDropout", "LockedDropout",
           "ThreeValueDropout", "WeightDrop", "RNN", "LSTM", "GRU", "dropout", "functional"]
