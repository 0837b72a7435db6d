"""The `neuralode demo` command: a short run writes its figures and metrics, and --help works."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from neuralode.paper.cli import main
from neuralode.paper.experiments.spiral_demo import PLOT_FILES


def test_short_demo_writes_plots_and_metrics(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["demo", "--iterations", "30", "--checkpoints", "3", "--no-progress"]
    assert main([*args, "--out", str(tmp_path)]) == 0

    for name in PLOT_FILES:
        assert (tmp_path / name).stat().st_size > 10_000, name
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert [c["iteration"] for c in metrics["checkpoints"]] == [0, 10, 20, 30]
    assert len(metrics["train_loss"]) == len(metrics["train_nfe"]) == 30
    assert metrics["final_trajectory_loss"] < metrics["initial_trajectory_loss"]
    printed = capsys.readouterr().out
    assert "| iteration |" in printed
    assert str(tmp_path.resolve()) in printed


def test_demo_is_reproducible(tmp_path: Path) -> None:
    runs = []
    for name in ("a", "b"):
        args = ["demo", "--iterations", "5", "--checkpoints", "1", "--no-progress"]
        assert main([*args, "--out", str(tmp_path / name)]) == 0
        runs.append(json.loads((tmp_path / name / "metrics.json").read_text()))
    assert runs[0]["train_loss"] == runs[1]["train_loss"]
    assert runs[0]["final_trajectory_loss"] == runs[1]["final_trajectory_loss"]


@pytest.mark.parametrize("argv", [["--help"], ["demo", "--help"]])
def test_help_exits_zero_with_usage(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("usage: neuralode")
    assert "demo" in printed


def test_invalid_arguments_exit_two(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["demo", "--batch-time", "1"]) == 2
    assert "batch_time" in capsys.readouterr().err
