"""The flow commands end to end on tiny runs: train, eval, sample, report; and the trained
CNF's density is normalised."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from neuralode.nn import CNF, ConcatSquashMLP, SolverConfig
from neuralode.paper.cli import main
from neuralode.paper.experiments.cnf import ImageTask, load_flow, standard_error

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT.parent / "shared" / "data" / "mnist"
TRAINED_CNF = ROOT / "results" / "cnf" / "runs" / "moons-cnf" / "model.pt"


def train(out: Path, *task: str, model: str = "cnf") -> None:
    common = ["--iterations", "6", "--eval-every", "3", "--eval-samples", "50", "--threads", "1"]
    assert main(["cnf", "train", *task, "--model", model, "--out", str(out), *common]) == 0


def last_json(capsys: pytest.CaptureFixture[str]) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_train_eval_sample_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runs"
    train(runs / "moons-cnf", "--data", "moons", "--tol", "1e-3")
    train(runs / "moons-planar", "--data", "moons", model="planar")
    train(runs / "ring-cnf", "--target", "ring", "--tol", "1e-3")
    train(runs / "ring-planar", "--target", "ring", model="planar")
    train(runs / "moons-planar-seed1", "--data", "moons", "--seed", "1", model="planar")
    capsys.readouterr()

    model_file = str(runs / "moons-cnf" / "model.pt")
    assert main(["cnf", "eval", "--checkpoint", model_file, "--samples", "200"]) == 0
    result = last_json(capsys)
    assert result["run"] == "moons-cnf" and np.isfinite(result["test_nll"])
    assert result["test_nfe"] > 0 and result["tol"] == 1e-3

    png = tmp_path / "samples.png"
    args = ["cnf", "sample", "--checkpoint", model_file, "--samples", "300", "--out", str(png)]
    assert main(args) == 0 and png.stat().st_size > 0
    planar_file = str(runs / "moons-planar" / "model.pt")
    args = ["cnf", "sample", "--checkpoint", planar_file, "--out", str(png)]
    assert main(args) == 2
    assert "has no closed-form inverse" in capsys.readouterr().err

    out = tmp_path / "results"
    args = ["cnf", "report", "--runs", str(runs), "--out", str(out), "--samples", "200"]
    assert main([*args, "--threads", "1"]) == 0
    rows = {row["run"]: row for row in json.loads((out / "cnf.json").read_text())}
    assert set(rows) == {"moons-cnf", "moons-planar", "moons-planar-seed1", "ring-cnf",
                         "ring-planar"}  # fmt: skip
    assert rows["ring-cnf"]["task"] == "matching" and np.isfinite(rows["ring-cnf"]["test_kl"])
    assert rows["moons-planar"]["parameters"] == 64 * 5
    report = (out / "cnf.md").read_text()
    assert "| moons |" in report and "| ring |" in report
    # two seeds of the planar flow on moons: their mean and range in one cell
    nll = [rows[run]["test_nll"] for run in ("moons-planar", "moons-planar-seed1")]
    assert rows["moons-planar-seed1"]["seed"] == 1 and nll[0] != nll[1]
    spread = f"{np.mean(nll):.3f} ({min(nll):.3f}–{max(nll):.3f}, 2 seeds)"
    moons = next(line for line in report.splitlines() if line.startswith("| moons |"))
    assert spread in moons.split(" | ")
    for figure in ("cnf_toy.png", "cnf_matching.png", "cnf_flow.png"):
        assert (out / figure).stat().st_size > 0
    assert (out / "cnf" / "moons-cnf.pt").exists()
    # the last table names each run's model file, which `cnf eval` scores again
    ring = rows["ring-cnf"]
    assert ring["checkpoint"] == str(out / "cnf" / "ring-cnf.pt")
    assert (
        f"| ring-cnf | 0 | KL {ring['test_kl']:.3f} ± {ring['test_kl_se']:.3f} | "
        f"{ring['test_nfe']:.0f} | "
        f"{ring['train_minutes']:.1f} | `{ring['checkpoint']}` |"
    ) in report


def test_iterations_must_fill_whole_evaluation_periods(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["cnf", "train", "--data", "moons", "--iterations", "7", "--eval-every", "3"]
    assert main([*args, "--out", str(tmp_path)]) == 2
    assert "must be a multiple of --eval-every" in capsys.readouterr().err


@pytest.mark.skipif(not MNIST.exists(), reason=f"MNIST not found at {MNIST}")
def test_mnist14_bits_per_dim(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    task = ["--data", "mnist14", "--data-dir", str(MNIST), "--hidden", "16", "--tol", "1e-2"]
    train(tmp_path / "m", *task)
    args = ["cnf", "eval", "--checkpoint", str(tmp_path / "m" / "model.pt"), "--samples", "20"]
    assert main([*args, "--data-dir", str(MNIST)]) == 0
    result = last_json(capsys)
    assert result["test_bpd"] == pytest.approx(result["test_nll"] / (196 * np.log(2)) + 8, rel=1e-6)
    se_bpd = result["test_nll_se"] / (196 * np.log(2))
    assert result["test_bpd_se"] == pytest.approx(se_bpd, rel=1e-6) and se_bpd > 0


def test_standard_error_is_the_sample_std_over_root_n() -> None:
    """[1, 2, 3, 4]: sample std √(5/3), over √4."""
    assert standard_error(torch.tensor([1.0, 2.0, 3.0, 4.0])) == pytest.approx(np.sqrt(5 / 3) / 2)


def test_trained_cnf_density_integrates_to_one() -> None:
    """exp(log p) of the trained moons CNF, summed over a grid with spacing 0.1 on [−6, 6]²
    (the data lie within [−3.6, 3.6]²), is 1 within 2%."""
    model, _ = load_flow(TRAINED_CNF, torch.device("cpu"))
    axis = torch.arange(-6.0, 6.0, 0.1) + 0.05
    grid = torch.cartesian_prod(axis, axis)
    with torch.no_grad():
        log_prob = torch.cat([model.log_prob(chunk) for chunk in grid.split(4000)])
    mass = float(log_prob.double().exp().sum() * 0.1**2)
    assert mass == pytest.approx(1.0, abs=0.02)


def test_regularised_image_loss_keeps_the_image_likelihood() -> None:
    """With the regularisers on, the reported NLL is still that of the dequantised image (the
    preprocessing's log-determinant included), and the penalty comes on top."""
    statistics = ([0.5] * 196, [2.0] * 196)
    task = ImageTask(None, statistics)
    model = CNF(ConcatSquashMLP(196, (8,)), 196, solver=SolverConfig(rtol=1e-3, atol=1e-3))
    pixels = torch.randint(0, 256, (3, 196)).float()
    torch.manual_seed(0)
    _, plain_metrics = task.loss(model, (pixels,))
    task.kinetic = 1.0
    torch.manual_seed(0)
    regularised, metrics = task.loss(model, (pixels,))
    assert metrics["nll"] == pytest.approx(plain_metrics["nll"], rel=1e-5)
    assert regularised.item() == pytest.approx(metrics["nll"] + metrics["penalty"], rel=1e-5)
    assert metrics["penalty"] > 0
