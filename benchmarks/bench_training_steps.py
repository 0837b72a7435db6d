"""Where a training step's time goes: neuralode against torchdiffeq, and the floor of both.

Two models the paper trains, each one step (forward, loss, backward; the weights are not
updated, so every repeat solves the same problem with the same NFE) with the adjoint:

- the ODE-Net on MNIST (batch 128, dopri5 at rtol = atol = 1e-3), and
- a continuous normalizing flow as FFJORD trains it on 2-D data (concat-squash 64-64-64,
  batch 512, dopri5 at rtol = atol = 1e-5), with the exact trace and with Hutchinson's. The
  torchdiffeq model is written as FFJORD writes it: the dynamics take the divergence by
  autograd inside the field (one ``autograd.grad`` per dimension for the exact trace, one with
  the probes for Hutchinson's) and ``odeint_adjoint`` solves (z, logp).

For each library: the step's median time, its NFE forward and backward, and the **floor**: the
same number of the field's evaluations, timed alone (forward NFE × one evaluation without
autograd, as the adjoint's forward solve runs it; backward NFE × one evaluation with its
vector-Jacobian product in the state and the parameters, as each backward evaluation needs)
plus the rest of the model's forward and backward. What a step takes above its floor is the
solver's own work (step-size control, the augmented state's bookkeeping); at the floor, only a
faster field or fewer evaluations make the step faster.

Usage: ``python benchmarks/bench_training_steps.py [--budget 20] [--threads 1] [--out results]``
(needs torchdiffeq, the ``bench`` extra). Writes results/training_steps.{md,json}.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torchdiffeq
from torch import nn

from neuralode.nn.cnf import CNF, CNFDynamics, ConcatSquashMLP, standard_normal_log_prob
from neuralode.nn.solve import SolverConfig
from neuralode.paper.data.toy2d import sample_toy
from neuralode.paper.mnist_models import odenet

sys.path.insert(0, str(Path(__file__).parent))
from bench_solvers import CountingField, environment


@dataclass
class Step:
    """One library's training step of one case, measured."""

    case: str
    library: str
    step_ms: float
    nfe_forward: int
    nfe_backward: int
    floor_ms: float

    @property
    def above_floor_ms(self) -> float:
        return self.step_ms - self.floor_ms


def median_ms(fn: Callable[[], object], budget_s: float, least: int = 5) -> float:
    """Median wall time of ``fn`` (ms) over at least ``least`` calls and ``budget_s`` seconds."""
    fn()  # (untimed: first-call allocations)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < least or time.perf_counter() - start < budget_s:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def field_costs(
    field: Callable[[torch.Tensor, object], object],
    state: tuple[torch.Tensor, ...],
    params: list[torch.Tensor],
    budget_s: float,
) -> tuple[float, float]:
    """(ms of one evaluation without autograd, ms of one evaluation with its vector-Jacobian
    product in the state and the parameters) of ``field`` at ``state``."""
    t = torch.tensor(0.5)

    def plain() -> object:
        with torch.no_grad():
            return field(t, state if len(state) > 1 else state[0])

    def with_vjp() -> object:
        inputs = [s.detach().requires_grad_(True) for s in state]
        with torch.enable_grad():
            out = field(t, tuple(inputs) if len(inputs) > 1 else inputs[0])
            outs = out if isinstance(out, tuple) else (out,)
            cotangents = [torch.ones_like(o) for o in outs]
            return torch.autograd.grad(outs, inputs + params, cotangents, allow_unused=True)

    return median_ms(plain, budget_s / 2), median_ms(with_vjp, budget_s / 2)


def evaluations(counter: nn.Module, solve: Callable[[], object], step: Callable[[], object]
                ) -> tuple[int, int]:  # fmt: skip
    """(forward, backward) evaluations of a field that counts its ``calls``: the forward solve
    alone, then the whole step."""
    counter.calls = 0
    with torch.no_grad():
        solve()
    forward = counter.calls
    counter.calls = 0
    step()
    return forward, counter.calls - forward


