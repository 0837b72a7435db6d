"""The shared Trainer: learning, logs, checkpoints, and bitwise-exact resumption."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from neuralode.errors import SolverError
from neuralode.nn import ConcatLinear, NeuralODE, SolverConfig
from neuralode.paper.training import (
    CheckpointError,
    DivergenceError,
    FitResult,
    ResumeError,
    RunFolderError,
    TensorBatches,
    Trainer,
    batch_size,
    capture_rng_state,
    load_checkpoint,
    move_to_device,
    resolve_device,
    restore_rng_state,
    save_checkpoint,
    seed_everything,
)
from neuralode.paper.training.divergence import NonFiniteModelError

BATCHES_PER_EPOCH = 7  # 64 samples in batches of 10: the last one has 4
TIMING_FIELDS = ("seconds", "eval_seconds", "samples_per_s")


def regression_data(seed: int = 0) -> TensorBatches:
    generator = torch.Generator().manual_seed(1234)
    x = torch.randn(64, 4, generator=generator)
    y = x @ torch.randn(4, 1, generator=generator) + 0.1 * torch.randn(64, 1, generator=generator)
    return TensorBatches(x, y, batch_size=10, seed=seed)


def noisy_mse(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[Any, Any]:
    """MSE on inputs jittered from the global RNG: a resumed run must restore that RNG."""
    x, y = batch
    prediction = model(x + 0.01 * torch.randn_like(x))
    return nn.functional.mse_loss(prediction, y), {"mae": (prediction - y).abs().mean().item()}


def make_trainer(
    out_dir: Path, data: Any = None, init_seed: int = 0, epochs: int = 2, **kwargs: Any
) -> Trainer:
    """An MLP regressor, SGD with momentum and a per-step StepLR: all state resume must restore."""
    torch.manual_seed(init_seed)
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=4, gamma=0.7)
    return Trainer(
        model,
        optimizer,
        data if data is not None else regression_data(),
        noisy_mse,
        out_dir=out_dir,
        epochs=epochs,
        scheduler=scheduler,
        scheduler_interval="step",
        evaluate=lambda m: {"weight_norm": sum(p.norm().item() for p in m.parameters())},
        config={"experiment": "regression", "lr": 0.05},
        **kwargs,
    )


class StopAt:
    """A data source that calls ``action`` just before yielding the batch of global step
    ``step`` (1-based): raising there interrupts the run between two steps."""

    def __init__(self, data: TensorBatches, step: int, action: Callable[[], None]) -> None:
        self.data, self.step, self.action = data, step, action
        self.batch_size = data.batch_size

    def __len__(self) -> int:
        return len(self.data)

    def batches(self, epoch: int, start: int = 0) -> Iterator[Any]:
        for i, batch in enumerate(self.data.batches(epoch, start), start):
            if epoch * len(self) + i + 1 == self.step:
                self.action()
            yield batch


def raise_(error: BaseException) -> Callable[[], None]:
    def action() -> None:
        raise error

    return action


def read_log(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def without_timings(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in records]


def assert_same_run(a: Trainer, b: Trainer, result_a: FitResult, result_b: FitResult) -> None:
    """Bitwise-equal parameters and optimizer state, equal histories and logs (timings aside)."""
    state_a, state_b = a.model.state_dict(), b.model.state_dict()
    assert state_a.keys() == state_b.keys()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    momenta_a = [s["momentum_buffer"] for s in a.optimizer.state.values()]
    momenta_b = [s["momentum_buffer"] for s in b.optimizer.state.values()]
    assert all(torch.equal(m, n) for m, n in zip(momenta_a, momenta_b, strict=True))
    assert a.scheduler.state_dict() == b.scheduler.state_dict()
    assert without_timings(result_a.history) == without_timings(result_b.history)
    assert without_timings(read_log(a.log_path)) == without_timings(read_log(b.log_path))


def test_learns_and_writes_log_checkpoint_and_model(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, epochs=4, log_every=3)
    result = trainer.fit()

    assert result.completed and result.stopped_by is None
    losses = [record["train"]["loss"] for record in result.history]
    assert losses[-1] < 0.5 * losses[0]

    records = read_log(trainer.log_path)
    epochs = [r for r in records if r["kind"] == "epoch"]
    steps = [r for r in records if r["kind"] == "step"]
    assert epochs == result.history
    assert [r["epoch"] for r in epochs] == [1, 2, 3, 4]
    assert [r["step"] for r in steps] == list(range(3, 4 * BATCHES_PER_EPOCH + 1, 3))
    for r in epochs:
        assert r.keys() >= {"lr", "seconds", "samples_per_s", "nfe_forward", "nfe_backward"}
        assert r["train"].keys() == {"loss", "mae"} and r["eval"].keys() == {"weight_norm"}
        assert r["seconds"] > 0 and r["samples_per_s"] > 0
        assert r["nfe_forward"] == r["nfe_backward"] == 0  # no NeuralODE in this model

    checkpoint = load_checkpoint(trainer.checkpoint_path)
    assert (checkpoint["epoch"], checkpoint["batch"]) == (4, 0)
    assert checkpoint["global_step"] == 4 * BATCHES_PER_EPOCH
    assert checkpoint["config"] == {"experiment": "regression", "lr": 0.05}
    final = load_checkpoint(trainer.model_path)
    assert all(torch.equal(final["model"][k], v) for k, v in trainer.model.state_dict().items())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "log.jsonl", "model.pt"]


def test_keyboard_interrupt_then_resume_is_bitwise_identical(tmp_path: Path) -> None:
    a = make_trainer(tmp_path / "a")
    result_a = a.fit()

    stop = StopAt(regression_data(), step=10, action=raise_(KeyboardInterrupt()))
    interrupted = make_trainer(tmp_path / "b", data=stop).fit()
    assert interrupted.stopped_by == "KeyboardInterrupt" and len(interrupted.history) == 1
    checkpoint = load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert (checkpoint["epoch"], checkpoint["batch"], checkpoint["global_step"]) == (1, 2, 9)
    assert not (tmp_path / "b" / "model.pt").exists()

    b = make_trainer(tmp_path / "b", init_seed=99)  # a different init: all of it must be loaded
    result_b = b.fit(resume=True)
    assert result_b.completed
    assert_same_run(a, b, result_a, result_b)


def test_crash_then_resume_from_epoch_checkpoint_is_identical(tmp_path: Path) -> None:
    a = make_trainer(tmp_path / "a", log_every=1)
    result_a = a.fit()

    crash = StopAt(regression_data(), step=12, action=raise_(RuntimeError("node lost")))
    with pytest.raises(RuntimeError, match="node lost"):
        make_trainer(tmp_path / "b", data=crash, log_every=1, checkpoint_every=math.inf).fit()

    b = make_trainer(tmp_path / "b", init_seed=99, log_every=1)
    result_b = b.fit(resume=True)  # from the end of epoch 1: the log's step lines are cut back
    assert_same_run(a, b, result_a, result_b)


def test_sigterm_with_checkpoint_every_step_then_resume_is_identical(tmp_path: Path) -> None:
    a = make_trainer(tmp_path / "a")
    result_a = a.fit()

    handler = signal.getsignal(signal.SIGTERM)
    sigterm = StopAt(regression_data(), step=5, action=lambda: os.kill(os.getpid(), signal.SIGTERM))
    stopped = make_trainer(tmp_path / "b", data=sigterm, checkpoint_every=0).fit()
    assert stopped.stopped_by == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is handler
    checkpoint = load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert (checkpoint["epoch"], checkpoint["batch"]) == (0, 5)  # the step in flight finished

    b = make_trainer(tmp_path / "b", init_seed=99, checkpoint_every=0)
    assert_same_run(a, b, result_a, b.fit(resume=True))


def test_neural_ode_nfe_is_logged(tmp_path: Path) -> None:
    torch.manual_seed(0)
    solver = SolverConfig(method="rk4", options={"step_size": 0.5}, gradient="adjoint")
    ode = NeuralODE(ConcatLinear(4, 4), solver=solver)
    model = nn.Sequential(ode, nn.Linear(4, 1))
    trainer = Trainer(
        model,
        torch.optim.Adam(model.parameters(), lr=1e-2),
        regression_data(),
        noisy_mse,
        out_dir=tmp_path,
        epochs=1,
        log_every=1,
    )
    record = trainer.fit().history[0]
    nfe = (ode.nfe_forward, ode.nfe_backward)  # the last step's; fixed steps: every step's
    assert nfe[0] > 0 and nfe[1] > 0  # the adjoint solve counts as backward work
    assert (record["nfe_forward"], record["nfe_backward"]) == nfe
    steps = [r for r in read_log(trainer.log_path) if r["kind"] == "step"]
    assert len(steps) == BATCHES_PER_EPOCH
    assert all((r["nfe_forward"], r["nfe_backward"]) == nfe for r in steps)


def test_save_checkpoint_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"x": torch.arange(3)})
    save_checkpoint(path, {"x": torch.arange(4)})
    with pytest.raises(Exception, match="pickle"):
        save_checkpoint(path, {"x": lambda: None})  # fails mid-write
    assert torch.equal(load_checkpoint(path)["x"], torch.arange(4))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_rng_state_round_trip() -> None:
    seed_everything(3)
    state = capture_rng_state()
    first = (random.random(), np.random.rand(), torch.rand(2))
    restore_rng_state(state)
    second = (random.random(), np.random.rand(), torch.rand(2))
    assert first[:2] == second[:2] and torch.equal(first[2], second[2])


def test_tensor_batches_order_depends_on_seed_and_epoch_only() -> None:
    data = TensorBatches(torch.arange(25), batch_size=10, seed=7)
    epoch1 = [b for (b,) in data.batches(1)]
    assert len(data) == 3 and [len(b) for b in epoch1] == [10, 10, 5]
    assert torch.equal(torch.cat(epoch1).sort().values, torch.arange(25))
    torch.manual_seed(123)  # the global RNG plays no part
    assert all(
        torch.equal(b, c) for (b,), c in zip(data.batches(1, start=1), epoch1[1:], strict=True)
    )
    assert not torch.equal(next(data.batches(0))[0], epoch1[0])


def test_batches_move_to_device_and_count_samples() -> None:
    batch = {"x": torch.zeros(5, 2), "extra": [torch.ones(5), (torch.ones(()), "tag")]}
    moved = move_to_device(batch, torch.device("cpu"))
    assert moved["extra"][1][1] == "tag" and isinstance(moved["extra"][1], tuple)
    assert batch_size(batch) == 5 and batch_size(((torch.ones(()),), torch.ones(3, 1))) == 3
    with pytest.raises(ValueError):
        batch_size({"t": torch.ones(())})


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            resolve_device("cuda:0")


class PoisonAt:
    """A data source whose batches at the given global steps (1-based) carry NaN inputs."""

    def __init__(self, data: TensorBatches, steps: set[int]) -> None:
        self.data, self.steps = data, steps
        self.batch_size = data.batch_size

    def __len__(self) -> int:
        return len(self.data)

    def batches(self, epoch: int, start: int = 0) -> Iterator[Any]:
        for i, (x, y) in enumerate(self.data.batches(epoch, start), start):
            if epoch * len(self) + i + 1 in self.steps:
                x = torch.full_like(x, math.nan)
            yield x, y


def test_non_finite_batches_are_skipped_counted_and_never_reach_the_optimizer(
    tmp_path: Path,
) -> None:
    trainer = make_trainer(tmp_path, data=PoisonAt(regression_data(), {3, 4, 9}))
    result = trainer.fit()
    assert result.completed
    assert [r["skipped"] for r in result.history] == [2, 1]
    assert all(math.isfinite(r["train"]["loss"]) for r in result.history)
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    # the scheduler stepped only for the 14 - 3 batches that reached the optimizer
    assert trainer.scheduler.state_dict()["last_epoch"] == 2 * BATCHES_PER_EPOCH - 3


def test_bad_batches_in_a_row_stop_the_run_naming_step_loss_and_checkpoint(
    tmp_path: Path,
) -> None:
    poison = PoisonAt(regression_data(), set(range(9, 15)))  # epoch 2 from its second batch
    trainer = make_trainer(tmp_path, data=poison, max_bad_batches=3)
    with pytest.raises(DivergenceError) as caught:
        trainer.fit()
    error = caught.value
    assert error.step == 11 and error.checkpoint == trainer.checkpoint_path
    message = str(error)
    assert "step 11" in message and "3 bad batches in a row" in message
    assert f"last finite loss {error.last_loss:.6g}" in message
    assert str(trainer.checkpoint_path) in message
    assert load_checkpoint(trainer.checkpoint_path)["epoch"] == 1  # the last good one
    assert not trainer.model_path.exists()


def test_exploding_loss_counts_as_bad(tmp_path: Path) -> None:
    """A real divergence: SGD with a huge learning rate makes the loss explode while finite."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))
    trainer = Trainer(
        model,
        torch.optim.SGD(model.parameters(), lr=1e4),
        regression_data(),
        noisy_mse,
        out_dir=tmp_path,
        epochs=3,
        max_loss_growth=1e3,
    )
    with pytest.raises(DivergenceError, match="exceeds 1000 times the first loss"):
        trainer.fit()
    assert not trainer.model_path.exists()


