"""The Python blocks of README.md and docs/architectures.md run top to bottom.

A reader copies a file's blocks in order into one session, so each file's blocks
run, in order, in one fresh interpreter (a subprocess, so that nothing from the
test session leaks in), with every ``ConvergenceWarning`` an error: an example
whose members barely train (:class:`skdtda.UndertrainedWarning`) or whose
scikit-learn model stops short is a bad example.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRELUDE = """import warnings
from sklearn.exceptions import ConvergenceWarning
warnings.simplefilter("error", ConvergenceWarning)
"""


def python_blocks(path):
    """The ```python blocks of a markdown file, in order."""
    return re.findall(r"^```python\n(.*?)^```", path.read_text(), flags=re.M | re.S)


def run_blocks(path, tmp_path, timeout):
    script = PRELUDE + "\n".join(f"# block {i}\n{block}"
                                 for i, block in enumerate(python_blocks(path)))
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-4000:]


def test_the_blocks_are_found():
    assert len(python_blocks(ROOT / "README.md")) >= 7
    assert len(python_blocks(ROOT / "docs" / "architectures.md")) >= 1


def test_architectures_blocks_run_in_order(tmp_path):
    run_blocks(ROOT / "docs" / "architectures.md", tmp_path, timeout=300)


@pytest.mark.slow
def test_readme_blocks_run_in_order(tmp_path):
    # slow: 110-130 s on one thread (measured 2026-12-06), most of it the pruning grid
    # search (3 folds x an influence fit with its damping calibration, 10 ensemble fits)
    # and the 20-set retraining of the evaluation block; shrinking them further would
    # make the README's examples show settings nobody should copy
    run_blocks(ROOT / "README.md", tmp_path, timeout=600)
