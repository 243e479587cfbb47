"""Trainers: :class:`LMTrainer` (language models, truncated BPTT) and :class:`ClassifierTrainer`
(classifiers and regressors on labelled texts), both on :class:`rnndrop.train.base.Trainer`:
atomic checkpoints, bit-for-bit resume, divergence rollback, statistics read back in blocks,
early stopping, metrics.jsonl and learning curves."""
from .base import Trainer, TrainingDiverged, TrainState
from .classifier import ClassifierTrainer
from .lm import LMTrainer, default_mc_batch, plot_dropout_rates, plot_learning_curve

__all__ = ["Trainer", "TrainingDiverged", "TrainState", "LMTrainer", "ClassifierTrainer",
           "default_mc_batch",
           "plot_learning_curve", "plot_dropout_rates"]
