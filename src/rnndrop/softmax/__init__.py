r"""Output layers for large vocabularies: full, sampled and adaptive softmax.

All three output layers share one interface, so a language model can swap them freely:

* ``loss(hidden, targets, reduction="mean")`` — the training loss (cross-entropy, nats);
* ``log_prob(hidden)`` — the *full* log-softmax over the vocabulary, shape ``(*, V)``;
* ``target_log_prob(hidden, targets)`` — ``log p(target)`` only, shape ``(*)``, without the
  ``(*, V)`` block (evaluation, MC dropout);
* ``forward(hidden, targets=None)`` — ``loss`` when ``targets`` is given, else ``log_prob``.

:class:`FullSoftmax` and :class:`SampledSoftmax` hold the decoder as two parameters named
``weight`` (``(V, H)``) and ``bias`` (``(V,)``) directly on the module (no sub-``Linear``), so a
``state_dict`` saved from one loads into the other, and both accept an existing ``weight``
Parameter for weight tying with the input embedding.

Sampled softmax (Jean et al., 2015, "On Using Very Large Target Vocabulary for Neural Machine
Translation"; semantics of TensorFlow's ``tf.nn.sampled_softmax_loss``)
--------------------------------------------------------------------------------------------
For a row with hidden state :math:`h`, target :math:`t` and logits
:math:`z_j = w_j^\top h + b_j`, draw :math:`k` candidate ids :math:`S = (s_1, \dots, s_k)` from a
proposal :math:`P` (once per batch, shared by all rows). With :math:`Q(j)` the *expected count*
of :math:`j` among the draws, the corrected logits are

.. math::
    \tilde z_0 = z_t - \log Q(t), \qquad \tilde z_i = z_{s_i} - \log Q(s_i),

accidental hits (:math:`s_i = t`) are set to :math:`-\infty`, and the loss is the cross-entropy
with the true class at index 0: :math:`-\tilde z_0 + \log \sum_{i=0}^{k} e^{\tilde z_i}`.
Only the ``N + k`` needed rows of the weight matrix are gathered: the cost is
:math:`O((N + k) H)` instead of :math:`O(V H)`.

Expected counts (what :meth:`CandidateSampler.log_q` returns the log of):

* ``unique=True`` (the default, as in TensorFlow: draw with replacement until ``k`` distinct ids
  have been seen, which took ``num_tries`` draws, and keep those ``k``):
  :math:`Q(j) = 1 - (1 - P(j))^{\text{num\_tries}}`, the probability that ``j`` shows up in
  ``num_tries`` draws (TensorFlow's approximation of the inclusion probability);
* ``unique=False`` (``k`` i.i.d. draws with replacement, duplicates kept as separate columns):
  :math:`Q(j) = k\,P(j)`, exact.

The sampled loss is a biased estimate of the full cross-entropy (generally an underestimate)
whose gradient approaches the full-softmax gradient as ``k`` grows — *for the consistent
combinations*: ``unique=True`` with ``remove_accidental_hits=True`` (the defaults), or
``unique=False`` with ``remove_accidental_hits=False``. Reason: the true column contributes
:math:`e^{z_t}/Q(t)` to the estimated normaliser. With unique sampling and hit removal the
target's share tends to :math:`e^{z_t}` as :math:`Q(t) \to 1`; without removal the (unbiased)
negatives already account for :math:`e^{z_t}` and the extra :math:`e^{z_t}/(kP(t))` vanishes as
:math:`k` grows. But with replacement *and* hit removal the target's share is
:math:`e^{z_t}/(kP(t))`, which goes to 0 for large :math:`k` (and a unique sample without removal
counts the target about twice): the error then stops decreasing, or grows, with :math:`k` (TF's
accidental-hit removal also presupposes unique candidates). Evaluation should always use the full
softmax (:class:`SampledSoftmax` does so in ``eval()`` mode and in ``log_prob``).

Samplers keep their probabilities on the CPU in float64 and draw there (pass a CPU
``torch.Generator``); the ids are moved to the weight's device.
"""
from .layers import OUTPUT_LAYERS, AdaptiveSoftmax, FullSoftmax, SampledSoftmax, make_output_layer
from .sampled import compute_sampled_logits, sampled_softmax_loss
from .samplers import (SAMPLERS, CandidateSampler, CategoricalSampler, LogUniformSampler,
                       UniformSampler, UnigramSampler, make_sampler)

__all__ = [
    "CandidateSampler", "CategoricalSampler", "UniformSampler", "LogUniformSampler",
    "UnigramSampler", "make_sampler", "compute_sampled_logits", "sampled_softmax_loss",
    "FullSoftmax", "SampledSoftmax", "AdaptiveSoftmax", "make_output_layer",
    "SAMPLERS", "OUTPUT_LAYERS",
]
