"""The language model's zoneout and learned (Concrete) dropout rates, and their training."""
import json

import pytest
import torch

from rnndrop.config import RunConfig, apply_overrides
from rnndrop.dropout import concrete_regularizer
from rnndrop.models.lm import RNNLanguageModel
from rnndrop.train import LMTrainer

from lmrun import QUIET, tiny_lm_config

LEARNED = dict(scheme="variational", dropout_embedding=0.5, dropout_input=0.5,
               dropout_hidden=0.5, dropout_output=0.5, learn_dropout=True)


def test_zoneout_reaches_the_lstm_through_the_config_route():
    cfg = apply_overrides(RunConfig(), ["model.hidden_size=8", "model.num_layers=1",
                                        "model.zoneout_hidden=0.05", "model.zoneout_cell=0.5"])
    m = RNNLanguageModel.from_config(cfg.model, 20)
    assert (m.rnn.zoneout_hidden, m.rnn.zoneout_cell) == (0.05, 0.5)
    assert m.regularizer().item() == 0.0 and m.dropout_rates() == {}


def test_no_learned_dropout_leaves_the_model_as_it_was():
    torch.manual_seed(0)
    m = RNNLanguageModel(20, hidden_size=8, num_layers=2, scheme="variational",
                         dropout_hidden=0.3)
    assert not any("concrete" in n for n in m.state_dict())


def test_learned_rates_start_at_the_given_ones_and_all_learn():
    torch.manual_seed(0)
    m = RNNLanguageModel(20, hidden_size=8, num_layers=2, concrete_dataset_size=1000, **LEARNED)
    rates = m.dropout_rates()
    assert set(rates) == {"embedding", "input", "between_l1", "hidden_l0", "hidden_l1", "output"}
    assert all(p == pytest.approx(0.5) for p in rates.values())
    tokens = torch.randint(0, 20, (6, 3))
    out, _ = m(tokens)
    (m.loss(out, tokens) + m.regularizer()).backward()
    for name, p in m.named_parameters():
        if "concrete" in name:
            assert p.grad is not None and p.grad.abs().item() > 0, name
    m.eval()
    assert torch.equal(m(tokens)[0], m(tokens)[0])


def test_regularizer_has_the_papers_scales():
    torch.manual_seed(0)
    N, l = 1000, 1e-2
    m = RNNLanguageModel(20, hidden_size=8, num_layers=1, concrete_dataset_size=N,
                         concrete_lengthscale=l, **LEARNED)
    wr, dr = l * l / N, 2.0 / N
    want = (m.rnn.regularizer(wr, dr, m.decoder.weight)
            + concrete_regularizer(m.concrete_embedding.p_logit, [m.embedding.weight], 20, wr, dr))
    torch.testing.assert_close(m.regularizer(), want)
    with pytest.raises(ValueError, match="concrete_dataset_size"):
        RNNLanguageModel(20, hidden_size=8, **LEARNED).regularizer()


@pytest.mark.parametrize("over,match", [
    (["model.learn_dropout=true"], "learn_dropout needs model.scheme='variational'"),
    (["model.zoneout_cell=1.5"], "model.zoneout_cell must"),
    (["model.concrete_lengthscale=0"], "model.concrete_lengthscale must"),
])
def test_bad_values_are_config_errors(over, match):
    with pytest.raises(ValueError, match=match):
        apply_overrides(RunConfig(), over)


def test_trainer_adds_the_regulariser_logs_and_plots_the_rates(lm_corpus, tmp_path):
    over = {f"model.{k}": str(v).lower() for k, v in LEARNED.items()}
    cfg = tiny_lm_config(**over, **{"train.epochs": 2})
    tr = LMTrainer(cfg, lm_corpus, tmp_path / "run", **QUIET)
    assert tr.model.concrete_dataset_size == tr.train_data.numel()
    calls = []
    real = tr.model.regularizer
    tr.model.regularizer = lambda: calls.append(1) or real()
    tr.train()
    assert len(calls) == tr.state.step > 0
    recs = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(recs) == 2
    for rec in recs:
        assert set(rec["dropout_rates"]) >= {"embedding", "hidden_l0", "output"}
        assert all(0 < p < 1 for p in rec["dropout_rates"].values())
    assert recs[1]["dropout_rates"] != {k: 0.5 for k in recs[1]["dropout_rates"]}
    assert (tmp_path / "run" / "dropout_rates.png").stat().st_size > 0


def test_zoneout_trains(lm_corpus, tmp_path):
    cfg = tiny_lm_config(**{"model.zoneout_hidden": 0.05, "model.zoneout_cell": 0.5,
                            "train.epochs": 1})
    res = LMTrainer(cfg, lm_corpus, tmp_path / "run", **QUIET).train()
    assert res["valid_ppl"] < 20   # 13 words: a uniform guess is ~13, untrained worse
