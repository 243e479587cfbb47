"""``rnndrop generate``: repeatable with a seed, greedy as the temperature goes to 0 (and with
top-k 1), top-k restricted, prompts tokenised with the checkpoint's vocabulary, one-line errors."""
import pytest
import torch

from rnndrop import checkpoint as ckpt
from rnndrop.cli import main
from rnndrop.commands.generate import detokenize, prompt_tokens
from rnndrop.config import RunConfig
from rnndrop.data.text import EOS, UNK, Vocabulary
from rnndrop.generate import next_token_weights, sample
from rnndrop.models.lm import RNNLanguageModel

WORDS = [EOS, UNK] + "the cat sat on a mat and dog ate my hat".split()


def _checkpoint(path, words=WORDS, layout="ptb", seed=1, **model):
    """A checkpoint of an untrained model with wide weights (peaked, distinct distributions:
    sampling then differs from greedy, and greedy has no near-ties). Seed 1: its greedy text
    is not one word repeated, which would make the comparisons with greedy weak."""
    cfg = RunConfig()
    cfg.data.layout = layout
    cfg.model.hidden_size, cfg.model.num_layers, cfg.model.init_range = 12, 2, 1.0
    for k, v in model.items():
        setattr(cfg.model, k, v)
    vocab = Vocabulary(words, [1] * len(words))
    torch.manual_seed(seed)
    model = RNNLanguageModel.from_config(cfg.model, vocab)
    ckpt.save({"model": model.state_dict(), "config": cfg.to_dict(), "vocab": vocab.to_dict()},
              path)
    return model, vocab


def _greedy_by_hand(model, context_ids, n):
    """Argmax decoding one token at a time, the softmax from the decoder's weights."""
    model.eval()
    with torch.no_grad():
        state = model.init_state(1)
        for t in context_ids:
            h, state = model(torch.tensor([[t]]), state)
        out = []
        for _ in range(n):
            logits = h[-1, 0] @ model.decoder.weight.T + model.decoder.bias
            nxt = int(torch.argmax(logits))
            out.append(nxt)
            h, state = model(torch.tensor([[nxt]]), state)
    return out


def _generate(capsys, *args):
    assert main(["generate", *map(str, args)]) == 0
    out = capsys.readouterr().out
    assert out.endswith("\n")
    return out[:-1]                     # print's newline (the text may end in an <eos> one)


def test_seed_repeats_the_text_and_other_seeds_differ(tmp_path, capsys):
    _checkpoint(tmp_path / "lm.pt")
    a = _generate(capsys, tmp_path / "lm.pt", "--tokens", 30, "--seed", 5)
    b = _generate(capsys, tmp_path / "lm.pt", "--tokens", 30, "--seed", 5)
    others = {_generate(capsys, tmp_path / "lm.pt", "--tokens", 30, "--seed", s) for s in (6, 7)}
    assert a == b and a not in others
    assert len(a.replace("\n", " ").split()) + a.count("\n") == 30   # N tokens, <eos> = newline


def test_temperature_to_zero_and_top_k_1_are_greedy(tmp_path, capsys):
    model, vocab = _checkpoint(tmp_path / "lm.pt")
    prompt = "the cat sat"
    ids = [vocab.stoi[EOS]] + [vocab.stoi[w] for w in prompt.split()]
    greedy_ids = _greedy_by_hand(model, ids, 25)
    assert len(set(greedy_ids)) >= 3
    greedy = detokenize(prompt.split() + vocab.decode(greedy_ids), False)
    cold = _generate(capsys, tmp_path / "lm.pt", "--prompt", prompt, "--tokens", 25,
                     "--temperature", 1e-6, "--seed", 1)
    top1 = _generate(capsys, tmp_path / "lm.pt", "--prompt", prompt, "--tokens", 25,
                     "--top-k", 1, "--seed", 2)
    warm = _generate(capsys, tmp_path / "lm.pt", "--prompt", prompt, "--tokens", 25, "--seed", 1)
    assert cold == greedy and top1 == greedy
    assert warm != greedy                          # temperature 1 does sample
    assert cold.startswith("the cat sat ")


