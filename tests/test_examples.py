"""Every script in examples/ runs to the end."""

import runpy
import warnings
from pathlib import Path

import pytest

from skdtda import UndertrainedWarning

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # figures land in a scratch folder
    with warnings.catch_warnings():
        # an example attributes members worth attributing (the gallery build fails on it)
        warnings.simplefilter("error", UndertrainedWarning)
        runpy.run_path(str(path), run_name="__main__")
