"""Language model with sampled / adaptive output layers: training, full-softmax evaluation,
checkpoints that interchange with a full-softmax model, unigram counts from the corpus."""
import json
import math
import re
from pathlib import Path

import pytest
import torch

from rnndrop import checkpoint as ckpt
from rnndrop.cli import main
from rnndrop.config import RunConfig, apply_overrides
from rnndrop.data.text import batchify, load_corpus
from rnndrop.evaluate import perplexity
from rnndrop.models.lm import RNNLanguageModel
from rnndrop.softmax import FullSoftmax, SampledSoftmax, UnigramSampler
from rnndrop.train import LMTrainer

V_WORDS = 120          # word types of the generated corpus (+ <eos>, <unk>): V > num_sampled


def write_corpus(root: Path, seed: int = 0) -> Path:
    """A PTB-layout corpus with Zipfian word frequencies and some structure (the next word is
    often a function of the previous one), so that a tiny LM can learn."""
    g = torch.Generator().manual_seed(seed)
    probs = 1.0 / torch.arange(1, V_WORDS + 1, dtype=torch.float64)
    root.mkdir(parents=True, exist_ok=True)
    for split, n_lines in (("train", 400), ("valid", 40), ("test", 40)):
        lines = []
        for _ in range(n_lines):
            w = int(torch.multinomial(probs, 1, generator=g))
            line = []
            for _ in range(int(torch.randint(4, 12, (1,), generator=g))):
                line.append(f"w{w}")
                w = (3 * w + 1) % V_WORDS if torch.rand(1, generator=g) < 0.7 else \
                    int(torch.multinomial(probs, 1, generator=g))
            lines.append(" ".join(line))
        if split == "train":
            lines.append("<unk> " + " ".join(f"w{i}" for i in range(V_WORDS)))
        (root / f"ptb.{split}.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("lmout") / "data")


@pytest.fixture(scope="module")
def corpus(data_dir):
    return load_corpus(data_dir, layout="ptb")


def tiny_cfg(**over) -> RunConfig:
    cfg = RunConfig()
    cfg.model.hidden_size, cfg.model.num_layers, cfg.model.init_range = 24, 1, 0.1
    cfg.train.epochs, cfg.train.batch_size, cfg.train.eval_batch_size, cfg.train.bptt = 2, 8, 4, 10
    cfg.train.checkpoint_every, cfg.train.lr, cfg.train.decay_after = 0, 1.0, 10
    return apply_overrides(cfg, [f"{k}={v}" for k, v in over.items()])


def write_recipe(path: Path, output_lines: str) -> Path:
    path.write_text("[data]\nlayout = \"ptb\"\n[model]\nhidden_size = 24\nnum_layers = 1\n"
                    f"{output_lines}\n[train]\nepochs = 2\nbatch_size = 8\neval_batch_size = 4\n"
                    "bptt = 10\ndecay_after = 10\ncheckpoint_every = 0\n")
    return path


def test_sampled_lm_trains_and_evaluates_with_full_softmax(tmp_path, data_dir, corpus, capsys):
    recipe = write_recipe(tmp_path / "sampled.toml", 'output = "sampled"\nnum_sampled = 16')
    out = tmp_path / "run"
    assert main(["train", str(recipe), "--data", str(data_dir), "--out", str(out),
                 "--no-progress"]) == 0
    steps = [json.loads(l)["loss"] for l in (out / "steps.jsonl").read_text().splitlines()]
    assert len(steps) >= 20
    first, last = sum(steps[:5]) / 5, sum(steps[-5:]) / 5
    assert last < first - 0.3, (first, last)             # the sampled loss decreases
    metrics = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    val = [m["valid_ppl"] for m in metrics]
    V = len(corpus.vocab)
    assert val[-1] < val[0] and val[-1] < 0.5 * V        # full-softmax valid ppl, well below V

    # The checkpoint holds weight/bias only: it loads (strictly) into a full-softmax model.
    st = ckpt.load(out / "best.pt")
    assert not any("sampler" in k for k in st["model"])
    cfg = RunConfig.from_dict(st["config"])
    assert cfg.model.output == "sampled"
    sampled = RNNLanguageModel.from_config(cfg.model, V)
    sampled.load_state_dict(st["model"])
    cfg.model.output = "full"
    full = RNNLanguageModel.from_config(cfg.model, V)
    full.load_state_dict(st["model"])
    assert isinstance(sampled.decoder, SampledSoftmax) and isinstance(full.decoder, FullSoftmax)
    test = batchify(corpus.test, cfg.train.eval_batch_size)
    p_sampled = perplexity(sampled, test, cfg.train.bptt)
    p_full = perplexity(full, test, cfg.train.bptt)
    assert p_sampled == pytest.approx(p_full, rel=1e-6)

    # `rnndrop eval` on the sampled-trained checkpoint: full-softmax perplexity, the same number.
    capsys.readouterr()
    assert main(["eval", str(out / "best.pt"), "--data", str(data_dir), "--no-progress"]) == 0
    printed = float(re.search(r"perplexity \(dropout approximation\): ([\d.]+)",
                              capsys.readouterr().out).group(1))
    assert printed == pytest.approx(p_full, abs=0.006)

    # In eval mode the sampled layer's loss *is* the full cross-entropy.
    x, y = test[:10], test[1:11]
    sampled.eval()
    full.eval()
    with torch.no_grad():
        h, _ = sampled(x)
        torch.testing.assert_close(sampled.loss(h, y), full.loss(h, y))


def test_sampled_training_loss_differs_from_full_in_train_mode(corpus):
    V = len(corpus.vocab)
    m = tiny_cfg(**{"model.output": "sampled", "model.num_sampled": 8}).model
    torch.manual_seed(0)
    model = RNNLanguageModel.from_config(m, V)
    x = batchify(corpus.train, 4)[:11]
    h, _ = model(x[:-1])
    model.train()
    full = model.decoder.full_loss(h.reshape(-1, h.shape[-1]), x[1:].reshape(-1))
    samp = model.loss(h, x[1:])
    assert torch.isfinite(samp) and not torch.allclose(samp, full)
    assert samp.item() < full.item()           # sampled: a (biased-low) estimate of the full CE


def test_unigram_counts_reach_the_sampler(tmp_path, corpus):
    cfg = tiny_cfg(**{"model.output": "sampled", "model.num_sampled": 16,
                      "model.sampler": "unigram", "model.alpha": 0.5})
    trainer = LMTrainer(cfg, corpus, tmp_path / "run", progress=False, log=lambda *a: None)
    sampler = trainer.model.decoder.sampler
    assert isinstance(sampler, UnigramSampler) and sampler.alpha == 0.5
    expected = (corpus.vocab.counts + 1) ** 0.5          # smoothed: +1
    torch.testing.assert_close(sampler.probs, expected / expected.sum())
    assert bool((sampler.probs > 0).all())                # every id can be drawn
    # A model that needs counts but gets none says so.
    with pytest.raises(ValueError, match="counts"):
        RNNLanguageModel.from_config(cfg.model, len(corpus.vocab))
    # Counts are not part of the state dict; the log-uniform sampler needs none.
    assert set(trainer.model.decoder.state_dict()) == {"weight", "bias"}
    cfg.model.sampler = "log_uniform"
    assert RNNLanguageModel.from_config(cfg.model, len(corpus.vocab)).decoder.sampler.num_classes \
        == len(corpus.vocab)


def test_unigram_trained_checkpoint_evaluates_from_the_cli(tmp_path, data_dir, capsys):
    recipe = write_recipe(tmp_path / "uni.toml",
                          'output = "sampled"\nnum_sampled = 16\nsampler = "unigram"')
    out = tmp_path / "run"
    assert main(["train", str(recipe), "--data", str(data_dir), "--out", str(out),
                 "--no-progress", "--set", "train.epochs=1", "--set", "train.max_steps=5"]) == 0
    capsys.readouterr()
    assert main(["eval", str(out / "last.pt"), "--data", str(data_dir), "--split", "valid",
                 "--no-progress"]) == 0
    assert "valid perplexity" in capsys.readouterr().out


def test_unique_false_switches_off_accidental_hit_removal(corpus):
    m = tiny_cfg(**{"model.output": "sampled", "model.num_sampled": 8,
                    "model.unique": "false"}).model
    dec = RNNLanguageModel.from_config(m, len(corpus.vocab)).decoder
    assert dec.unique is False and dec.remove_accidental_hits is False   # the consistent pair
    m.unique = True
    dec = RNNLanguageModel.from_config(m, len(corpus.vocab)).decoder
    assert dec.unique is True and dec.remove_accidental_hits is True


def test_adaptive_lm_trains(tmp_path, corpus):
    cfg = tiny_cfg(**{"model.output": "adaptive", "model.cutoffs": "[20, 60]",
                      "train.epochs": 1})
    trainer = LMTrainer(cfg, corpus, tmp_path / "run", progress=False, log=lambda *a: None)
    res = trainer.train()
    assert math.isfinite(res["valid_ppl"]) and res["valid_ppl"] < len(corpus.vocab)
