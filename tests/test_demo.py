"""The command-line demo runs end to end and prints the three rankings."""

from skdtda.__main__ import main


def test_demo_command_runs(capsys):
    assert main(["demo", "--dataset", "iris", "--n-seeds", "3", "--queries", "2", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "trained 3 seeds" in out
    assert "per-seed influence (ekfac" in out
    for statistic in ("mean", "variance", "wasserstein"):
        assert out.count(f"most influential on the {statistic}") == 2
