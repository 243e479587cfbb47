"""``rnndrop generate``: text sampled from a trained language-model checkpoint."""
from __future__ import annotations

import sys

import torch

from ..data.imdb import tokenize as imdb_tokenize
from ..data.text import EOS, UNK, Vocabulary
from ..generate import check_sampling, sample
from ..runs import load_run
from .train import set_threads


def add_parsers(sub) -> None:
    p = sub.add_parser("generate", help="sample text from a language-model checkpoint")
    p.add_argument("checkpoint")
    p.add_argument("--prompt", default="", help="text to continue (tokenised with the "
                   "checkpoint's vocabulary; unknown words become <unk>)")
    p.add_argument("--tokens", type=int, default=100, metavar="N",
                   help="tokens to generate (words, or characters for a chars model)")
    p.add_argument("--temperature", type=float, default=1.0, metavar="T",
                   help="> 0; below 1 sharper, near 0 greedy (default 1)")
    p.add_argument("--top-k", type=int, default=0, metavar="K",
                   help="sample among the K most likely tokens only (0: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the draws (same seed, same text)")
    p.add_argument("--device", help="cpu or cuda (default: cpu)")
    p.add_argument("--threads", type=int, metavar="N", help="torch threads (default: torch's own)")
    p.set_defaults(func=generate_command)


def prompt_tokens(prompt: str, layout: str) -> list[str]:
    """The prompt as the corpus was tokenised: characters or words per line, ``<eos>`` at each
    line break (as a corpus line ends); imdb-lm with its own lower-casing tokeniser."""
    lines = prompt.split("\n")
    out: list[str] = []
    for i, line in enumerate(lines):
        if layout == "chars":
            out.extend(line)
        elif layout == "imdb-lm":
            out.extend(imdb_tokenize(line))
        else:
            out.extend(line.split())
        if i < len(lines) - 1:
            out.append(EOS)
    return out


def map_unknown(tokens: list[str], vocab: Vocabulary) -> tuple[list[str], list[str]]:
    """``(tokens with unknown ones as <unk>, the unknown ones)``; a vocabulary without ``<unk>``
    cannot take an unknown token: a one-line error naming it."""
    unknown = [t for t in tokens if t not in vocab]
    if unknown and UNK not in vocab:
        raise ValueError(f"--prompt: {unknown[0]!r} is not in the checkpoint's vocabulary, which "
                         f"has no {UNK}; use only words of the training data")
    return [t if t in vocab else UNK for t in tokens], unknown


def detokenize(tokens: list[str], chars: bool) -> str:
    """Words joined by spaces (characters concatenated), ``<eos>`` as a line break."""
    if chars:
        return "".join("\n" if t == EOS else t for t in tokens)
    lines, cur = [], []
    for t in tokens:
        if t == EOS:
            lines.append(" ".join(cur))
            cur = []
        else:
            cur.append(t)
    return "\n".join(lines + [" ".join(cur)])


def generate_command(args) -> int:
    set_threads(args.threads)
    check_sampling(args.temperature, args.top_k, args.tokens)   # before the checkpoint is read
    device = args.device or "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"--device {device}: no CUDA device is available")
    run = load_run(args.checkpoint, device=device)
    layout = run.config.data.layout
    vocab = run.vocab
    toks, unknown = map_unknown(prompt_tokens(args.prompt, layout), vocab)
    if unknown:
        shown = ", ".join(repr(t) for t in dict.fromkeys(unknown))
        print(f"note: {len(unknown)} prompt token(s) not in the vocabulary became {UNK}: "
              f"{shown[:200]}", file=sys.stderr)
    # <eos> first: in training every line starts after one, so the model's state is that of a
    # line start (and an empty prompt has something to condition on).
    context = ([EOS] if EOS in vocab else []) + toks
    if not context:
        raise ValueError("--prompt: the checkpoint's vocabulary has no <eos>; give a prompt")
    gen = torch.Generator().manual_seed(args.seed)
    ids = sample(run.model, vocab.encode(context).tolist(), args.tokens, args.temperature,
                 args.top_k, generator=gen)
    print(detokenize(toks + vocab.decode(ids), chars=layout == "chars"))
    return 0