def test_non_finite_parameters_are_never_written(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, epochs=1)
    with torch.no_grad():
        trainer.model[0].weight[0, 0] = math.inf  # the optimizer cannot undo an Inf weight
    with pytest.raises(DivergenceError, match="parameters are not finite") as caught:
        trainer.fit()
    assert "0.weight" in str(caught.value)
    assert not trainer.checkpoint_path.exists() and not trainer.model_path.exists()
    with pytest.raises(NonFiniteModelError, match=r"model\.pt"):
        trainer.checkpointer.save_model({"model": trainer.model.state_dict(), "config": {}})


def test_solver_failure_is_reported_as_divergence_with_its_detail(tmp_path: Path) -> None:
    solver = SolverConfig(method="dopri5", options={"max_num_steps": 2})
    model = nn.Sequential(NeuralODE(ConcatLinear(4, 4), solver=solver), nn.Linear(4, 1))
    trainer = Trainer(
        model,
        torch.optim.Adam(model.parameters(), lr=1e-2),
        regression_data(),
        lambda m, b: (nn.functional.mse_loss(m(b[0] * 50), b[1]), {}),
        out_dir=tmp_path,
        epochs=1,
    )
    with pytest.raises(DivergenceError, match="the ODE solver failed") as caught:
        trainer.fit()
    assert isinstance(caught.value.__cause__, SolverError)
    assert str(caught.value.__cause__) in str(caught.value).splitlines()[1]


