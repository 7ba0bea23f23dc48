"""The command-line demo runs end to end, prints the three rankings and writes its figure."""

import re

import numpy as np
import pytest

from skdtda.__main__ import main


def test_demo_command_runs(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    out_dir = tmp_path / "figures"
    assert main(["demo", "--dataset", "iris", "--n-seeds", "3", "--queries", "2", "--top", "4",
                 "--output-dir", str(out_dir), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "trained 3 seeds" in out
    assert re.search(r"per-seed influence \((\w+) curvature, damping", out)
    # the calibration's fidelity, with its intervals
    assert re.search(r"removals of 30% of the rows: LDS of the mean loss -?\d\.\d\d "
                     r"\[-?\d\.\d\d, -?\d\.\d\d\]", out)
    assert re.search(r"measured on \d+ test rows; 95% intervals over them", out)
    # the top rows' removal, predicted against retrained
    assert re.search(r"top +\d+ by mean +mean \d+\.\d+ -> predicted \d+\.\d+, retrained", out)
    assert out.count("most influential training rows") == 2
    # Each table: a header naming the three statistics, then one line per rank.
    assert out.count("rank | mean") == 2 and "| variance" in out and "| wasserstein" in out
    ranks = re.findall(r"^\s+(\d) \| #", out, flags=re.MULTILINE)
    assert ranks == ["1", "2", "3", "4"] * 2
    figure = out_dir / "skdtda_demo_iris.png"
    assert f"figure written to {figure.resolve()}" in out
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_table_ranks_by_absolute_score(capsys, tmp_path):
    from skdtda.__main__ import _rank_table

    scores = {"mean": np.array([0.1, -0.5, 0.2]), "wasserstein": np.array([0.3, 0.1, 0.2])}
    table = _rank_table(scores, np.array(["a", "b", "c"]), top=2)
    lines = table.splitlines()
    assert "#1 (b) -5.00e-01" in lines[2] and "#0 (a) +3.00e-01" in lines[2]
    assert "#2 (c) +2.00e-01" in lines[3]


def test_demo_no_plot_writes_nothing(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--dataset", "wine", "--n-seeds", "2", "--queries", "1", "--no-plot",
                 "--quiet"]) == 0
    assert "figure written" not in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []


def test_demo_rejects_bad_seed_count(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--n-seeds", "0"])
    assert "--n-seeds=0" in capsys.readouterr().err
