"""A small Neural ODE regression trained by the shared Trainer, for tests/test_distributed.py.

Run it under ``torchrun --nproc_per_node=N`` (or alone, as one process). Each global batch of 16
puts 8 easy samples (decay rate 0.1) before 8 stiff ones (rate 40), and the data is not shuffled:
with 2 ranks, rank 0 trains on easy samples and rank 1 on stiff ones, so an adaptive solver
takes different numbers of steps on the two ranks. Every rank writes ``rank{R}.pt`` with its
final parameters and the forward NFE of each of its steps.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from torch import nn

from neuralode.nn import NeuralODE, SolverConfig
from neuralode.paper.training import TensorBatches, Trainer, save_checkpoint, seed_everything
from neuralode.paper.training.distributed import join_process_group, leave_process_group

SAMPLES = 69  # batches of 16, 16, 16, 16 and 5: the last one splits 3 / 2 over two ranks


class DecayField(nn.Module):
    """State (y, k): dy/dt = -k y + net(y), dk/dt = 0, for y of 2 dimensions."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2))

    def forward(self, t: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        y, k = state[:, :2], state[:, 2:]
        return torch.cat([-k * y + self.net(y), torch.zeros_like(k)], dim=1)


class Regressor(nn.Module):
    def __init__(self, solver: SolverConfig) -> None:
        super().__init__()
        self.ode = NeuralODE(DecayField(), solver=solver)
        self.head = nn.Linear(2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.ode(x)[:, :2])


def dataset() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    y0 = torch.randn(SAMPLES, 2, generator=generator)
    stiff = (torch.arange(SAMPLES) % 16 >= 8).float()[:, None]
    x = torch.cat([y0, 0.1 + 39.9 * stiff], dim=1)
    target = y0.sum(dim=1, keepdim=True) * torch.exp(-x[:, 2:])
    return x, target


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--method", default="rk4")
    parser.add_argument("--gradient", default="backprop")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--skew-option", action="store_true", help="rank 1 gets another lr")
    args = parser.parse_args()

    torch.set_num_threads(1)
    seed_everything(0)
    distributed, device = join_process_group("cpu", timeout_s=60)
    lr = 0.05 + 0.01 * distributed.rank * args.skew_option
    distributed.check_same("options", {"lr": lr, "batch_size": args.batch_size})
    options = {"step_size": 0.05} if args.method == "rk4" else {}
    solver = SolverConfig(args.method, 1e-6, 1e-6, options=options, gradient=args.gradient)
    model = Regressor(solver)
    nfe: list[int] = []

    def loss_fn(model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        x, target = batch
        loss = nn.functional.mse_loss(model(x), target)
        nfe.append(model.ode.nfe_forward)
        return loss, {}

    x, target = dataset()
    trainer = Trainer(
        model,
        torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9),
        TensorBatches(x, target, batch_size=args.batch_size, shuffle=False),
        loss_fn,
        out_dir=args.out,
        epochs=args.epochs,
        device=device,
        checkpoint_every=float("inf"),
        distributed=distributed,
    )
    trainer.fit(resume=args.resume)
    state = {"model": model.state_dict(), "nfe": nfe}
    save_checkpoint(args.out / f"rank{distributed.rank}.pt", state)
    del trainer
    leave_process_group()


if __name__ == "__main__":
    main()
