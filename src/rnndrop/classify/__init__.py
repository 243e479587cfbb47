"""Classifiers and regressors on a user's own labelled texts (``rnndrop classify``).

:mod:`.config` the recipe, :mod:`.data` reading and splitting a user's files, :mod:`.model`
the network of a recipe, :mod:`.predict` standard and MC-dropout predictions and their scores,
:mod:`.report` the tables and diagrams. The trainer is :class:`rnndrop.train.ClassifierTrainer`.
"""
