"""The `neuralode demo` command: a short run writes its figures and metrics, and --help works."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from neuralode.paper.cli import main
from neuralode.paper.experiments import spiral_demo
from neuralode.paper.experiments.spiral_demo import PLOT_FILES, SpiralWindows, checkpoint_iterations


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


def test_stopped_demo_resumes_to_the_numbers_of_an_uninterrupted_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["demo", "--iterations", "7", "--checkpoints", "2", "--no-progress"]  # epochs: 4, 3
    assert main([*args, "--out", str(tmp_path / "a")]) == 0

    batches = SpiralWindows.batches

    def interrupted(self: SpiralWindows, epoch: int, start: int = 0) -> Any:
        """Ctrl-C just before iteration 6, in the second epoch (iterations 5 to 7)."""
        for iteration, batch in enumerate(
            batches(self, epoch, start), self.boundaries[epoch] + start
        ):
            if iteration == 5:
                raise KeyboardInterrupt
            yield batch

    monkeypatch.setattr(spiral_demo.SpiralWindows, "batches", interrupted)
    assert main([*args, "--out", str(tmp_path / "b")]) == 130
    assert not (tmp_path / "b" / "metrics.json").exists()
    monkeypatch.undo()
    assert main([*args, "--resume", "--out", str(tmp_path / "b")]) == 0

    a, b = (json.loads((tmp_path / run / "metrics.json").read_text()) for run in "ab")
    assert a["train_loss"] == b["train_loss"] and a["train_nfe"] == b["train_nfe"]

    def untimed(metrics: dict[str, Any]) -> list[dict[str, Any]]:
        return [{k: v for k, v in c.items() if k != "elapsed_s"} for c in metrics["checkpoints"]]

    assert untimed(a) == untimed(b)
    assert [c["iteration"] for c in b["checkpoints"]] == [0, 4, 7]


def test_spiral_windows_are_one_seeded_sequence_cut_at_the_checkpoints() -> None:
    data = SpiralWindows(1000, 20, 10, checkpoint_iterations(7, 3), seed=0)
    assert [data.epoch_length(epoch) for epoch in range(3)] == [2, 3, 2] and len(data) == 3
    generator = torch.Generator().manual_seed(0)
    draws = [torch.randint(0, 990, (20,), generator=generator) for _ in range(7)]
    batches = [starts for epoch in range(3) for (starts,) in data.batches(epoch)]
    assert all(torch.equal(a, b) for a, b in zip(draws, batches, strict=True))
    assert torch.equal(next(data.batches(1, start=2))[0], draws[4])  # a resumed epoch


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
