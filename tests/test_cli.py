import subprocess
import sys

from rnndrop.cli import main
from rnndrop.demo import run_demo


def test_demo_loss_falls():
    losses = run_demo(steps=150, every=25, print_fn=lambda *a: None)
    assert losses[-1] < 0.5 * losses[0]


def test_cli_demo_and_module_entry(capsys):
    assert main(["demo", "--steps", "25"]) == 0
    assert "step   25" in capsys.readouterr().out
    r = subprocess.run([sys.executable, "-m", "rnndrop", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "demo" in r.stdout


def test_every_study_is_a_command_with_the_shared_options():
    from rnndrop.cli import build_parser
    from rnndrop.studies import STUDIES
    names = [s.STUDY.name for s in STUDIES]
    assert names == ["d2l-dropout", "imdb-activations", "sentiment-regression", "gradient-flow"]
    for name in names:
        args = build_parser().parse_args(["study", name, "--quick", "--batch-size", "4",
                                          "--seed", "2", "--threads", "1", "--no-progress"])
        assert args.out == f"runs/{name}" and args.quick and args.batch_size == 4
        assert args.func.__self__.name == name
