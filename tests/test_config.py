"""Config: TOML recipes, --set overrides, and values checked when the config is read."""
from pathlib import Path

import pytest

from rnndrop.config import RunConfig, apply_overrides, load_config, model_differences

# Language-model recipes (the classifier's, configs/classify-*.toml, are tests/classify's).
RECIPES = sorted(f for f in Path(__file__).parents[1].glob("configs/*.toml")
                 if not f.name.startswith("classify-"))


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ValueError, match="unknown key 'model.hiden_size'"):
        apply_overrides(RunConfig(), ["model.hiden_size=3"])
    with pytest.raises(ValueError, match="train.epochs expects int"):
        apply_overrides(RunConfig(), ["train.epochs=many"])
    bad = tmp_path / "bad.toml"
    bad.write_text("[model]\nhidden_size = 'big'\n")
    with pytest.raises(ValueError, match="model.hidden_size expects int"):
        load_config(bad)
    for f in RECIPES:
        load_config(f)   # every shipped recipe parses and validates


@pytest.mark.parametrize("override, message", [
    ("train.lr=nan", "train.lr must be a finite number > 0, got nan"),
    ("train.lr=inf", "train.lr must be a finite number > 0, got inf"),
    ("train.lr=0", "train.lr must be a finite number > 0"),
    ("train.mc_samples=-1", "train.mc_samples must be an integer >= 0, got -1"),
    ("train.checkpoint_every=-5", "train.checkpoint_every must be an integer >= 0"),
    ("train.max_steps=-1", "train.max_steps must be an integer >= 0"),
    ("train.lr_decay=0", "train.lr_decay must be a finite number > 0, got 0.0"),
    ("train.bptt=0", "train.bptt must be a positive integer, got 0"),
    ("train.batch_size=0", "train.batch_size must be a positive integer"),
    ("train.optimizer=adamw", "train.optimizer must be one of 'sgd', 'adam', got 'adamw'"),
    ("train.loss_reduction=sum", "train.loss_reduction must be one of"),
    ("train.precision=fp8", "train.precision must be one of 'fp32', 'bf16', 'fp16', got 'fp8'"),
    ("train.warmup_steps=-1", "train.warmup_steps must be an integer >= 0"),
    ("train.weight_decay=1", "train.weight_decay must be a finite number in [0, 1)"),
    ("train.clip=-1", "train.clip must be a finite number >= 0"),
    ("train.device=gpu", "train.device must be 'cpu', 'cuda' or 'cuda:N', got 'gpu'"),
    ("model.hidden_size=0", "model.hidden_size must be a positive integer, got 0"),
    ("model.emb_size=0", "model.emb_size must be a positive integer, got 0"),
    ("model.num_layers=0", "model.num_layers must be a positive integer"),
    ("model.scheme=gal", "model.scheme must be one of 'none', 'zaremba', 'variational'"),
    ("model.output=hierarchical", "model.output must be one of"),
    ("model.sampler=zipf", "model.sampler must be one of"),
    ("model.cutoffs=[10000,2000]", "model.cutoffs must be increasing positive integers"),
    ("model.init_range=0", "model.init_range must be a finite number > 0"),
    ("data.layout=csv", "data.layout must be one of"),
    ("data.unk=drop", "data.unk must be one of"),
])
def test_bad_values_are_refused_when_the_config_is_read(override, message):
    with pytest.raises(ValueError) as err:
        load_config(RECIPES[0].parent / "ptb-small-zaremba.toml", [override])
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_dropout_errors_name_the_config_key():
    with pytest.raises(ValueError, match=r"model.dropout must be a finite number in \[0, 1\), got 1.5"):
        load_config(RECIPES[0].parent / "ptb-medium-zaremba.toml", ["model.dropout=1.5"])
    with pytest.raises(ValueError, match="model.dropout_hidden must be"):
        load_config(RECIPES[0].parent / "ptb-medium-variational.toml", ["model.dropout_hidden=-0.1"])
    # a probability set for another scheme would be silently ignored: refused instead
    with pytest.raises(ValueError, match=r"model.scheme='zaremba' takes model.dropout, but "
                                         r"model.dropout_hidden=0.2 is set"):
        load_config(RECIPES[0].parent / "ptb-medium-zaremba.toml", ["model.dropout_hidden=0.2"])


def test_overrides_may_repair_a_recipe_before_it_is_checked(tmp_path):
    bad = tmp_path / "r.toml"
    bad.write_text("[train]\nbptt = 0\n")
    with pytest.raises(ValueError, match="train.bptt"):
        load_config(bad)
    assert load_config(bad, ["train.bptt=5"]).train.bptt == 5


def test_model_differences_lists_shape_changing_keys():
    a, b = RunConfig(), RunConfig()
    b.model.hidden_size, b.model.dropout_hidden = 48, 0.3
    assert model_differences(b.to_dict(), a) == \
        "model.hidden_size is 48 in the checkpoint and 200 here"
    assert model_differences(a.to_dict(), a) == ""
