"""Gradient-flow diagnostics: measure vanishing and exploding gradients in recurrent networks.

Backpropagation through time multiplies Jacobians. For an Elman RNN
``h_t = f(z_t)``, ``z_t = W_ih x_t + b + W_hh h_{t-1}``, a loss on the last step gives::

    ∂L/∂h_t = ∂L/∂h_T · ∂h_T/∂h_t,    ∂h_T/∂h_t = ∏_{k=t+1}^{T} J_k,    J_k = diag(f'(z_k)) W_hh

so ``‖∂L/∂h_t‖ <= ‖∂L/∂h_T‖ ∏_k ‖diag(f'(z_k))‖ ‖W_hh‖₂``: it shrinks (vanishes) or grows
(explodes) geometrically with the distance ``T - t`` when ``σ_max(W_hh) · max|f'|`` is below or
above 1. LSTMs and GRUs add the additive path ``c_t = f_t ∘ c_{t-1} + …`` / ``h_t = z ∘ h_{t-1} + …``
whose Jacobian is close to ``diag(f_t)`` / ``diag(z_t)``, which is how they carry gradients further.

Rooms: ``_rerun`` (the exact step-by-step re-run every tool uses), ``gradients``, ``spectra``,
``saturation``, ``report``. Clipping that reports what it did is :mod:`rnndrop.clipping`; the
``rnndrop diagnose`` command is :mod:`rnndrop.commands.diagnose`.

Tools (all leave the model untouched: no parameter, ``.grad``, ``requires_grad``, mode or hook is
changed or left behind):

- :func:`grad_norms_over_time`: ``‖∂L/∂h_t‖`` for every step ``t`` and layer, measured with tensor
  hooks on the hidden states of an exact step-by-step re-run of the model with its own weights.
- :func:`jacobian_products`: the exact ``‖∂s_T/∂s_t‖`` (spectral or Frobenius) from per-step
  Jacobians (``torch.autograd.functional.jacobian``) multiplied together; :func:`spectral_norm`
  (power iteration) and :func:`spectral_norms` (``σ_max`` of every ``weight_hh``).
- :func:`saturation`, :func:`collect_preactivations`, :func:`saturation_report`: saturated
  tanh/sigmoid units and dead ReLU units.
- :func:`decay_rate`: the per-step factor by which the gradient norm changes going back in time.
- :func:`plot_grad_norms`, :func:`summary_table`: a log-y plot and a plain-text table.

Models: anything with ``torch.nn.RNN/LSTM/GRU`` parameter names (``weight_ih_l{k}``,
``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}``): ``torch.nn.RNN/LSTM/GRU`` and
``rnndrop.rnn.RNN/LSTM/GRU`` (with ``activation`` ``"tanh"``, ``"relu"``, ``"sigmoid"``,
``"leaky_relu"``, slope ``negative_slope``; residual ``skip`` connections are followed). The
stack is re-run layer by layer without dropout (what the model computes in ``eval()`` mode).
Bidirectional and projected (``proj_size``) LSTMs are not supported. Alternatively a *cell*:
any callable ``cell(x_t, state) -> state`` on ``(B, I)`` inputs, where ``state`` is a tensor
``h`` ``(B, H)`` or a tuple whose first element is ``h`` (``torch.nn.RNNCell``, ``GRUCell``,
``LSTMCell``, or a hand-written recurrence); cell inputs are time-major ``(T, B, I)``.
"""
from ._rerun import GATE_ACTIVATIONS, activation_derivative
from .gradients import GradNorms, decay_rate, grad_norms_over_time
from .report import plot_grad_norms, summary_table
from .saturation import collect_preactivations, saturation, saturation_report
from .spectra import gate_names, jacobian_products, spectral_norm, spectral_norms

__all__ = [
    "GradNorms", "grad_norms_over_time", "decay_rate",
    "spectral_norm", "spectral_norms", "gate_names", "jacobian_products",
    "activation_derivative", "saturation", "collect_preactivations", "saturation_report",
    "GATE_ACTIVATIONS", "plot_grad_norms", "summary_table",
]