# -- ODE-Net on MNIST --------------------------------------------------------------------------


def mnist_steps(budget_s: float) -> list[Step]:
    torch.manual_seed(0)
    images, labels = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))
    ours = odenet(gradient="adjoint")
    theirs = copy.deepcopy(ours)
    counter = CountingField(theirs.features.func)
    t = torch.tensor([0.0, 1.0])

    def our_step() -> object:
        ours.zero_grad()
        nn.functional.cross_entropy(ours(images), labels).backward()
        return ours.features.stats

    def their_solve(h: torch.Tensor) -> torch.Tensor:
        return torchdiffeq.odeint_adjoint(counter, h, t, rtol=1e-3, atol=1e-3, method="dopri5")[-1]

    def their_step() -> object:
        theirs.zero_grad()
        h = their_solve(theirs.downsampling(images))
        nn.functional.cross_entropy(theirs.head(h), labels).backward()
        return counter

    def rest() -> object:  # the model without its ODE block
        ours.zero_grad()
        out = ours.head(ours.downsampling(images))
        nn.functional.cross_entropy(out, labels).backward()
        return out

    stats = our_step()
    ours_nfe = (stats.nfe, stats.backward_nfe)
    with torch.no_grad():
        h = ours.downsampling(images)
    their_nfe = evaluations(counter, lambda: their_solve(h), their_step)
    field = ours.features.func
    plain, vjp = field_costs(field, (h,), list(field.parameters()), budget_s)
    rest_ms = median_ms(rest, budget_s / 2)
    case = "ODE-Net MNIST, adjoint, batch 128"
    floor = {library: rest_ms + nfe[0] * plain + nfe[1] * vjp
             for library, nfe in (("neuralode", ours_nfe), ("torchdiffeq", their_nfe))}  # fmt: skip
    steps = {"neuralode": (our_step, ours_nfe), "torchdiffeq": (their_step, their_nfe)}
    return [
        Step(case, library, median_ms(step, budget_s), *nfe, floor[library])
        for library, (step, nfe) in steps.items()
    ]


# -- FFJORD's CNF on 2-D data ------------------------------------------------------------------


