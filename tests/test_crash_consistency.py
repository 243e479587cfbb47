"""Real signals in a child process: SIGINT, SIGTERM and SIGKILL at random steps, and a SIGKILL
inside a checkpoint write, then --resume until the run ends; every tensor, metrics.jsonl and
steps.jsonl equal those of an uninterrupted run (variational masks, variable BPTT)."""
import json

import pytest

from crashrun import interrupted_run, write_recipe
from lmrun import LM_SCHEMES, QUIET, assert_same_run, write_lm_corpus
from rnndrop.config import load_config
from rnndrop.data.text import load_corpus
from rnndrop.train import LMTrainer

EVENTS = ("SIGINT", "SIGTERM", "SIGKILL", "write")


# The two schemes with the most state to restore (per-sequence masks from the RNG, and window
# lengths drawn from a second generator); "none" and "zaremba" go through the same code with
# less of it, and test_train_resume interrupts all four at every point of a step. (All four
# here took 2.5 of CI's 10 minutes.)
@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["variational", "variable-bptt"])
def test_signals_and_kills_then_resume_equal_an_uninterrupted_run(tmp_path, scheme):
    data = write_lm_corpus(tmp_path / "data", n_train=200)
    recipe = write_recipe(tmp_path / "tiny.toml")
    over = LM_SCHEMES[scheme]
    # The uninterrupted run, in this process (one thread, like the child).
    cfg = load_config(recipe, [f"{k}={v}" for k, v in over.items()])
    ref = LMTrainer(cfg, load_corpus(data, layout="ptb"), tmp_path / "ref", **QUIET)
    final = ref.train()
    events = interrupted_run(recipe, data, tmp_path / "run", over, EVENTS,
                             total_steps=ref.state.step, seed=scheme)
    for ev in events:
        expected = -9 if ev["event"] in ("SIGKILL", "write") else 130
        assert ev["returncode"] == expected, ev["output"]
        if expected == 130:   # a polite stop saves the last completed step
            assert ev["checkpoint_step"] >= ev["sent_after_step"], ev
            assert "interrupted: checkpoint saved" in ev["output"]
    assert not list((tmp_path / "run").glob("*.tmp"))
    assert_same_run(tmp_path / "ref", tmp_path / "run")
    assert json.loads((tmp_path / "run" / "final.json").read_text()) == final
