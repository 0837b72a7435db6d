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
    for model in ("odenet", "mlp"):
        status = main(
            [
                "mnist",
                "train",
                "--model",
                model,
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
                str(runs / model),
                "--threads",
                "1",
                "--log-every",
                "1",
            ]
        )
        assert status == 0
        assert (runs / model / "model.pt").exists()
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
    assert (
        main(
            [
                "mnist",
                "report",
                "--runs",
                str(runs),
                "--out",
                str(out),
                "--tolerances",
                "1e-2",
                "1e-3",
                "--test-limit",
                "100",
                "--data-dir",
                str(DATA),
                "--threads",
                "1",
            ]
        )
        == 0
    )
    report = json.loads((out / "mnist.json").read_text())
    by_model = {row["model"]: row for row in report["models"]}
    assert set(by_model) == {"odenet", "mlp"}
    assert by_model["odenet"]["test_error"] == evaluated["test_error"]
    assert [s["tol"] for s in report["odenet_tolerance_sweep"]] == [1e-2, 1e-3]
    assert (out / "mnist_adaptive.png").stat().st_size > 0
    assert "| odenet |" in (out / "mnist.md").read_text()
    assert (runs / "odenet.pt").exists() and (runs / "mlp.pt").exists()