def test_resume_refuses_changed_options_and_says_a_run_finished(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_trainer(tmp_path, epochs=1).fit()
    changed = make_trainer(tmp_path, epochs=1)
    changed.config = {"experiment": "regression", "lr": 0.5, "device": "cuda"}
    changed.may_change = frozenset({"device"})
    with pytest.raises(ResumeError, match=r"--lr 0\.5 \(the run's: 0\.05\)") as caught:
        changed.fit(resume=True)
    assert "device" not in str(caught.value)
    capsys.readouterr()
    again = make_trainer(tmp_path, epochs=1)
    assert again.fit(resume=True).completed
    assert "already finished its 1 epochs" in capsys.readouterr().out


def test_start_removes_stale_temporaries_and_checks_the_folder(tmp_path: Path) -> None:
    stale = tmp_path / "run" / ".checkpoint.pt.k1ll3d.tmp"
    stale.parent.mkdir()
    stale.write_bytes(b"half a checkpoint")
    make_trainer(tmp_path / "run", epochs=1).fit(resume=True)
    assert not stale.exists()

    blocker = tmp_path / "file"
    blocker.write_text("")
    trainer = make_trainer(blocker / "run", data=StopAt(regression_data(), 1, pytest.fail))
    with pytest.raises(RunFolderError, match="cannot be written"):
        trainer.fit()


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"", "is empty"),
        (b"\x80\x04not really a pickle" * 10, "not a PyTorch checkpoint"),
        ("truncated", "truncated or corrupt"),
        ("bare", "bare state_dict"),
        ("model.pt", "lacks 'optimizer'"),
    ],
)
def test_a_bad_checkpoint_is_named_with_its_problem(
    tmp_path: Path, content: bytes | str, words: str
) -> None:
    source = make_trainer(tmp_path / "good", epochs=1)
    source.fit()
    path = tmp_path / "run" / "checkpoint.pt"
    path.parent.mkdir()
    if content == "truncated":
        path.write_bytes(source.checkpoint_path.read_bytes()[:500])
    elif content == "bare":
        torch.save(source.model.state_dict(), path)
    elif content == "model.pt":
        path.write_bytes(source.model_path.read_bytes())
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=words) as caught:
        make_trainer(path.parent, epochs=1).fit(resume=True)
    assert str(path) in str(caught.value)


