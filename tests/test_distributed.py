"""Data-parallel training: two CPU processes on loopback with the gloo backend, under torchrun.

Every launch is bounded: the process group times out after 60 s and each launch after 180 s, so
a hang fails the test instead of stalling the suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from neuralode.paper.training import TensorBatches, load_checkpoint
from neuralode.paper.training.distributed import Distributed

WORKER = Path(__file__).with_name("ddp_worker.py")
MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
LAUNCH_TIMEOUT_S = 180


def launch(world_size: int, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run ``args`` (a script and its options, or ``-m module ...``) on ``world_size``
    processes with torchrun, or as one plain process for world size 1."""
    command = [sys.executable, *map(str, args)]
    if world_size > 1:
        launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world_size}"]
        command = [sys.executable, *launcher, *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        command, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S, env=env, check=False
    )


def run_worker(world_size: int, out: Path, *options: str) -> list[dict[str, Any]]:
    """Train the worker's model; each rank's saved parameters and per-step NFE."""
    result = launch(world_size, WORKER, "--out", out, *options)
    assert result.returncode == 0, result.stderr[-3000:]
    return [load_checkpoint(out / f"rank{rank}.pt") for rank in range(world_size)]


def assert_parameters(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], exact: bool):
    assert a.keys() == b.keys()
    for name in a:
        if exact:
            assert torch.equal(a[name], b[name]), name
        else:
            torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-6, msg=name)


def epoch_losses(out: Path) -> list[float]:
    lines = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return [line["train"]["loss"] for line in lines if line["kind"] == "epoch"]


def test_two_ranks_train_as_one_process_on_the_global_batch(tmp_path: Path) -> None:
    """Fixed-step solves do not couple samples, so DDP on two halves of each global batch (the
    last one split 3 / 2) must follow the single-process run up to float rounding."""
    ranks = run_worker(2, tmp_path / "two")
    alone = run_worker(1, tmp_path / "one")
    assert_parameters(ranks[0]["model"], ranks[1]["model"], exact=True)
    assert_parameters(ranks[0]["model"], alone[0]["model"], exact=False)
    assert epoch_losses(tmp_path / "two") == pytest.approx(epoch_losses(tmp_path / "one"))
    log = json.loads((tmp_path / "two" / "log.jsonl").read_text().splitlines()[-1])
    assert log["world_size"] == 2
    parameters = sum(p.numel() for p in ranks[0]["model"].values())
    assert log["gradient_bytes_per_step"] == 4 * parameters


@pytest.mark.parametrize(
    "gradient",  # (12 s each: the adjoint in the default suite)
    ["adjoint", pytest.param("backprop", marks=pytest.mark.slow),
     pytest.param("checkpoint", marks=pytest.mark.slow)],
)  # fmt: skip
def test_adaptive_solves_with_different_step_counts_do_not_hang(
    tmp_path: Path, gradient: str
) -> None:
    ranks = run_worker(2, tmp_path, "--method", "dopri5", "--gradient", gradient)
    nfe = [torch.tensor(rank["nfe"], dtype=torch.float) for rank in ranks]
    assert (nfe[1].mean() > 3 * nfe[0].mean()).item()  # rank 1 holds the stiff samples
    assert_parameters(ranks[0]["model"], ranks[1]["model"], exact=True)
    log = json.loads((tmp_path / "log.jsonl").read_text().splitlines()[-1])
    last_epoch = torch.stack([nfe[0][-5:], nfe[1][-5:]])
    assert log["nfe_forward"] == pytest.approx(last_epoch.mean().item())  # mean over the ranks
    assert log["nfe_forward_max"] == pytest.approx(last_epoch.max(dim=0).values.mean().item())


@pytest.mark.parametrize(("first", "then"), [pytest.param(2, 1, marks=pytest.mark.slow), (1, 2)])
def test_checkpoint_resumes_at_another_world_size(tmp_path: Path, first: int, then: int) -> None:
    """Epoch 1 on ``first`` ranks, epoch 2 resumed on ``then`` = both epochs on one process."""
    run_worker(first, tmp_path / "split", "--epochs", "1")
    resumed = run_worker(then, tmp_path / "split", "--epochs", "2", "--resume")
    alone = run_worker(1, tmp_path / "alone", "--epochs", "2")
    assert_parameters(resumed[0]["model"], alone[0]["model"], exact=False)
    assert len(epoch_losses(tmp_path / "split")) == 2


def test_a_batch_size_the_ranks_cannot_share_fails_at_once(tmp_path: Path) -> None:
    result = launch(2, WORKER, "--out", tmp_path, "--batch-size", "15")
    assert result.returncode != 0
    assert "the global batch size 15 is not divisible by the world size 2" in result.stderr


def test_ranks_launched_with_different_options_fail_at_once(tmp_path: Path) -> None:
    result = launch(2, WORKER, "--out", tmp_path, "--skew-option")
    assert result.returncode != 0
    assert "the ranks were launched with different options: lr is 0.05 on rank 0" in (result.stderr)


TRAIN_COMMANDS = {
    "mnist": ["mnist", "train", "--limit", "64", "--test-limit", "50", "--batch-size", "32"],
    "cnf": ["cnf", "train", "--data", "moons", "--iterations", "4", "--eval-every", "2"],
    "latent": ["latent", "train", "--epochs", "2", "--train-size", "40", "--batch-size", "20"],
}


@pytest.mark.parametrize(
    "experiment",  # (13 s each: mnist in the default suite, the others slow)
    [
        e if e == "mnist" else pytest.param(e, marks=pytest.mark.slow)
        for e in sorted(TRAIN_COMMANDS)
    ],
)
def test_every_train_command_runs_under_torchrun(tmp_path: Path, experiment: str) -> None:
    options = ["--epochs", "1", "--data-dir", MNIST] if experiment == "mnist" else []
    if experiment == "cnf":
        options = ["--eval-samples", "100"]
    if experiment == "latent":
        options = ["--test-size", "10"]
    command = ["-m", "neuralode", *TRAIN_COMMANDS[experiment], *options]
    result = launch(2, *command, "--out", tmp_path, "--threads", "1", "--dist-timeout", "60")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("writing to") == 1  # only rank 0 prints
    epochs = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert epochs[-1]["world_size"] == 2
    assert (tmp_path / "model.pt").exists()


def test_shards_cover_the_batch_and_weigh_the_loss() -> None:
    x = torch.arange(5.0)[:, None]
    times = torch.linspace(0, 1, 3)  # not per-sample: passes through whole
    shards = [Distributed(rank, 2).shard((x, times)) for rank in range(2)]
    assert torch.equal(torch.cat([shard[0][0] for shard in shards]), x)
    assert all(torch.equal(shard[0][1], times) for shard in shards)
    assert [shard[1] for shard in shards] == [3 * 2 / 5, 2 * 2 / 5]
    with pytest.raises(ValueError, match="a batch of 1 samples cannot be split over 2 ranks"):
        Distributed(0, 2).shard((x[:1],))


def test_a_single_process_needs_no_process_group() -> None:
    data = TensorBatches(torch.zeros(3, 1), batch_size=3)
    Distributed().check_batch_size(data.batch_size)
    assert Distributed().shard((torch.zeros(3, 1),))[1] == 1.0
