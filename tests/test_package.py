"""The package itself: one version, the Python it claims, no global state changed on import."""
import importlib.metadata
import sys
import tomllib
from pathlib import Path

import rnndrop

PYPROJECT = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())


def test_version_is_written_once():
    assert "version" not in PYPROJECT["project"]            # dynamic: read from the package
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "rnndrop.__version__"}
    assert importlib.metadata.version("rnndrop") == rnndrop.__version__


def test_the_python_it_claims_is_the_one_that_runs_it():
    """requires-python names the oldest Python the code runs on (tomllib: 3.11); CI runs that
    one, so the suite passing there is the proof."""
    assert PYPROJECT["project"]["requires-python"] == ">=3.11"
    assert sys.version_info >= (3, 11)
