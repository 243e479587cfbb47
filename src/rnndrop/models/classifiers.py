"""Sequence classifiers and regressors over padded token batches (no training code here).

``SentimentClassifier``: embedding → recurrent encoder → head (``Linear(H, 256)`` → activation →
dropout → ``Linear(256, classes)``). ``SentimentRegressor`` (Gal & Ghahramani 2016, §5.2):
embedding → LSTM/GRU → ``Linear(H, 1)`` → sigmoid, a rating in ``[0, 1]``.

Everything is **batch-first**: tokens ``(B, T)`` int64, right-padded, with ``lengths (B,)`` the
number of real tokens of each row (``1 <= lengths <= T``). The encoders are causal, so the state
after the last real token, ``output[b, lengths[b] - 1]``, does not depend on the padding that
follows it: that is the feature the heads read (:func:`last_real_step`), never ``h_n``, which
has run over the padding.

Encoders (``ENCODERS``): ``rnn_tanh``, ``rnn_relu``, ``rnn_sigmoid``, ``rnn_leaky_relu``
(:class:`rnndrop.rnn.RNN` with that activation), ``gru``, ``lstm``, and the bidirectional
``bigru``, ``bilstm`` (feature: the forward state after the last real token beside the reverse
state after the first). The encoder runs on the real tokens only (``lengths=``: nothing of the
padding is computed); ``packed=False`` runs it over the padding, as before 2026-12. ``encoder_options`` go to the
recurrent layer unchanged (``dropout_input``, ``dropout_hidden``, ``dropout_output``,
``variational``, ``tied``, ``weight_dropout``, ...).

Regressor dropout schemes (``REGRESSION_SCHEMES``), probability ``p``:

- ``none``: no dropout anywhere.
- ``naive`` (Zaremba et al. 2014 style): ``variational=False``, fresh masks at every step on the
  encoder's input (the embeddings) and output; no recurrent dropout, no embedding dropout.
- ``variational`` (Gal & Ghahramani): ``variational=True``, one mask per sequence on the input,
  the recurrent state ``h_{t-1}`` (``dropout_hidden``) and the output, plus word-type embedding
  dropout (:class:`rnndrop.dropout.EmbeddingDropout`, one mask per sequence).

The encoder's output dropout acts on the gathered last state, i.e. it is the dropout before the
dense layer of Gal's scripts (``p_dense``).
"""
from __future__ import annotations

from typing import Mapping, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_positive_int, check_probability
from ..dropout import EmbeddingDropout
from ..rnn import ACTIVATIONS, GRU, LSTM, RNN

__all__ = ["ENCODERS", "HEAD_ACTIVATIONS", "REGRESSION_SCHEMES", "make_encoder",
           "last_real_step", "SentimentClassifier", "SentimentRegressor"]

ENCODERS = ("rnn_tanh", "rnn_relu", "rnn_sigmoid", "rnn_leaky_relu", "gru", "lstm", "bigru",
            "bilstm")
HEAD_ACTIVATIONS = {**ACTIVATIONS, "gelu": F.gelu}   # the layers' activations, and GELU
REGRESSION_SCHEMES = ("none", "naive", "variational")


def make_encoder(kind: str, input_size: int, hidden_size: int, num_layers: int = 1,
                 **options) -> nn.Module:
    """A batch-first recurrent layer of ``kind`` (one of :data:`ENCODERS`); ``options`` go to
    its constructor (dropout options of :mod:`rnndrop.rnn`)."""
    if kind not in ENCODERS:
        raise ValueError(f"encoder must be one of {ENCODERS}, got {kind!r}")
    if "batch_first" in options and not options["batch_first"]:
        raise ValueError("the classifiers are batch-first; batch_first=False is not supported")
    options = {k: v for k, v in options.items() if k != "batch_first"}
    if kind.startswith("bi"):
        options["bidirectional"], kind = True, kind[2:]
    if kind == "lstm":
        return LSTM(input_size, hidden_size, num_layers, batch_first=True, **options)
    if kind == "gru":
        return GRU(input_size, hidden_size, num_layers, batch_first=True, **options)
    return RNN(input_size, hidden_size, num_layers, batch_first=True,
               activation=kind[len("rnn_"):], **options)


def _check_lengths(lengths: Tensor, batch: int, steps: int) -> Tensor:
    if not isinstance(lengths, Tensor):
        lengths = torch.as_tensor(lengths)
    if lengths.dim() != 1 or lengths.shape[0] != batch:
        raise ValueError(f"lengths must have shape ({batch},), got {tuple(lengths.shape)}")
    if lengths.is_floating_point():
        raise TypeError(f"lengths must be integers, got {lengths.dtype}")
    if batch and (int(lengths.min()) < 1 or int(lengths.max()) > steps):
        raise ValueError(f"lengths must lie in [1, {steps}] (the padded length), got "
                         f"min {int(lengths.min())}, max {int(lengths.max())}")
    return lengths


