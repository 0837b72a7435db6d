"""The latent ODE experiment: spiral data, the ELBO's KL term, learning on a small problem,
extrapolation, and the RNN baseline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from neuralode.nn import GapRNN, LatentODE, SolverConfig, gaussian_kl
from neuralode.paper.cli import main
from neuralode.paper.data.spirals import TIMES, WINDOW, make_spirals
from neuralode.paper.experiments.latent import encoder_view, load_model


def test_spirals_shapes_masks_and_directions() -> None:
    spirals = make_spirals(40, 30, noise_std=0.1, seed=0)
    assert spirals.truth.shape == spirals.observed.shape == (40, TIMES, 2)
    assert spirals.mask.shape == (40, TIMES) and spirals.times.shape == (TIMES,)
    assert (spirals.mask.sum(1) == 30).all() and not spirals.mask[:, WINDOW:].any()
    for row in spirals.mask:  # each spiral's observation times are its own, strictly increasing
        observed_times = spirals.times[row]
        assert (observed_times.diff() > 0).all()
    assert len({tuple(row.nonzero().flatten().tolist()) for row in spirals.mask}) == 40
    noise = (spirals.observed - spirals.truth).std()
    assert noise == pytest.approx(0.1, rel=0.05)
    # Counter-clockwise spirals turn with positive angular velocity, clockwise ones negative.
    x, y = spirals.truth[..., 0], spirals.truth[..., 1]
    angular = (x[:, :-1] * y[:, 1:] - y[:, :-1] * x[:, 1:]).mean(1)
    assert ((angular < 0) == spirals.clockwise).all()
    assert 10 < int(spirals.clockwise.sum()) < 30
    again = make_spirals(40, 30, noise_std=0.1, seed=0)
    assert torch.equal(again.observed, spirals.observed) and torch.equal(again.mask, spirals.mask)
    with pytest.raises(ValueError, match=r"n_observed must be in \[1, 100\], got 101"):
        make_spirals(2, 101)


def test_kl_term_is_the_gaussian_closed_form() -> None:
    mean, logvar = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    q = torch.distributions.Normal(mean, (0.5 * logvar).exp())
    prior = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(mean))
    expected = torch.distributions.kl_divergence(q, prior).sum(-1)
    torch.testing.assert_close(gaussian_kl(mean, logvar), expected)


def test_kl_weight_scales_the_kl_term_of_the_loss() -> None:
    """loss = (β·KL − log-likelihood) summed over trajectories, per observed point."""
    spirals = make_spirals(6, 20, seed=1)
    values, mask = spirals.observed[:, :WINDOW].double(), spirals.mask[:, :WINDOW]
    times = spirals.times[:WINDOW].double()
    losses = []
    for beta in (1.0, 3.0):
        torch.manual_seed(0)  # the same weights and the same sample of z0
        model = LatentODE(kl_weight=beta, solver=SolverConfig(rtol=1e-6, atol=1e-6)).double()
        torch.manual_seed(1)
        elbo = model.elbo(values, mask, times)
        expected = (beta * elbo.kl - elbo.log_likelihood) * len(values) / mask.sum()
        torch.testing.assert_close(elbo.loss, expected)
        losses.append(elbo.loss)
    assert losses[1] > losses[0]


def test_masked_points_do_not_matter() -> None:
    """Changing unobserved values changes neither the encoding nor the ELBO's likelihood."""
    torch.manual_seed(0)
    model = LatentODE(solver=SolverConfig(rtol=1e-6, atol=1e-6)).double()
    spirals = make_spirals(6, 20, seed=1)
    values = spirals.observed[:, :WINDOW].double()
    mask, times = spirals.mask[:, :WINDOW], spirals.times[:WINDOW].double()
    scrambled = torch.where(mask[..., None], values, torch.randn_like(values) * 100)
    ode_rnn = LatentODE(ode_rnn=True).double()
    for encoder in (model.encoder, ode_rnn.encoder):
        torch.testing.assert_close(encoder(values, mask, times), encoder(scrambled, mask, times))
    assert ode_rnn.encoder.stats.nfe == 4 * (WINDOW - 1)  # one rk4 step per grid interval
    rnn = GapRNN().double()
    torch.testing.assert_close(rnn.loss(values, mask, times), rnn.loss(scrambled, mask, times))


def test_loss_falls_and_extrapolation_is_finite() -> None:
    torch.manual_seed(0)
    spirals = make_spirals(64, 30, seed=2)
    values, mask = spirals.observed[:, :WINDOW], spirals.mask[:, :WINDOW]
    model = LatentODE(solver=SolverConfig(rtol=1e-3, atol=1e-3))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        elbo = model.elbo(values, mask, spirals.times[:WINDOW])
        optimizer.zero_grad()
        elbo.loss.backward()
        optimizer.step()
        losses.append(elbo.loss.item())
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
    later = torch.linspace(0, 5, 7)  # far beyond the last observation at t < 1
    with torch.no_grad():
        predictions = model(values, mask, spirals.times[:WINDOW], predict_times=later)
    assert predictions.shape == (64, 7, 2) and torch.isfinite(predictions).all()


