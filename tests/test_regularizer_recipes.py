"""The regularizer comparison's recipes (configs/ptb-400-*.toml, issue 18): every arm reads,
builds the model it names and trains, at a tiny size, on a tiny corpus (seconds)."""
import json
from pathlib import Path

import pytest

from rnndrop.config import load_config
from rnndrop.train import LMTrainer

from lmrun import QUIET

ARMS = ("none", "zaremba", "variational", "zoneout", "both", "learned")
CONFIGS = Path(__file__).parents[1] / "configs"
TINY = ["model.hidden_size=16", "train.epochs=1", "train.batch_size=4",
        "train.eval_batch_size=2", "train.bptt=7", "train.checkpoint_every=0"]


@pytest.mark.parametrize("arm", ARMS)
def test_every_arm_runs(arm, lm_corpus, tmp_path):
    cfg = load_config(CONFIGS / f"ptb-400-{arm}.toml", TINY)
    assert cfg.train.epochs == 1 and cfg.model.hidden_size == 16
    tr = LMTrainer(cfg, lm_corpus, tmp_path / arm, **QUIET)
    rnn = tr.model.rnn
    assert (rnn.zoneout_hidden, rnn.zoneout_cell) == ((0.05, 0.5) if arm in ("zoneout", "both")
                                                      else (0.0, 0.0))
    assert tr.model.learn_dropout == (arm == "learned")
    assert rnn.variational == (arm != "zaremba")
    res = tr.train()
    assert res["valid_ppl"] < 1e3 and res["test_ppl"] < 1e3
    rec = json.loads((tmp_path / arm / "metrics.jsonl").read_text().splitlines()[-1])
    if arm == "learned":
        assert set(rec["dropout_rates"]) == {"embedding", "input", "between_l1", "hidden_l0",
                                             "hidden_l1", "output"}
    else:
        assert "dropout_rates" not in rec


def test_the_arms_share_one_schedule_and_size():
    cfgs = {arm: load_config(CONFIGS / f"ptb-400-{arm}.toml") for arm in ARMS}
    first = cfgs["none"]
    for arm, cfg in cfgs.items():
        assert cfg.train == first.train or (arm in ("variational", "both")
                                            and cfg.train.weight_decay == 1e-7), arm
        assert (cfg.model.hidden_size, cfg.model.num_layers) == (400, 2), arm
