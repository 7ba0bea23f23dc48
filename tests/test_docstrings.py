"""Every Examples section in the package runs, as the style guide promises."""

import doctest
import importlib
import pkgutil

import pytest

import skdtda

MODULES = sorted(
    name for _, name, _ in pkgutil.walk_packages(skdtda.__path__, "skdtda.")
    if name != "skdtda.__main__"
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