class FFJORDDynamics(nn.Module):
    """FFJORD's ODEfunc for torchdiffeq: (z, logp) ↦ (f, −div f), the divergence by autograd
    inside the field (brute force: one ``autograd.grad`` per dimension; or Hutchinson's
    εᵀ ∂f/∂z ε with the probes ``noise``)."""

    def __init__(self, field: nn.Module, noise: torch.Tensor | None) -> None:
        super().__init__()
        self.field, self.noise = field, noise
        self.calls = 0

    def forward(self, t: torch.Tensor, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        self.calls += 1
        z = state[0]
        with torch.enable_grad():
            z = z if z.requires_grad else z.detach().requires_grad_(True)
            dz = self.field(t, z)
            if self.noise is None:
                divergence = sum(
                    torch.autograd.grad(dz[:, i].sum(), z, create_graph=True)[0][:, i]
                    for i in range(z.shape[1])
                )
            else:
                e_dzdz = torch.autograd.grad(dz, z, self.noise, create_graph=True)[0]
                divergence = (e_dzdz * self.noise).sum(1)
        return dz, -divergence


def cnf_steps(trace: str, budget_s: float) -> list[Step]:
    torch.manual_seed(0)
    x = torch.from_numpy(sample_toy("pinwheel", 512, np.random.default_rng(0))).float()
    field = ConcatSquashMLP(2)
    solver = SolverConfig(rtol=1e-5, atol=1e-5, gradient="adjoint")
    ours = CNF(copy.deepcopy(field), 2, trace=trace, noise="gaussian", solver=solver)
    noise = torch.randn_like(x) if trace == "hutchinson" else None
    theirs = FFJORDDynamics(copy.deepcopy(field), noise)
    t = torch.tensor([0.0, 1.0])

    def our_step() -> object:
        torch.manual_seed(1)  # (the same probes every repeat)
        ours.zero_grad()
        (-ours.log_prob(x).mean()).backward()
        return ours.stats

    def their_solve() -> tuple[torch.Tensor, torch.Tensor]:
        z, delta = torchdiffeq.odeint_adjoint(
            theirs, (x, x.new_zeros(512)), t, rtol=1e-5, atol=1e-5, method="dopri5",
            adjoint_params=tuple(theirs.parameters()),
        )  # fmt: skip
        return z[-1], delta[-1]

    def their_step() -> object:
        theirs.zero_grad()
        z, delta = their_solve()
        (-(standard_normal_log_prob(z) - delta).mean()).backward()
        return theirs

    stats = our_step()
    ours_nfe = (stats.nfe, stats.backward_nfe)
    their_nfe = evaluations(theirs, their_solve, their_step)
    dynamics = CNFDynamics(ours.field, noise, regularize=False)
    state = (x, x.new_zeros(512))
    params = list(ours.field.parameters())
    costs = {
        "neuralode": field_costs(dynamics, state, params, budget_s),
        "torchdiffeq": field_costs(theirs, state, list(theirs.parameters()), budget_s),
    }
    case = f"CNF (FFJORD), {trace} trace, adjoint, batch 512"
    rows = []
    for library, step, nfe in (("neuralode", our_step, ours_nfe),
                               ("torchdiffeq", their_step, their_nfe)):  # fmt: skip
        plain, vjp = costs[library]
        rows.append(Step(case, library, median_ms(step, budget_s), *nfe,
                         nfe[0] * plain + nfe[1] * vjp))  # fmt: skip
    return rows


# -- report ------------------------------------------------------------------------------------


def markdown(steps: list[Step], env: dict[str, object], budget: float) -> str:
    lines = [
        "# Where a training step's time goes: neuralode against torchdiffeq",
        "",
        f"- {env['date']}; {env['cpu']}; {env['threads']} thread(s); torch {env['torch']}, "
        f"torchdiffeq {env['torchdiffeq']}; `python benchmarks/bench_training_steps.py "
        f"--budget {budget:g}`",
        "- step: forward, loss and backward (no update), median wall time; NFE: evaluations of "
        "the field forward / in the adjoint's backward solve; floor: those evaluations timed "
        "alone (forward: without autograd; backward: with the vector-Jacobian product in the "
        "state and parameters) plus, for the ODE-Net, the rest of the model. ×torchdiffeq: "
        "torchdiffeq's step / this row's; best ×: torchdiffeq's step / this row's floor, the "
        "most a solver could gain at this NFE with this field",
        "",
        "| case | library | step (ms) | NFE fwd / bwd | floor (ms) | above floor (ms) | "
        "×torchdiffeq | best × |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    reference = {s.case: s.step_ms for s in steps if s.library == "torchdiffeq"}
    for s in steps:
        lines.append(
            f"| {s.case} | {s.library} | {s.step_ms:.1f} | {s.nfe_forward} / {s.nfe_backward} | "
            f"{s.floor_ms:.1f} | {s.above_floor_ms:.1f} | {reference[s.case] / s.step_ms:.2f} | "
            f"{reference[s.case] / s.floor_ms:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=20.0, help="seconds of timing per step")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--cases", default="mnist,exact,hutchinson",
                        help="comma-separated: mnist, exact, hutchinson")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("results"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    steps: list[Step] = []
    for case in args.cases.split(","):
        steps += mnist_steps(args.budget) if case == "mnist" else cnf_steps(case, args.budget)
        for s in steps[-2:]:
            print(f"{s.case:45s} {s.library:12s} {s.step_ms:9.1f} ms  NFE {s.nfe_forward}/"
                  f"{s.nfe_backward}  floor {s.floor_ms:9.1f} ms", flush=True)  # fmt: skip
    env = environment(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "training_steps.md").write_text(markdown(steps, env, args.budget))
    payload = {"environment": env, "steps": [asdict(s) for s in steps]}
    (args.out / "training_steps.json").write_text(json.dumps(payload, indent=2) + "\n")
    print((args.out / "training_steps.md").read_text())


if __name__ == "__main__":
    main()
