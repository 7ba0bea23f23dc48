"""Every script in examples/ runs to the end."""

import runpy
import warnings
from pathlib import Path

import pytest

from skdtda import UndertrainedWarning

# Over 3 minutes on one core (plot_digits_attribution.py: nine transformer fits, three of
# them calibrating, on the exact GGN of 16 members) or 2 (plot_influence_statistics.py:
# 120-150 s on 2026-12-07, before and after that day's changes alike): slow here; CI's
# gallery build (`make -C docs html`, warnings as errors) runs them on every push all the
# same.
SLOW = {"plot_digits_attribution.py", "plot_influence_statistics.py"}
EXAMPLES = [pytest.param(path, marks=pytest.mark.slow) if path.name in SLOW else path
            for path in sorted((Path(__file__).parent.parent / "examples").glob("*.py"))]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # figures land in a scratch folder
    with warnings.catch_warnings():
        # an example attributes members worth attributing (the gallery build fails on it)
        warnings.simplefilter("error", UndertrainedWarning)
        runpy.run_path(str(path), run_name="__main__")
