"""The classifier / regressor of a :class:`~rnndrop.classify.config.ClassifyConfig`.

embedding (word-type dropout) → (Bi)LSTM / GRU / RNN with the recipe's dropout scheme → head
(:class:`rnndrop.models.classifiers.SentimentClassifier`). A regressor is the same network with
one output, trained on standardised targets (``(y - mean) / std`` of the training split): the
scale of a user's numbers (stars 1–5, prices) does not change the optimiser's step sizes.
"""
from __future__ import annotations

from ..models.classifiers import SentimentClassifier
from .config import ClassifyModelConfig


def encoder_options(m: ClassifyModelConfig) -> tuple[dict, float]:
    """``(options of the recurrent layer, word-type embedding dropout)`` of the scheme."""
    p = m.dropout
    if m.scheme == "none" or p == 0:
        return {}, 0.0
    if m.scheme == "naive":      # Zaremba et al.: non-recurrent connections, fresh masks
        return dict(dropout_input=p, dropout_output=p, variational=False), 0.0
    emb = p if m.dropout_embedding is None else m.dropout_embedding
    return dict(dropout_input=p, dropout_hidden=p, dropout_output=p, variational=True,
                tied=m.tied_masks), emb


def build_model(m: ClassifyModelConfig, vocab_size: int, num_outputs: int) -> SentimentClassifier:
    """``num_outputs``: the number of classes, or 1 for a regressor."""
    opts, emb = encoder_options(m)
    return SentimentClassifier(vocab_size, encoder=m.encoder, embedding_dim=m.embedding_dim,
                               hidden_size=m.hidden_size, num_layers=m.num_layers,
                               head_size=m.head_size, num_classes=num_outputs,
                               head_activation=m.head_activation, dropout=m.dropout_head,
                               dropout_embedding=emb, padding_idx=0, encoder_options=opts)