def last_real_step(output: Tensor, lengths: Tensor) -> Tensor:
    """``output[b, lengths[b] - 1]`` for every row: the state after each sequence's last real
    token. ``output`` ``(B, T, H)`` (batch-first), ``lengths`` ``(B,)`` in ``[1, T]``; returns
    ``(B, H)``. Differentiable (a ``gather``)."""
    if output.dim() != 3:
        raise ValueError(f"output must be (B, T, H), got shape {tuple(output.shape)}")
    B, T, H = output.shape
    lengths = _check_lengths(lengths, B, T)
    idx = (lengths.to(device=output.device, dtype=torch.long) - 1).view(B, 1, 1).expand(B, 1, H)
    return output.gather(1, idx).squeeze(1)


class _SequenceModel(nn.Module):
    """Shared parts: the embedding, the encoder and reading the last real step."""

    def _build(self, vocab_size: int, embedding_dim: int, hidden_size: int, encoder: str,
               num_layers: int, padding_idx: Optional[int], dropout_embedding: float,
               encoder_options: Mapping, packed: bool = True) -> None:
        check_positive_int(vocab_size, "vocab_size")
        check_positive_int(embedding_dim, "embedding_dim")
        check_positive_int(hidden_size, "hidden_size")
        self.vocab_size, self.embedding_dim, self.hidden_size = vocab_size, embedding_dim, hidden_size
        self.encoder_kind = encoder
        self.padding_idx = padding_idx
        self.packed = bool(packed)
        self.embedding = EmbeddingDropout(vocab_size, embedding_dim,
                                          dropout=check_probability(dropout_embedding,
                                                                    "dropout_embedding"),
                                          mode="sequence", batch_first=True,
                                          padding_idx=padding_idx)
        self.encoder = make_encoder(encoder, embedding_dim, hidden_size, num_layers,
                                    **dict(encoder_options))

    def embed(self, tokens: Tensor, replicas: int = 1) -> Tensor:
        """Token ids ``(B, T)`` → embeddings ``(B, T, E)`` (word-type dropout in training);
        ``replicas = R``: ``(R·B, T, E)`` as for ``tokens.repeat(R, 1)``, one lookup."""
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be (B, T), got shape {tuple(tokens.shape)}")
        return self.embedding(tokens, replicas)

    @property
    def feature_size(self) -> int:
        return self.hidden_size * self.encoder.num_directions

    def features_from_embeddings(self, embedded: Tensor, lengths: Tensor) -> Tensor:
        """Run the encoder on ``(B, T, E)`` embeddings and read each row's last real step
        (bidirectional: with the reverse direction's output at the first step, ``(B, 2H)``)."""
        _check_lengths(lengths, embedded.shape[0], embedded.shape[1])
        if self.packed:
            output = self.encoder(embedded, lengths=lengths.cpu())[0]
        else:
            output = self.encoder(embedded)[0]
        H = self.hidden_size
        last = last_real_step(output[..., :H], lengths)
        if self.encoder.num_directions == 1:
            return last
        return torch.cat([last, output[:, 0, H:]], -1)

    def features(self, tokens: Tensor, lengths: Tensor, replicas: int = 1) -> Tensor:
        """``(B, H)``: the encoder state after each review's last real token. ``replicas =
        R > 1`` (MC dropout's samples side by side, each its own masks): ``(R·B, H)``, as
        ``tokens.repeat(R, 1)`` with ``lengths.repeat(R)`` would give, with one lookup."""
        embedded = self.embed(tokens, replicas)          # checks replicas
        return self.features_from_embeddings(
            embedded, lengths.repeat(replicas) if replicas > 1 else lengths)

    def dropout_rates(self) -> dict:
        """The encoder's learned drop probabilities (``encoder_options`` with
        ``learn_dropout=True``: Concrete dropout), ``{site: p}``; {} without."""
        return self.encoder.dropout_rates()

    def regularizer(self, weight_regularizer: float, dropout_regularizer: float) -> Tensor:
        """The encoder's Concrete-dropout regulariser (``rnndrop.rnn`` layers' ``regularizer``),
        its output site weighted by the layer that reads the feature (the head's first
        ``Linear``); the paper's scales are ``l²/N`` and ``2/N`` for ``N`` training sequences.
        Zero without learned rates."""
        nxt = self.fc if hasattr(self, "fc") else self.out
        return self.encoder.regularizer(weight_regularizer, dropout_regularizer, nxt.weight)