def test_the_encoder_sees_a_prefix_of_a_share_of_the_trajectories() -> None:
    torch.manual_seed(0)
    mask = torch.rand(400, WINDOW) < 0.3
    assert torch.equal(encoder_view(mask, 0.0), mask)
    seen = encoder_view(mask, 1.0)
    assert not (seen & ~mask).any()  # only observed points
    last_seen = torch.where(seen, torch.arange(WINDOW), -1).amax(dim=1)
    hidden = mask & ~seen
    first_hidden = torch.where(hidden, torch.arange(WINDOW), WINDOW).amin(dim=1)
    assert (last_seen < first_hidden).all()  # what is hidden is a suffix
    assert torch.equal(seen[:, : WINDOW // 4], mask[:, : WINDOW // 4])  # cut after a quarter
    assert hidden.any(dim=1).float().mean() > 0.9
    cropped = (encoder_view(mask, 0.5) != mask).any(dim=1).float().mean()
    assert 0.35 < cropped < 0.55  # about half (less: a cut after the last point hides nothing)


def test_train_and_eval_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = (("latent_ode", "0", "obs30-latent_ode", "0"), ("rnn", "0", "obs30-rnn", "0"),
            ("rnn", "1", "obs30-rnn-seed1", "0"), ("rnn", "1", "obs30-rnn-wd", "50"))  # fmt: skip
    for model, seed, name, decay in runs:
        args = ["latent", "train", "--model", model, "--epochs", "2", "--train-size", "40"]
        args += ["--test-size", "10", "--tol", "1e-3", "--out", str(tmp_path / name)]
        args += ["--seed", seed, "--prefix-prob", "0.5", "--weight-decay", decay]
        args += ["--kl-weight", "2"]
        assert main([*args, "--threads", "1"]) == 0
        checkpoint = str(tmp_path / name / "model.pt")
        assert main(["latent", "eval", "--checkpoint", checkpoint, "--test-size", "10"]) == 0
        result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        # (eval names a run by its config: model, n, KL weight and seed)
        weight = "-kl2" if model == "latent_ode" else ""
        assert result["run"] == f"obs30-{model}{weight}" + (f"-seed{seed}" if seed != "0" else "")
        assert result["spirals"] == 10
        assert result["rmse_interp"] > 0 and result["rmse_extrap"] > 0
    out = tmp_path / "results"
    args = ["latent", "report", "--runs", str(tmp_path), "--out", str(out), "--test-size", "10"]
    assert main([*args, "--threads", "1"]) == 0
    rows = json.loads((out / "latent_ode.json").read_text())
    assert {row["model"] for row in rows} == {"latent_ode", "rnn"}
    table = (out / "latent_ode.md").read_text()
    assert "| Latent ODE (field 20, lr 0.01, 2 epochs, KL weight 2, prefix 0.5) | 30 |" in table
    assert "| RNN with time gaps (lr 0.01, weight decay 50, 2 epochs, seed 1) | 30 |" in table
    # Decoupled decay 50 scales every weight by 1 - 50·lr at each of the 2 steps (1 batch per
    # epoch; cosine lr 0.01 then 0.005): by 0.5 · 0.75 = 0.375, besides Adam's steps of about
    # lr each, against the same seed's run without decay.
    norms = {}
    for name in ("obs30-rnn-seed1", "obs30-rnn-wd"):
        trained, _ = load_model(tmp_path / name / "model.pt", torch.device("cpu"))
        norms[name] = torch.cat([p.flatten() for p in trained.parameters()]).norm()
    assert 0.33 < norms["obs30-rnn-wd"] / norms["obs30-rnn-seed1"] < 0.42
    assert "| 0.1642 |" in table  # the paper's
    rnn = [row for row in rows if row["model"] == "rnn" and not row["weight_decay"]]
    rmse, extrap = [r["rmse"] for r in rnn], [r["rmse_extrap"] for r in rnn]
    assert (
        f"| RNN with time gaps (lr 0.01, 2 epochs) | 30 | 2 | {sum(rmse) / 2:.4f} | "
        f"{min(rmse):.4f}–{max(rmse):.4f} | 0.3937 | {sum(extrap) / 2:.4f} | "
        f"{min(extrap):.4f}–{max(extrap):.4f} |"
    ) in table
    for figure in ("latent_ode_spirals.png", "latent_ode_latents.png"):
        assert (out / figure).stat().st_size > 0
    assert (out / "latent" / "obs30-rnn-seed1.pt").exists()  # each model copied beside the table
    # runs kept under the output's latent/ folder stay where they are, not copied
    kept = tmp_path / "kept"
    (kept / "latent" / "runs").mkdir(parents=True)
    (tmp_path / "obs30-rnn-seed1").rename(kept / "latent" / "runs" / "obs30-rnn-seed1")
    args = ["latent", "report", "--runs", str(kept / "latent" / "runs"), "--out", str(kept)]
    assert main([*args, "--test-size", "10", "--threads", "1"]) == 0
    assert [p.name for p in (kept / "latent").iterdir()] == ["runs"]
    assert (kept / "latent_ode.md").exists()
    (kept_row,) = json.loads((kept / "latent_ode.json").read_text())
    assert kept_row["checkpoint"] == str(kept / "latent" / "runs" / "obs30-rnn-seed1" / "model.pt")


def test_the_figures_show_each_models_first_seed() -> None:
    """The report's figures draw the runs named obsN-MODEL or obsN-MODEL-seed0, one per (model,
    n); other seeds and recipes are in the table only."""
    from neuralode.paper.experiments.latent_report import _main_runs

    def run(model: str, obs: int) -> tuple[str, dict]:
        return model, {"model": model, "obs": obs}

    runs = {
        "obs30-rnn-seed0": run("rnn", 30),
        "obs30-rnn-seed1": run("rnn", 30),
        "obs50-latent_ode": run("latent_ode", 50),
        "obs50-latent_ode-f20-e1000-seed0": run("latent_ode", 50),
    }
    assert {key: value[0] for key, value in _main_runs(runs).items()} == {
        ("rnn", 30): "rnn",
        ("latent_ode", 50): "latent_ode",
    }
    assert _main_runs(runs)[("rnn", 30)][1] is runs["obs30-rnn-seed0"][1]  # (seed 0's config)
