"""Word-level recurrent language model (Zaremba et al. 2014; Gal & Ghahramani 2016).

embedding (word-type dropout) → stack of LSTM layers (rnndrop.rnn.LSTM) → output layer
(full softmax, sampled softmax or adaptive softmax; optional weight tying).

Schemes:
- ``none``: no dropout.
- ``zaremba``: fresh masks at every step on the non-recurrent connections only (embedding output,
  between layers, last output), probability ``dropout``.
- ``variational``: masks sampled once per sequence and BPTT window on the embedding (word types,
  per sequence), every layer's input, the recurrent state and the output; tied or untied gate masks.
  With ``learn_dropout`` those rates are learned (Concrete dropout, Gal, Hron & Kendall 2017):
  :meth:`RNNLanguageModel.regularizer` is the term the objective adds.
Zoneout (Krueger et al. 2016) of the LSTM states, ``zoneout_hidden``/``zoneout_cell``, with any
scheme.
No training code here.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Union

import torch
from torch import Tensor, nn

from .._checks import check_positive_int
from ..config import SCHEMES, ModelConfig
from ..dropout import (ConcreteDropout, EmbeddingDropout, concrete_embedding_dropout,
                       concrete_regularizer)
from ..rnn import LSTM
from ..softmax import make_output_layer


class RNNLanguageModel(nn.Module):
    """Word-level LSTM language model.

    Args:
        vocab: the vocabulary size, or a vocabulary with ``len()`` and ``counts`` (a
            :class:`rnndrop.data.Vocabulary`: its train counts feed ``sampler="unigram"``,
            whose proposal is then ``(counts + 1) ** alpha``; +1 keeps unseen words sampleable).
        Every other argument is a field of :class:`rnndrop.config.ModelConfig`, with the same
        name, default and meaning (a recipe's ``[model]`` table): ``hidden_size``,
        ``num_layers``, ``emb_size``, ``scheme`` (none / zaremba / variational), ``dropout``
        (zaremba), ``dropout_embedding`` / ``dropout_input`` / ``dropout_hidden`` /
        ``dropout_output`` (variational), ``tied_masks`` (variational: one mask for all gates,
        ``LSTM(tied=...)``), ``tie_weights``, ``init_range``, ``output`` (full / sampled /
        adaptive) and the output layer's ``num_sampled``, ``sampler``, ``alpha``, ``unique``,
        ``cutoffs``, ``zoneout_hidden`` / ``zoneout_cell`` (the LSTM's), ``learn_dropout``
        (variational: learn the four rates, started at the given ones), with the
        regulariser's ``concrete_lengthscale`` ``l`` and ``concrete_dataset_size`` ``N``.
        :meth:`from_config` passes a ``ModelConfig`` whole.

    Shapes: ``tokens`` ``(T, B)`` int64 → hidden ``(T, B, H)``; state ``(h, c)`` each
    ``(num_layers, B, H)``. ``loss(hidden, targets)`` gives the mean NLL per token and
    ``log_prob(hidden)`` the full log-softmax ``(T, B, V)``; ``target_log_prob(hidden, targets)``
    only the targets' ``(T, B)``.
    """

    def __init__(self, vocab: Union[int, "object"], hidden_size: int = 200, num_layers: int = 2,
                 emb_size: Optional[int] = None, scheme: str = "none", dropout: float = 0.0,
                 dropout_embedding: float = 0.0, dropout_input: float = 0.0,
                 dropout_hidden: float = 0.0, dropout_output: float = 0.0,
                 tied_masks: bool = True, tie_weights: bool = False, init_range: float = 0.1,
                 output: str = "full", num_sampled: int = 1024, sampler: str = "log_uniform",
                 alpha: float = 0.75, unique: bool = True, cutoffs=(2000, 10000),
                 zoneout_hidden: float = 0.0, zoneout_cell: float = 0.0,
                 learn_dropout: bool = False, concrete_lengthscale: float = 1e-4,
                 concrete_dataset_size: int = 0):
        super().__init__()
        vocab_size = vocab if isinstance(vocab, int) else len(vocab)
        counts = None if isinstance(vocab, int) else getattr(vocab, "counts")
        check_positive_int(vocab_size, "vocab_size")
        if scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
        emb_size = emb_size or hidden_size
        if tie_weights and emb_size != hidden_size:
            raise ValueError("tie_weights needs emb_size == hidden_size")
        if scheme == "none" and any((dropout, dropout_embedding, dropout_input, dropout_hidden,
                                     dropout_output)):
            raise ValueError("scheme 'none' takes no dropout probabilities")
        if scheme == "zaremba" and any((dropout_embedding, dropout_input, dropout_hidden, dropout_output)):
            raise ValueError("scheme 'zaremba' uses only dropout= (non-recurrent connections)")
        if scheme == "variational" and dropout:
            raise ValueError("scheme 'variational' uses dropout_embedding/input/hidden/output, not dropout=")
        if learn_dropout and scheme != "variational":
            raise ValueError("learn_dropout needs scheme 'variational' (its rates are the start)")
        self.vocab_size, self.hidden_size, self.num_layers = vocab_size, hidden_size, num_layers
        self.learn_dropout = bool(learn_dropout)
        self.concrete_lengthscale = concrete_lengthscale
        self.concrete_dataset_size = concrete_dataset_size
        self.scheme, self.init_range = scheme, init_range
        self.embedding = EmbeddingDropout(vocab_size, emb_size, dropout=dropout_embedding,
                                          mode="sequence")
        if scheme == "zaremba":
            drops = dict(dropout_input=dropout, dropout_between=dropout, dropout_output=dropout,
                         variational=False)
        else:
            # "inputs of every layer": the embedding output and the inputs of layers >= 1
            drops = dict(dropout_input=dropout_input, dropout_between=dropout_input,
                         dropout_hidden=dropout_hidden, dropout_output=dropout_output,
                         variational=True, tied=tied_masks, learn_dropout=self.learn_dropout)
        self.rnn = LSTM(emb_size, hidden_size, num_layers, zoneout_hidden=zoneout_hidden,
                        zoneout_cell=zoneout_cell, **drops)
        # the embedding's learned word-type rate (the layer holds the other sites' rates)
        self.concrete_embedding = (ConcreteDropout(dropout_embedding)
                                   if self.learn_dropout and dropout_embedding > 0 else None)
        self.decoder = make_output_layer(output, hidden_size, vocab_size,
                                         **_output_params(output, num_sampled, sampler, alpha,
                                                          unique, cutoffs, counts))
        self.reset_parameters()
        if tie_weights:
            if not hasattr(self.decoder, "weight"):
                raise ValueError(f"output {output!r} cannot share the embedding matrix")
            self.decoder.weight = self.embedding.weight

    @classmethod
    def from_config(cls, config: ModelConfig, vocab) -> "RNNLanguageModel":
        """The model a recipe's ``[model]`` table describes (every field passed as is)."""
        return cls(vocab, **dataclasses.asdict(config))

    def reset_parameters(self) -> None:
        """Zaremba's initialisation: every parameter uniform in [-init_range, init_range]."""
        for name, p in self.named_parameters():
            if "concrete_" not in name:          # learned dropout rates keep their start
                nn.init.uniform_(p, -self.init_range, self.init_range)

    def init_state(self, batch_size: int, device=None) -> tuple[Tensor, Tensor]:
        w = self.rnn.weight_hh_l0
        z = torch.zeros(self.num_layers, batch_size, self.hidden_size, device=device or w.device,
                        dtype=w.dtype)
        return z, z.clone()

    def forward(self, tokens: Tensor, state=None, replicas: int = 1):
        """``tokens`` ``(T, B)`` → ``hidden`` ``(T, R·B, H)``, ``state``. ``replicas = R > 1``
        runs the batch R times side by side, as ``tokens.repeat(1, R)`` would (MC dropout's
        samples: each replica its own masks; the state is ``(num_layers, R·B, H)``), with one
        embedding lookup for all of them."""
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be (T, B), got shape {tuple(tokens.shape)}")
        if self.concrete_embedding is not None:
            emb = concrete_embedding_dropout(tokens, self.embedding.weight,
                                             self.concrete_embedding.p_logit, self.training,
                                             replicas=replicas)
        else:
            emb = self.embedding(tokens, replicas)
        hidden, state = self.rnn(emb, state)
        return hidden, state

    def dropout_rates(self) -> dict:
        """The learned drop probabilities (``learn_dropout``), ``{site: p}``: ``embedding``
        and the LSTM's (``input``, ``between_l{k}``, ``hidden_l{k}``, ``output``); {} without."""
        rates = {"embedding": self.concrete_embedding.p} if self.concrete_embedding else {}
        return {**rates, **self.rnn.dropout_rates()}

    def regularizer(self) -> Tensor:
        """Concrete dropout's regulariser for the per-token mean loss: every learned site's
        ``l²/N · Σ‖W‖² / (1-p) + 2/N · K (p log p + (1-p) log(1-p))`` (the paper's scales with
        precision τ = 1; ``W`` the weights the masked input multiplies: the embedding matrix
        for the word types, ``K = V``, the LSTM's for its sites, the decoder's for the output).
        A zero tensor without ``learn_dropout``."""
        w = self.rnn.weight_hh_l0
        if not self.learn_dropout:
            return w.new_zeros(())
        N = self.concrete_dataset_size
        if N <= 0:
            raise ValueError("model.concrete_dataset_size must be set (the number of training "
                             "tokens; the trainer sets it) before regularizer() is called")
        wr, dr = self.concrete_lengthscale ** 2 / N, 2.0 / N
        reg = self.rnn.regularizer(wr, dr, output_weight=getattr(self.decoder, "weight", None))
        if self.concrete_embedding is not None:
            reg = reg + concrete_regularizer(self.concrete_embedding.p_logit,
                                             [self.embedding.weight], self.vocab_size, wr, dr)
        return reg

    def loss(self, hidden: Tensor, targets: Tensor) -> Tensor:
        return self.decoder.loss(hidden.reshape(-1, hidden.shape[-1]), targets.reshape(-1))

    def target_log_prob(self, hidden: Tensor, targets: Tensor) -> Tensor:
        """log p(target) for every position: hidden ``(T, B, H)``, targets ``(T, B)`` → ``(T, B)``,
        without the ``(T, B, V)`` log-softmax (what perplexity and MC dropout need)."""
        return self.decoder.target_log_prob(hidden, targets)

    def log_prob(self, hidden: Tensor) -> Tensor:
        return self.decoder.log_prob(hidden.reshape(-1, hidden.shape[-1])).view(
            *hidden.shape[:-1], -1)


def _output_params(output, num_sampled, sampler, alpha, unique, cutoffs, counts) -> dict:
    """Constructor arguments of the output layer ``output`` (the others are not used by it)."""
    if output == "sampled":
        params = {"num_sampled": num_sampled, "sampler": sampler, "unique": unique,
                  "remove_accidental_hits": unique}
        if str(sampler).lower() == "unigram":
            if counts is None:
                raise ValueError("sampler='unigram' needs the training counts: pass the "
                                 "vocabulary (with .counts), not only its size")
            params.update(counts=torch.as_tensor(counts, dtype=torch.float64) + 1, alpha=alpha)
        return params
    if output == "adaptive":
        return {"cutoffs": list(cutoffs)}
    return {}