def test_kill_9_during_a_checkpoint_write_then_resume_equals_an_uninterrupted_run(
    tmp_path: Path,
) -> None:
    """A real SIGKILL while checkpoint.pt is being written (the second time, after step 2):
    the temporary file is left behind, removed at the next start, and the resumed run ends
    bitwise equal to an uninterrupted one."""
    a = make_trainer(tmp_path / "a")
    result_a = a.fit()

    run = tmp_path / "b"
    marker = tmp_path / "writing"
    script = f"""
import os, sys, time
sys.path.insert(0, {str(Path(__file__).parent)!r})
from pathlib import Path
from neuralode.paper.training import checkpoint
import test_trainer
saves = []
real_fsync = os.fsync
def fsync(fd):
    saves.append(fd)
    if len(saves) == 3:  # epoch 1 written (file + folder); stuck in the second write
        Path({str(marker)!r}).write_text("")
        time.sleep(600)
    real_fsync(fd)
checkpoint.os.fsync = fsync
test_trainer.make_trainer(Path({str(run)!r}), checkpoint_every=0).fit()
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    process = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        for _ in range(600):
            if marker.exists() or process.poll() is not None:
                break
            time.sleep(0.1)
        assert marker.exists(), "the run never reached its second checkpoint write"
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert list(run.glob(".checkpoint.pt.*.tmp"))
    assert load_checkpoint(run / "checkpoint.pt")["global_step"] == 1

    b = make_trainer(run, init_seed=99, checkpoint_every=0)
    result_b = b.fit(resume=True)
    assert not list(run.glob(".*.tmp"))
    assert_same_run(a, b, result_a, result_b)
