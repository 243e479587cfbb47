"""The functional forms of the dropout family, as ``torch.nn.functional`` is to ``torch.nn``::

    import rnndrop.functional as RF
    y = RF.locked_dropout(x, p=0.3, training=model.training)

Each function is defined (with its math and shapes) in :mod:`rnndrop.dropout`; this module only
gathers them, so that the package attribute ``rnndrop.dropout`` stays the module.
"""
from .dropout import (bernoulli_mask, concrete_dropout, concrete_embedding_dropout,
                      concrete_mask, concrete_regularizer, dropout,
                      embedding_dropout, gaussian_dropout, locked_dropout, three_value_dropout,
                      weight_dropout)

__all__ = ["bernoulli_mask", "concrete_dropout", "concrete_embedding_dropout", "concrete_mask",
           "concrete_regularizer", "dropout",
           "embedding_dropout", "gaussian_dropout", "locked_dropout", "three_value_dropout",
           "weight_dropout"]
