"""The repository stands on its own: no file points at design documents outside it."""

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# A path that leaves the repository for a sibling folder (../shared/), an absolute
# path on the machine it was written on, or the working notes that lived there
# (their content is in docs/design.md and the other design notes now).
OUTSIDE = re.compile(r"\.\./shared\b|/work/\w|\b(DESIGN|STYLE|SKLEARN|PAPER)\.md\b")


def _tracked_text_files():
    try:
        listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    for name in listed:
        path = ROOT / name
        if path.suffix in {".py", ".md", ".rst", ".cfg", ".toml", ".txt", ""} and path.is_file():
            yield name, path.read_text(encoding="utf-8", errors="replace")


def test_no_file_points_outside_the_repository():
    offenders = [f"{name}:{text.count(chr(10), 0, match.start()) + 1}: {match.group(0)}"
                 for name, text in _tracked_text_files()
                 if name != "tests/test_self_contained.py"
                 for match in OUTSIDE.finditer(text)]
    assert not offenders, "references outside the repository:\n" + "\n".join(offenders)


def test_the_design_page_is_in_the_docs():
    design = ROOT / "docs" / "design.md"
    if not (ROOT / "docs").is_dir():
        pytest.skip("no docs/ next to the tests")
    assert design.is_file()
    assert "docs/design.md" in (ROOT / "README.md").read_text(encoding="utf-8")
