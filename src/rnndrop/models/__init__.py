"""Models built from the library's layers: the word-level language model, the D2L MLPs, and the
sentiment classifier / regressor (recurrent encoders with dropout). No training code here."""
from .classifiers import SentimentClassifier, SentimentRegressor, make_encoder
from .lm import RNNLanguageModel
from .mlp import MLP, MLPScratch

__all__ = ["RNNLanguageModel", "MLP", "MLPScratch", "SentimentClassifier", "SentimentRegressor",
           "make_encoder"]
