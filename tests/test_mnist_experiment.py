"""The MNIST commands end to end on a slice of the data: train, eval, report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from neuralode.paper.cli import main

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
pytestmark = pytest.mark.skipif(not DATA.exists(), reason=f"MNIST not found at {DATA}")


def test_train_eval_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runs"
    for model, seed, folder in (
        ("odenet", 0, "odenet"),
        ("mlp", 0, "mlp"),
        ("mlp", 1, "mlp-seed1"),
    ):
        status = main(
            [
                "mnist",
                "train",
                "--model",
                model,
                "--seed",
                str(seed),
                "--epochs",
                "1",
                "--limit",
                "128",
                "--batch-size",
                "64",
                "--test-limit",
                "100",
                "--data-dir",
                str(DATA),
                "--out",
                str(runs / folder),
                "--threads",
                "1",
                "--log-every",
                "1",
            ]
        )
        assert status == 0
        assert (runs / folder / "model.pt").exists()
    capsys.readouterr()

    assert (
        main(
            [
                "mnist",
                "eval",
                "--checkpoint",
                str(runs / "odenet" / "model.pt"),
                "--data-dir",
                str(DATA),
                "--test-limit",
                "100",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[0] == "odenet: evaluating on 100 test images (cpu)"  # before the wait
    evaluated = json.loads(printed[-1])
    assert evaluated["model"] == "odenet" and evaluated["images"] == 100
    assert evaluated["parameters"] == 208_266 and evaluated["test_nfe"] > 0

    out = tmp_path / "results"
    report_args = ["mnist", "report", "--runs", str(runs), "--out", str(out), "--tolerances",
                   "1e-2", "1e-3", "--test-limit", "100", "--data-dir", str(DATA), "--threads",
                   "1"]  # fmt: skip
    assert main(report_args) == 0
    report = json.loads((out / "mnist.json").read_text())
    by_model = {row["model"]: row for row in report["models"]}
    assert set(by_model) == {"odenet", "mlp"}
    assert by_model["odenet"]["test_error"] == evaluated["test_error"]
    assert [s["tol"] for s in report["odenet_tolerance_sweep"]] == [1e-2, 1e-3]
    assert (out / "mnist_adaptive.png").stat().st_size > 0
    assert [s["seed"] for s in by_model["odenet"]["seeds"]] == [0]
    mlp_errors = [s["test_error"] for s in by_model["mlp"]["seeds"]]
    assert [s["seed"] for s in by_model["mlp"]["seeds"]] == [0, 1]
    table = (out / "mnist.md").read_text()
    assert f"| odenet | {evaluated['test_error']:.2f}% | — | 1 |" in table
    mean, low, high = sum(mlp_errors) / 2, min(mlp_errors), max(mlp_errors)
    assert f"| mlp | {mean:.2f}% | {low:.2f}–{high:.2f}% | 2 |" in table
    assert f"| mlp-seed1 | 1 | {mlp_errors[1]:.2f}% |" in table
    assert all((runs / f"{name}.pt").exists() for name in ("odenet", "mlp", "mlp-seed1"))

    # A fresh clone has the report's copies, not the run folders' model.pt (git-ignored): the
    # report finds the same runs and writes the same test errors from the copies.
    for name in ("odenet", "mlp", "mlp-seed1"):
        (runs / name / "model.pt").unlink()
    again = tmp_path / "again"
    assert main([*report_args[:5], str(again), *report_args[6:]]) == 0
    rerun = {row["model"]: row for row in json.loads((again / "mnist.json").read_text())["models"]}
    assert rerun["odenet"]["test_error"] == evaluated["test_error"]
    assert [s["test_error"] for s in rerun["mlp"]["seeds"]] == mlp_errors