def test_top_k_keeps_only_the_k_most_likely():
    logp = torch.log_softmax(torch.tensor([0.5, 3.0, -1.0, 2.0, 1.0]), 0)
    w = next_token_weights(logp, temperature=1.0, top_k=2)
    assert (w > 0).tolist() == [False, True, False, True, False]
    p = w / w.sum()
    assert torch.allclose(p[[1, 3]], torch.softmax(torch.tensor([3.0, 2.0]), 0).double())
    w = next_token_weights(logp, temperature=0.5, top_k=0)     # tempered: p ∝ p^(1/T)
    assert torch.allclose(w / w.sum(), torch.softmax(logp.double() * 2, 0))
    # many draws from a sampler with top_k=3: only the 3 most likely first tokens ever appear
    model = RNNLanguageModel(12, hidden_size=8, num_layers=1, init_range=1.0)
    model.eval()
    with torch.no_grad():
        top3 = set(torch.topk(model.log_prob(model(torch.tensor([[0]]))[0])[-1, 0], 3)
                   .indices.tolist())
    g = torch.Generator().manual_seed(0)
    firsts = {sample(model, [0], 1, top_k=3, generator=g)[0] for _ in range(200)}
    assert firsts == top3
    assert model.training is False


@pytest.mark.parametrize("args,option", [
    (["--temperature", "0"], "--temperature"), (["--temperature", "-1"], "--temperature"),
    (["--temperature", "nan"], "--temperature"), (["--temperature", "inf"], "--temperature"),
    (["--top-k", "-1"], "--top-k"), (["--tokens", "-3"], "--tokens")])
def test_bad_options_are_one_line(tmp_path, capsys, args, option):
    _checkpoint(tmp_path / "lm.pt")
    assert main(["generate", str(tmp_path / "lm.pt"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"rnndrop generate: error: {option} ") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 2          # the line + the debug hint


def test_prompt_words_and_chars(tmp_path, capsys):
    _checkpoint(tmp_path / "lm.pt")
    assert main(["generate", str(tmp_path / "lm.pt"), "--prompt", "the zebra sat",
                 "--tokens", "0"]) == 0
    out, err = capsys.readouterr()
    assert out == f"the {UNK} sat\n"                 # the text on stdout, the note on stderr
    assert err.startswith("note: 1 prompt token(s) not in the vocabulary") and "'zebra'" in err
    # no <unk> in the vocabulary: an unknown prompt word is a one-line error naming it
    _checkpoint(tmp_path / "nounk.pt", words=[w for w in WORDS if w != UNK])
    assert main(["generate", str(tmp_path / "nounk.pt"), "--prompt", "a zebra"]) == 2
    assert "--prompt: 'zebra'" in capsys.readouterr().err
    # a character model: the prompt is its characters, the output concatenated
    chars = [EOS, UNK] + list("abc ")
    model, vocab = _checkpoint(tmp_path / "chars.pt", words=chars, layout="chars")
    out = _generate(capsys, tmp_path / "chars.pt", "--prompt", "ab c\nb", "--tokens", 40,
                    "--top-k", 1)
    ids = [vocab.stoi[t] for t in [EOS] + prompt_tokens("ab c\nb", "chars")]
    greedy_ids = _greedy_by_hand(model, ids, 40)
    assert len(set(greedy_ids)) >= 2
    assert out == "ab c\nb" + detokenize(vocab.decode(greedy_ids), True)
    assert prompt_tokens("ab c\nb", "chars") == ["a", "b", " ", "c", EOS, "b"]
    assert detokenize(["a", "b", EOS, "c"], chars=False) == "a b\nc"


@pytest.mark.parametrize("output", [{"output": "adaptive", "cutoffs": [6]},
                                    {"output": "sampled", "num_sampled": 4}])
def test_other_output_layers_generate_from_their_full_distribution(tmp_path, capsys, output):
    model, vocab = _checkpoint(tmp_path / "lm.pt", **output)
    model.eval()
    ids, greedy = [vocab.stoi[EOS]], []
    with torch.no_grad():
        h, state = model(torch.tensor([ids]), model.init_state(1))
        for _ in range(15):
            greedy.append(int(torch.argmax(model.log_prob(h)[-1, 0])))
            h, state = model(torch.tensor([[greedy[-1]]]), state)
    out = _generate(capsys, tmp_path / "lm.pt", "--tokens", 15, "--top-k", 1)
    assert out == detokenize(vocab.decode(greedy), False)
    assert _generate(capsys, tmp_path / "lm.pt", "--tokens", 15, "--seed", 3) == \
        _generate(capsys, tmp_path / "lm.pt", "--tokens", 15, "--seed", 3)