class SentimentClassifier(_SequenceModel):
    """embedding → recurrent encoder → ``Linear(H, head_size)`` → activation → dropout →
    ``Linear(head_size, num_classes)``.

    Args:
        vocab_size: number of token ids (embedding rows).
        encoder: one of :data:`ENCODERS`.
        embedding_dim, hidden_size, num_layers: sizes.
        head_size: width of the head's hidden layer (256).
        num_classes: output logits (2).
        head_activation: one of ``HEAD_ACTIVATIONS`` (``"relu"``).
        dropout: dropout probability in the head (on the encoder feature and on the head's
            hidden layer).
        dropout_embedding: word-type embedding dropout (per sequence).
        padding_idx: padding id (its embedding row is zero and gets no gradient), or None.
        encoder_options: passed to the recurrent layer, e.g. ``dict(dropout_hidden=0.25,
            variational=True)``.
        packed: run the encoder on each review's real tokens only (default); ``False``: over the
            padding too (the same features, more work).

    ``forward(tokens (B, T), lengths (B,)) -> logits (B, num_classes)``.
    """

    def __init__(self, vocab_size: int, encoder: str = "lstm", embedding_dim: int = 128,
                 hidden_size: int = 128, num_layers: int = 1, head_size: int = 256,
                 num_classes: int = 2, head_activation: str = "relu", dropout: float = 0.0,
                 dropout_embedding: float = 0.0, padding_idx: Optional[int] = 0,
                 encoder_options: Optional[Mapping] = None, packed: bool = True):
        super().__init__()
        check_positive_int(head_size, "head_size")
        check_positive_int(num_classes, "num_classes")
        if head_activation not in HEAD_ACTIVATIONS:
            raise ValueError(f"head_activation must be one of {sorted(HEAD_ACTIVATIONS)}, "
                             f"got {head_activation!r}")
        self._build(vocab_size, embedding_dim, hidden_size, encoder, num_layers, padding_idx,
                    dropout_embedding, encoder_options or {}, packed)
        self.head_activation = head_activation
        self.dropout = check_probability(dropout, "dropout")
        self.fc = nn.Linear(self.feature_size, head_size)
        self.out = nn.Linear(head_size, num_classes)

    def head(self, features: Tensor) -> Tensor:
        """``(B, H)`` encoder features → logits ``(B, num_classes)``."""
        x = F.dropout(features, self.dropout, self.training)
        x = HEAD_ACTIVATIONS[self.head_activation](self.fc(x))
        x = F.dropout(x, self.dropout, self.training)
        return self.out(x)

    def forward(self, tokens: Tensor, lengths: Tensor, replicas: int = 1) -> Tensor:
        """Logits ``(B, num_classes)`` (``(R·B, …)`` with ``replicas``, see :meth:`features`)."""
        return self.head(self.features(tokens, lengths, replicas))

    def extra_repr(self) -> str:
        return (f"encoder={self.encoder_kind!r}, head_activation={self.head_activation!r}, "
                f"dropout={self.dropout}")


class SentimentRegressor(_SequenceModel):
    """embedding → LSTM/GRU → ``Linear(H, 1)`` → sigmoid: a rating in ``[0, 1]``.

    Args:
        vocab_size: number of token ids.
        cell: ``"lstm"``, ``"gru"``, ``"bilstm"`` or ``"bigru"``.
        scheme: one of :data:`REGRESSION_SCHEMES` (see the module docstring).
        p: dropout probability of the scheme (ignored by ``none``).
        p_embedding: word-type embedding dropout for ``variational`` (default ``p``).
        tied: one mask shared by the gates (``variational`` only; False = untied gate masks).
        embedding_dim, hidden_size: sizes (128 and 128 in the paper).
        padding_idx: padding id or None.

    ``forward(tokens (B, T), lengths (B,)) -> ratings (B,)`` in ``[0, 1]``.
    """

    def __init__(self, vocab_size: int, cell: str = "lstm", scheme: str = "variational",
                 p: float = 0.25, p_embedding: Optional[float] = None, tied: bool = True,
                 embedding_dim: int = 128, hidden_size: int = 128,
                 padding_idx: Optional[int] = 0, packed: bool = True):
        super().__init__()
        if cell not in ("lstm", "gru", "bilstm", "bigru"):
            raise ValueError(f"cell must be 'lstm', 'gru', 'bilstm' or 'bigru', got {cell!r}")
        if scheme not in REGRESSION_SCHEMES:
            raise ValueError(f"scheme must be one of {REGRESSION_SCHEMES}, got {scheme!r}")
        p = check_probability(p, "p")
        p_emb = p if p_embedding is None else check_probability(p_embedding, "p_embedding")
        if scheme == "none":
            opts, p_emb = {}, 0.0
        elif scheme == "naive":
            opts, p_emb = dict(dropout_input=p, dropout_output=p, variational=False), 0.0
        else:
            opts = dict(dropout_input=p, dropout_hidden=p, dropout_output=p, variational=True,
                        tied=tied)
        self.cell, self.scheme, self.p = cell, scheme, (0.0 if scheme == "none" else p)
        self._build(vocab_size, embedding_dim, hidden_size, cell, 1, padding_idx, p_emb, opts,
                    packed)
        self.out = nn.Linear(self.feature_size, 1)

    def forward(self, tokens: Tensor, lengths: Tensor, replicas: int = 1) -> Tensor:
        """Ratings ``(B,)`` (``(R·B,)`` with ``replicas``, see :meth:`features`)."""
        return torch.sigmoid(self.out(self.features(tokens, lengths, replicas))).squeeze(-1)

    def extra_repr(self) -> str:
        return f"cell={self.cell!r}, scheme={self.scheme!r}, p={self.p}"
