"""The classifier recipe: shipped recipes validate; bad values are one-line errors naming the key."""
import re
from pathlib import Path

import pytest

from rnndrop.classify.config import ClassifyConfig, has_dropout
from rnndrop.config import apply_overrides, load_config

RECIPES = sorted(Path(__file__).parents[2].glob("configs/classify-*.toml"))


def test_shipped_recipes_validate():
    assert len(RECIPES) >= 3
    for f in RECIPES:
        cfg = load_config(f, cls=ClassifyConfig)
        assert cfg.model.encoder and cfg.train.epochs >= 1


@pytest.mark.parametrize("override, message", [
    ("model.scheme=zaremba", "model.scheme must be one of 'none', 'naive', 'variational'"),
    ("model.encoder=transformer", "model.encoder must be one of"),
    ("model.dropout=1", "model.dropout must be a finite number in [0, 1)"),
    ("data.task=ranking", "data.task must be one of"),
    ("data.max_len=0", "data.max_len must be a positive integer"),
    ("train.bucket=-1", "train.bucket must be an integer >= 0"),
    ("train.patience=-1", "train.patience must be an integer >= 0"),
    ("train.bptt=20", "unknown key 'train.bptt'"),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        apply_overrides(ClassifyConfig(), [override])


def test_has_dropout_follows_the_scheme():
    cfg = ClassifyConfig()
    assert has_dropout(cfg.model)                     # variational 0.25 by default
    cfg.model.scheme = "none"
    assert not has_dropout(cfg.model)
    cfg.model.dropout_head = 0.1
    assert has_dropout(cfg.model)
