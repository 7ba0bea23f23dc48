"""Sphinx configuration of the skdtda documentation.

Build with ``make -C docs html`` (warnings are errors). The gallery runs every
script in ``examples/``; the API reference lists every public name that the
installed skdtda exports when the docs are built.
"""

import importlib
import re
import os
import sys
import warnings
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Figures only: no window may open while the gallery runs.
os.environ.setdefault("MPLBACKEND", "Agg")

import skdtda  # noqa: E402

project = "skdtda"
author = "skdtda developers"
copyright = "2026, skdtda developers"
release = skdtda.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
templates_path = []
exclude_patterns = ["_build", "build", "Thumbs.db", ".DS_Store"]
html_theme = "furo"
html_title = f"skdtda {release}"
html_static_path = []

# The stubs of the API reference are written below, by _write_api_sections.
autosummary_generate = False
autodoc_default_options = {"members": True}
autodoc_typehints = "none"
# numpydoc renders the Attributes/Methods sections itself; the class template
# lists the methods, so numpydoc need not build its own member tables.
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
myst_heading_anchors = 3
suppress_warnings = [
    # The design notes in docs/*.md link to repository files outside the site
    # (benchmarks/, tests/, README.md); they stay plain text in the HTML.
    "myst.xref_missing",
]


sphinx_gallery_conf = {
    "examples_dirs": str(DOCS.parent / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "ignore_pattern": r"/_",
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "reset_modules": ("matplotlib",),
    "abort_on_example_error": True,
    "plot_gallery": "True",
    "remove_config_comments": True,
    "show_memory": False,
}

# -- the API reference: whatever skdtda exports at build time ----------------------------
# (module, heading, blurb). Modules that do not exist yet are skipped, so the
# reference grows with the package without edits here.
API_MODULES = [
    ("skdtda", "Estimators", "Seed ensembles, influence, pruning: the public estimators."),
    ("skdtda.evaluation", "Evaluation", "Retraining ground truth and attribution scores."),
    ("skdtda.pruning", "Pruning", "Removing training rows by their influence."),
    ("skdtda.discrepancy", "Discrepancies",
     "Statistics between the measurement's samples before and after a removal."),
    ("skdtda.measurements", "Measurements", "Per-sample measurements of a trained net."),
    ("skdtda.curvature", "Curvature backends", "Inverse-curvature solvers, one per seed."),
    ("skdtda.plotting", "Plotting", "matplotlib figures (optional dependency)."),
    ("skdtda.nets", "Networks", "Small torch modules used by default."),
    ("skdtda.exceptions", "Exceptions", ""),
]


def _public_names(module):
    names = getattr(module, "__all__", None) or []
    return [n for n in names if not n.startswith("_") and not n.isupper()
            and callable(getattr(module, n, None))]


_INHERITED_FROM_SKLEARN = (
    "BaseEstimator, TransformerMixin, ClassifierMixin, RegressorMixin, MetaEstimatorMixin, "
    "_SetOutputMixin, _MetadataRequester, ValueError, Exception, BaseException, Module, "
    "Sequential")


def _stub(module_name, name, obj):
    full = f"{module_name}.{name}"
    if isinstance(obj, type):
        body = [f".. autoclass:: {name}", "   :members:",
                f"   :inherited-members: {_INHERITED_FROM_SKLEARN}", "   :show-inheritance:"]
    else:
        body = [f".. autofunction:: {name}"]
    return "\n".join([full, "=" * len(full), "", f".. currentmodule:: {module_name}", "",
                       *body, ""])


def _write(path, text):
    if not path.exists() or path.read_text() != text:  # keep incremental builds quiet
        path.write_text(text)


def _write_api_sections():
    out = DOCS / "gen_modules"
    out.mkdir(exist_ok=True)
    lines, seen = [], set()
    for name, heading, blurb in API_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:  # a module still being written: leave it out
            warnings.warn(f"API reference: skipping {name} ({exc})", stacklevel=1)
            continue
        names = [n for n in _public_names(module)
                 if id(getattr(module, n)) not in seen]
        # A name re-exported by skdtda is documented once, under skdtda.
        seen.update(id(getattr(module, n)) for n in names)
        if not names:
            continue
        lines += [heading, "-" * len(heading), "", blurb, "",
                  f".. currentmodule:: {name}", "", ".. autosummary::",
                  "   :toctree: gen_modules", ""]
        lines += [f"   {n}" for n in sorted(names)] + [""]
        for n in names:
            _write(out / f"{name}.{n}.rst", _stub(name, n, getattr(module, n)))
    _write(out / "api_sections.inc", "\n".join(lines))


def _write_notes_toctree():
    """The design notes written as Markdown in docs/, whichever exist."""
    notes = sorted(p.stem for p in DOCS.glob("*.md"))
    first = [n for n in ("design", "influence", "ensembles", "benchmarks") if n in notes]
    ordered = first + [n for n in notes if n not in first]
    text = "\n".join([".. toctree::", "   :maxdepth: 2", "   :caption: Design notes", ""]
                     + [f"   /{n}" for n in ordered]) + "\n"
    _write(DOCS / "gen_modules" / "notes_toctree.inc", text)


_write_api_sections()
_write_notes_toctree()


# -- docstring fixes applied before numpydoc reads them ----------------------------------
_TYPE_LINE = re.compile(r"^(\s*\*{0,2}\w+ : )(.*)$")
_TRAILING_UNDERSCORE = re.compile(r"(?<![`\w])([A-Za-z]\w*_)(?![`\w])")


def _reindent_shallow_lines(doc):
    """Indent lines that sit left of the docstring's section headers up to them.

    A docstring assembled from a shared paragraph (the score convention) can
    carry that paragraph with a shallower indent than the rest, which hides
    every numpydoc section; returns None when nothing needs fixing.
    """
    lines = doc.expandtabs().split("\n")
    headers = [len(line) - len(line.lstrip()) for line, below in zip(lines[1:], lines[2:])
               if line.strip() and set(below.strip()) == {"-"}
               and len(below.strip()) == len(line.strip())]
    if not headers:
        return None
    base = min(headers)
    fixed = [lines[0]] + [" " * base + line.lstrip()
                          if line.strip() and len(line) - len(line.lstrip()) < base else line
                          for line in lines[1:]]
    return "\n".join(fixed) if fixed != lines else None


def _fix_docstring(app, what, name, obj, options, lines):
    """Make two harmless docstring habits valid reStructuredText.

    * ``ndarray of shape (n_features_in_,)`` in a type: ``name_`` is a
      reference in reST, so such names are set as literals.
    * A shared paragraph inserted with a shallower indent than the rest.
    """
    from sphinx.util.docstrings import prepare_docstring

    doc = getattr(obj, "__doc__", None)
    if isinstance(doc, str) and what in ("method", "function"):
        fixed = _reindent_shallow_lines(doc)
        if fixed is not None:
            lines[:] = prepare_docstring(fixed)
    for i, line in enumerate(lines):
        match = _TYPE_LINE.match(line)
        if match:
            lines[i] = match.group(1) + _TRAILING_UNDERSCORE.sub(r"``\1``", match.group(2))


def _skip_member(app, what, name, obj, skip, options):
    # sklearn generates set_*_request methods whose docstrings point into
    # sklearn's own user guide; they are documented there.
    if re.fullmatch(r"set_\w+_request", name):
        return True
    return None


def setup(app):
    app.connect("autodoc-process-docstring", _fix_docstring, priority=100)
    app.connect("autodoc-skip-member", _skip_member)
