"""Speed of neuralode (eager and compiled) against torchdiffeq, torchode and diffrax (JAX).

One process, one run, same machine and thread count for every library. Each case builds its
contenders (same weights, initial states, method dopri5, tolerances, output times), calls
each once untimed (for the compiled ones and JAX: the compile time, reported), counts its
function evaluations in an untimed solve, then times them round-robin: per round, one block
of back-to-back calls of each contender (~20 ms), so that load from other processes hits all
alike. Times are medians over rounds.

Cases: the small MLP field (2→64→2, tanh) at batch 1 and 256; a 64-channel conv field on 7×7
maps (batch 32); Van der Pol with μ spread from 0.1 to 10 over 256 samples, shared against
per-sample steps; forward + backward of the MLP at batch 256 in each gradient mode; one
ODE-Net MNIST training step (batch 128).

Usage: ``python benchmarks/bench_speed.py [--quick] [--threads 1] [--out results]``
(``pip install -e ".[bench,bench-jax]"`` for the peers; a peer that is not installed is left
out of the table.)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

import neuralode
from neuralode.paper.mnist_models import odenet

sys.path.insert(0, str(Path(__file__).parent))
from bench_solvers import ConvField, CountingField, MLPField, environment
from diffrax_peer import configure_jax, diffrax_available, diffrax_solver, jax_params

try:
    import torchdiffeq
except ImportError:
    torchdiffeq = None
try:
    import torchode
except ImportError:
    torchode = None

TOL = 1e-6
COMPILE = {"compile": True}


@dataclass
class Contender:
    """One library's way of doing a case's work: ``run`` is timed; ``count`` (untimed) gives
    (NFE in sample evaluations, NFE in batch evaluations, steps)."""

    library: str
    variant: str
    run: Callable[[], object]
    count: Callable[[], tuple[float, float, float | None]]


@dataclass
class Row:
    case: str
    library: str
    variant: str
    time_ms: float
    first_call_s: float
    nfe_samples: float
    nfe_batch: float
    steps: float | None
    rounds: int
    per_nfe_us: float = 0.0
    vs: dict[str, float] = dataclasses.field(default_factory=dict)


# -- contenders ------------------------------------------------------------------------------


def neuralode_forward(func: nn.Module, y0: torch.Tensor, t: torch.Tensor, options: dict,
                      variant: str, lib: ModuleType = neuralode) -> Contender:  # fmt: skip
    """A forward solve by ``lib`` (neuralode, or an older checkout of it loaded under another
    name: see compare_in_process.py)."""

    def run() -> torch.Tensor:
        with torch.no_grad():
            return lib.odeint(func, y0, t, rtol=TOL, atol=TOL, options=options)

    def count() -> tuple[float, float, float | None]:
        with torch.no_grad():
            _, stats = lib.odeint(func, y0, t, rtol=TOL, atol=TOL, options=options,
                                  return_stats=True)  # fmt: skip
        return _neuralode_counts(stats, y0.shape[0])

    return Contender(lib.__name__, variant, run, count)


def _neuralode_counts(stats: neuralode.SolverStats, batch: int) -> tuple[float, float, float]:
    if stats.per_sample is not None:
        per = stats.per_sample
        steps = float((per.n_accepted + per.n_rejected).max())
        return float(per.nfe.sum()), float(stats.nfe), steps
    return float(stats.nfe * batch), float(stats.nfe), float(stats.n_steps)


def raw_field(func: nn.Module, y0: torch.Tensor, calls: int) -> Contender:
    """``calls`` back-to-back raw calls of the field: the floor of any solver with that NFE."""
    t0 = torch.zeros(())

    def run() -> None:
        with torch.no_grad():
            for _ in range(calls):
                func(t0, y0)

    return Contender("field", f"{calls} raw calls", run, lambda: (calls * y0.shape[0], calls, None))


def compiled_call_floor(y0: torch.Tensor) -> Contender:
    """One call of a torch.compile'd ``y + 1`` (inductor, C++ wrapper): what any compiled
    call costs before it does any work."""
    plus_one = torch.compile(lambda y: y + 1, fullgraph=True, options={"cpp_wrapper": True})

    def run() -> object:
        with torch.no_grad():
            return plus_one(y0)

    return Contender("torch.compile", "y + 1", run, lambda: (0.0, 0.0, None))


def torchdiffeq_forward(func: nn.Module, y0: torch.Tensor, t: torch.Tensor) -> Contender:
    def run() -> torch.Tensor:
        with torch.no_grad():
            return torchdiffeq.odeint(func, y0, t, rtol=TOL, atol=TOL, method="dopri5")

    def count() -> tuple[float, float, float | None]:
        counter = CountingField(func)
        with torch.no_grad():
            torchdiffeq.odeint(counter, y0, t, rtol=TOL, atol=TOL, method="dopri5")
        return float(counter.calls * y0.shape[0]), float(counter.calls), None

    return Contender("torchdiffeq", "shared steps", run, count)


def torchode_solver(func: nn.Module, y0: torch.Tensor) -> tuple[Callable, Callable]:
    """torchode's dopri5 with I control, built once; each sample its own steps. Returns
    (solve(y0) → solution, flat field)."""
    batch = y0.shape[0]

    def flat(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return func(t, y.view_as(y0)).reshape(batch, -1)

    term = torchode.ODETerm(flat)
    step = torchode.Dopri5(term=term)
    controller = torchode.IntegralController(atol=TOL, rtol=TOL, term=term)
    solver = torchode.AutoDiffAdjoint(step, controller)

    def solve(y: torch.Tensor, t: torch.Tensor) -> object:
        problem = torchode.InitialValueProblem(
            y0=y.reshape(batch, -1), t_eval=t.expand(batch, t.numel())
        )
        return solver.solve(problem)

    return solve, flat


def torchode_forward(func: nn.Module, y0: torch.Tensor, t: torch.Tensor) -> Contender:
    solve, _ = torchode_solver(func, y0)

    def run() -> object:
        with torch.no_grad():
            return solve(y0, t)

    def count() -> tuple[float, float, float | None]:
        with torch.no_grad():
            stats = solve(y0, t).stats
        steps = stats["n_steps"]
        return float(stats["n_f_evals"].sum()), float(stats["n_f_evals"].max()), float(steps.max())

    return Contender("torchode", "per-sample steps", run, count)


# -- diffrax ---------------------------------------------------------------------------------


def diffrax_forward(
    field: str,
    module: nn.Module,
    y0: torch.Tensor,
    t: torch.Tensor,
    per_sample: bool = False,
    gradient: str | None = None,
) -> Contender:
    """diffrax's Dopri5 + PID controller (I control: default coefficients) on the same weights,
    the whole solve jit-compiled. ``gradient``: None (forward only), "recursive checkpoint"
    (diffrax's default: backprop with checkpointing) or "backsolve" (the adjoint)."""
    import diffrax
    import jax
    import jax.numpy as jnp

    params = jax_params(module)
    y0_j, ts = jnp.asarray(y0.numpy()), jnp.asarray(t.numpy())
    adjoint = {
        None: diffrax.RecursiveCheckpointAdjoint(),
        "recursive checkpoint": diffrax.RecursiveCheckpointAdjoint(),
        "backsolve": diffrax.BacksolveAdjoint(),
    }[gradient]
    solve = diffrax_solver(field, ts, rtol=TOL, atol=TOL, adjoint=adjoint)

    if per_sample:  # one solve per sample (only Van der Pol: its μ is per sample)
        batched = jax.vmap(lambda p, y: solve(p, y[None]), in_axes=({"mu": 0}, 0))
        solution = jax.jit(batched)
    else:
        solution = jax.jit(solve)
    if gradient is None:
        fn = jax.jit(lambda p, y: solution(p, y).ys)
    else:
        fn = jax.jit(jax.grad(lambda p, y: jnp.sum(solution(p, y).ys[-1] ** 2)))

    def run() -> object:
        return jax.block_until_ready(fn(params, y0_j))

    def count() -> tuple[float, float, float | None]:
        stats = solution(params, y0_j).stats
        steps = jnp.asarray(stats["num_steps"])
        # Dopri5 is FSAL: 6 evaluations per attempted step, plus f(t0) and the one extra
        # evaluation of the starting-step heuristic.
        per_row = 6 * steps + 2
        batch = y0.shape[0]
        if per_sample:
            return float(per_row.sum()), float(per_row.max()), float(steps.max())
        return float(per_row * batch), float(per_row), float(steps)

    variant = "per-sample steps (vmap)" if per_sample else "shared steps"
    if gradient is not None:
        variant = gradient
    return Contender("diffrax", variant, run, count)


class VanDerPol(nn.Module):
    """Van der Pol oscillators, sample b with its own μ_b: states (B, 2)."""

    def __init__(self, mu: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mu", mu[:, None])

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, v = y[:, :1], y[:, 1:]
        return torch.cat([v, self.mu * (1 - x * x) * v - x], dim=1)


# -- gradients and a training step -------------------------------------------------------------


def neuralode_gradient(func: nn.Module, y0: torch.Tensor, t: torch.Tensor, gradient: object,
                       options: dict, variant: str, lib: ModuleType = neuralode
                       ) -> Contender:  # fmt: skip
    """Forward and backward through a solve by ``lib`` (see :func:`neuralode_forward`) in the
    gradient mode ``gradient`` (a name or ``lib``'s GradientMode)."""
    params = tuple(func.parameters())

    def run() -> object:
        ys = lib.odeint(func, y0, t, rtol=TOL, atol=TOL, options=options, gradient=gradient)
        return torch.autograd.grad(ys[-1].square().sum(), params)

    def count() -> tuple[float, float, float | None]:
        ys, stats = lib.odeint(func, y0, t, rtol=TOL, atol=TOL, options=options,
                               gradient=gradient, return_stats=True)  # fmt: skip
        torch.autograd.grad(ys[-1].square().sum(), params)
        nfe = stats.nfe + stats.backward_nfe
        return float(nfe * y0.shape[0]), float(nfe), float(stats.n_steps + stats.backward_steps)

    return Contender(lib.__name__, variant, run, count)


def torchdiffeq_gradient(func: nn.Module, y0: torch.Tensor, t: torch.Tensor, adjoint: bool
                         ) -> Contender:  # fmt: skip
    params = tuple(func.parameters())
    solve = torchdiffeq.odeint_adjoint if adjoint else torchdiffeq.odeint

    def grad(f: nn.Module) -> object:
        ys = solve(f, y0, t, rtol=TOL, atol=TOL, method="dopri5")
        return torch.autograd.grad(ys[-1].square().sum(), params)

    def count() -> tuple[float, float, float | None]:
        counter = CountingField(func)
        grad(counter)
        return float(counter.calls * y0.shape[0]), float(counter.calls), None

    return Contender("torchdiffeq", "adjoint" if adjoint else "backprop", lambda: grad(func), count)


def torchode_gradient(func: nn.Module, y0: torch.Tensor, t: torch.Tensor) -> Contender:
    solve, _ = torchode_solver(func, y0)
    params = tuple(func.parameters())

    def run() -> object:
        ys = solve(y0, t).ys
        return torch.autograd.grad(ys[:, -1].square().sum(), params)

    def count() -> tuple[float, float, float | None]:
        stats = solve(y0, t).stats
        return float(stats["n_f_evals"].sum()), float(stats["n_f_evals"].max()), None

    return Contender("torchode", "backprop", run, count)


def mnist_step(variant: str, gradient: str, options: dict) -> Contender:
    """One SGD step of the ODE-Net (forward, cross-entropy, backward, update) on a batch of 128
    random images (the solve's cost does not depend on the pixels' values much)."""
    torch.manual_seed(0)
    model = odenet(gradient=gradient)
    model.features.solver = dataclasses.replace(model.features.solver, options=options)
    images, labels = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)

    def run() -> object:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        return loss

    def count() -> tuple[float, float, float | None]:
        run()
        stats = model.features.stats
        nfe = stats.nfe + stats.backward_nfe
        return float(nfe * 128), float(nfe), float(stats.n_steps + stats.backward_steps)

    return Contender("neuralode", variant, run, count)


def mnist_step_torchdiffeq() -> Contender:
    """The same ODE-Net step with torchdiffeq's odeint_adjoint solving the block."""
    torch.manual_seed(0)
    model = odenet()
    field = model.features.func
    images, labels = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    t = torch.tensor([0.0, 1.0])
    counter = CountingField(field)

    def forward(x: torch.Tensor, f: nn.Module) -> torch.Tensor:
        h = model.downsampling(x)
        h = torchdiffeq.odeint_adjoint(f, h, t, rtol=1e-3, atol=1e-3, method="dopri5")[-1]
        return model.head(h)

    def run(f: nn.Module = field) -> object:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(forward(images, f), labels)
        loss.backward()
        optimizer.step()
        return loss

    def count() -> tuple[float, float, float | None]:
        counter.calls = 0
        run(counter)
        return float(counter.calls * 128), float(counter.calls), None

    return Contender("torchdiffeq", "adjoint", run, count)


# -- the cases -------------------------------------------------------------------------------


def cases(quick: bool) -> dict[str, list[Contender]]:
    torch.manual_seed(0)
    mlp, conv = MLPField(), ConvField()
    t2 = torch.linspace(0.0, 1.0, 2)
    y1, y256, y_conv = torch.randn(1, 2), torch.randn(256, 2), torch.randn(32, 64, 7, 7)
    mu = torch.logspace(-1, 1, 256)
    vdp = VanDerPol(mu)
    y_vdp = torch.cat([torch.full((256, 1), 2.0), torch.zeros(256, 1)], 1)
    t_vdp = torch.linspace(0.0, 10.0, 11)
    jax = diffrax_available()

    def forward(name: str, func: nn.Module, y0: torch.Tensor, t: torch.Tensor, field: str
                ) -> list[Contender]:  # fmt: skip
        entries = [
            neuralode_forward(func, y0, t, {}, "eager"),
            neuralode_forward(func, y0, t, COMPILE, "compiled"),
            raw_field(func, y0, 20),
        ]
        if torchdiffeq is not None:
            entries.append(torchdiffeq_forward(func, y0, t))
        if torchode is not None:
            entries.append(torchode_forward(func, y0, t))
        if jax:
            entries.append(diffrax_forward(field, func, y0, t))
        return entries

    table = {
        "MLP 2-64-2, batch 1": [*forward("mlp1", mlp, y1, t2, "mlp"), compiled_call_floor(y1)],
        "MLP 2-64-2, batch 256": forward("mlp256", mlp, y256, t2, "mlp"),
        "conv 64ch 7x7, batch 32": forward("conv", conv, y_conv, t2, "conv"),
    }
    vdp_entries = [
        neuralode_forward(vdp, y_vdp, t_vdp, {}, "shared steps, eager"),
        neuralode_forward(vdp, y_vdp, t_vdp, {"per_sample": True}, "per-sample steps, eager"),
        neuralode_forward(vdp, y_vdp, t_vdp, COMPILE, "shared steps, compiled"),
        neuralode_forward(
            vdp, y_vdp, t_vdp, {"per_sample": True, **COMPILE}, "per-sample steps, compiled"
        ),
    ]
    if torchdiffeq is not None:
        vdp_entries.append(torchdiffeq_forward(vdp, y_vdp, t_vdp))
    if torchode is not None:
        vdp_entries.append(torchode_forward(vdp, y_vdp, t_vdp))
    if jax:
        vdp_entries.append(diffrax_forward("vdp", vdp, y_vdp, t_vdp))
        vdp_entries.append(diffrax_forward("vdp", vdp, y_vdp, t_vdp, per_sample=True))
    table["Van der Pol, μ 0.1-10, 256 samples, t 0-10"] = vdp_entries

    grads = [
        neuralode_gradient(mlp, y256, t2, "backprop", {}, "backprop, eager"),
        neuralode_gradient(mlp, y256, t2, "backprop", COMPILE, "backprop, compiled"),
        neuralode_gradient(mlp, y256, t2, "adjoint", {}, "adjoint, eager"),
        neuralode_gradient(mlp, y256, t2, "adjoint", COMPILE, "adjoint, compiled"),
        neuralode_gradient(mlp, y256, t2, "checkpoint", {}, "checkpoint, eager"),
    ]
    if torchdiffeq is not None:
        grads += [torchdiffeq_gradient(mlp, y256, t2, adjoint) for adjoint in (False, True)]
    if torchode is not None:
        grads.append(torchode_gradient(mlp, y256, t2))
    if jax:
        grads += [
            diffrax_forward("mlp", mlp, y256, t2, gradient="recursive checkpoint"),
            diffrax_forward("mlp", mlp, y256, t2, gradient="backsolve"),
        ]
    table["MLP 2-64-2, batch 256, forward + backward"] = grads
    if not quick:
        steps = [
            mnist_step("adjoint, eager", "adjoint", {}),
            mnist_step("adjoint, compiled", "adjoint", COMPILE),
            mnist_step("backprop, eager", "backprop", {}),
            mnist_step("backprop, compiled", "backprop", COMPILE),
        ]
        if torchdiffeq is not None:
            steps.append(mnist_step_torchdiffeq())
        table["ODE-Net MNIST training step, batch 128"] = steps
    return table


# -- timing ------------------------------------------------------------------------------------


def measure(name: str, contenders: list[Contender], budget_s: float) -> list[Row]:
    first, counts, calls = {}, {}, {}
    for c in contenders:
        start = time.perf_counter()
        c.run()
        first[c.variant + c.library] = time.perf_counter() - start
        counts[c.variant + c.library] = c.count()
        start = time.perf_counter()
        c.run()
        once = time.perf_counter() - start
        calls[c.variant + c.library] = max(1, int(0.02 / max(once, 1e-6)))
    samples: dict[str, list[float]] = {k: [] for k in first}
    rounds, start = 0, time.perf_counter()
    while rounds < 3 or (time.perf_counter() - start < budget_s and rounds < 200):
        order = contenders[rounds % len(contenders) :] + contenders[: rounds % len(contenders)]
        for c in order:
            key, n = c.variant + c.library, calls[c.variant + c.library]
            t0 = time.perf_counter()
            for _ in range(n):
                c.run()
            samples[key].append((time.perf_counter() - t0) / n)
        rounds += 1
    rows = []
    for c in contenders:
        key = c.variant + c.library
        nfe_samples, nfe_batch, steps = counts[key]
        time_ms = statistics.median(samples[key]) * 1e3
        rows.append(Row(name, c.library, c.variant, time_ms, first[key], nfe_samples, nfe_batch,
                        steps, rounds, per_nfe_us=time_ms * 1e3 / max(nfe_batch, 1)))  # fmt: skip
    for row in rows:
        for other in rows:
            if other.library != row.library:
                row.vs.setdefault(other.library, other.time_ms / row.time_ms)
    print_rows(rows)
    return rows


def print_rows(rows: list[Row]) -> None:
    for r in rows:
        print(f"{r.case[:34]:34s} {r.library:11s} {r.variant:28s} {r.time_ms:9.3f} ms "
              f"NFE {r.nfe_batch:7.0f} first {r.first_call_s:6.2f} s", flush=True)  # fmt: skip


SUMMARY = [
    # (label, case, variants per column: neuralode eager, compiled, torchdiffeq, torchode, diffrax)
    ("MLP 2→64→2, batch 1", "MLP 2-64-2, batch 1",
     ("eager", "compiled", "shared steps", "per-sample steps", "shared steps")),
    ("MLP 2→64→2, batch 256", "MLP 2-64-2, batch 256",
     ("eager", "compiled", "shared steps", "per-sample steps", "shared steps")),
    ("conv 64 ch on 7×7, batch 32", "conv 64ch 7x7, batch 32",
     ("eager", "compiled", "shared steps", "per-sample steps", "shared steps")),
    ("Van der Pol ×256, shared steps", "Van der Pol, μ 0.1-10, 256 samples, t 0-10",
     ("shared steps, eager", "shared steps, compiled", "shared steps", None, "shared steps")),
    ("Van der Pol ×256, per-sample steps", "Van der Pol, μ 0.1-10, 256 samples, t 0-10",
     ("per-sample steps, eager", "per-sample steps, compiled", None, "per-sample steps",
      "per-sample steps (vmap)")),
    ("MLP batch 256, forward + backward, backprop", "MLP 2-64-2, batch 256, forward + backward",
     ("backprop, eager", "backprop, compiled", "backprop", "backprop", "recursive checkpoint")),
    ("MLP batch 256, forward + backward, adjoint", "MLP 2-64-2, batch 256, forward + backward",
     ("adjoint, eager", "adjoint, compiled", "adjoint", None, "backsolve")),
    ("ODE-Net MNIST step, adjoint", "ODE-Net MNIST training step, batch 128",
     ("adjoint, eager", "adjoint, compiled", "adjoint", None, None)),
    ("ODE-Net MNIST step, backprop", "ODE-Net MNIST training step, batch 128",
     ("backprop, eager", "backprop, compiled", None, None, None)),
]  # fmt: skip
SUMMARY_LIBRARIES = ("neuralode", "neuralode", "torchdiffeq", "torchode", "diffrax")


def _ms(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def summary(rows: list[Row]) -> list[str]:
    """One line per case: time per call (ms) of each library's comparable variant."""
    found = {(r.case, r.library, r.variant): r for r in rows}
    lines = [
        "| case (time per call, ms) | neuralode eager | neuralode compiled | torchdiffeq | "
        "torchode | diffrax (JAX) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, case, variants in SUMMARY:
        cells = []
        for library, variant in zip(SUMMARY_LIBRARIES, variants, strict=True):
            row = found.get((case, library, variant))
            cells.append("—" if row is None else _ms(row.time_ms))
        if any(cell != "—" for cell in cells):
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def markdown(rows: list[Row], env: dict[str, object]) -> str:
    lines = [
        "# Speed: neuralode eager and compiled vs torchdiffeq, torchode and diffrax",
        "",
        f"- {env['date']}; {env['cpu']}; {env['threads']} thread(s) for torch and JAX; "
        f"torch {env['torch']}, torchdiffeq {env['torchdiffeq']}, torchode {env['torchode']}, "
        f"jax {env.get('jax')}, diffrax {env.get('diffrax')}",
        f"- dopri5, rtol = atol = {TOL:g} (ODE-Net: 1e-3), float32, I control (diffrax: "
        "PIDController with its default, integral-only coefficients); median wall time per "
        "call over round-robin rounds; first call: the untimed first call (compilation for "
        "compiled neuralode and diffrax's jit)",
        "- NFE: evaluations of the field on the whole batch (for per-sample solvers: the most "
        "any sample needed, each evaluation covering the batch); sample NFE: evaluations summed "
        "over samples. diffrax's NFE are 6 × steps + 2 from its step counts; torchode counts "
        "its own",
        "- ×peer: the peer's time / this row's time (> 1: this row is faster), against that "
        "peer's first row in the case; field: 20 back-to-back raw calls of the vector field (the "
        "NFE of our dopri5 solve), the floor of any solver taking that many evaluations; "
        "torch.compile: one call of a compiled y + 1, the floor of any compiled call",
        "",
        "## Summary",
        "",
        *summary(rows),
        "",
    ]
    by_case: dict[str, list[Row]] = {}
    for r in rows:
        by_case.setdefault(r.case, []).append(r)
    peers = ["torchdiffeq", "torchode", "diffrax"]
    for case, case_rows in by_case.items():
        lines += [f"## {case}", "", "| library | variant | time (ms) | NFE | sample NFE | steps "
                  "| µs per NFE | first call (s) | ×torchdiffeq | ×torchode | ×diffrax |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in case_rows:
            ratios = ["—" if r.library == p or p not in r.vs else f"{r.vs[p]:.2f}" for p in peers]
            steps = "—" if r.steps is None else f"{r.steps:.0f}"
            lines.append(
                f"| {r.library} | {r.variant} | {r.time_ms:.3f} | {r.nfe_batch:.0f} | "
                f"{r.nfe_samples:.0f} | {steps} | {r.per_nfe_us:.1f} | {r.first_call_s:.2f} | "
                + " | ".join(ratios)
                + " |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short timing, no MNIST step")
    parser.add_argument("--threads", type=int, default=1, help="torch and XLA threads")
    parser.add_argument("--budget", type=float, default=None, help="seconds of timing per case")
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument(
        "--case", action="append", default=[], metavar="TEXT",
        help="only the cases whose name contains TEXT (repeatable; default: all)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    versions = configure_jax(args.threads)  # before JAX's first computation
    torch.set_num_threads(args.threads)
    env = environment(args.threads)
    env.update(versions or {})
    budget = args.budget if args.budget is not None else (3.0 if args.quick else 15.0)
    rows: list[Row] = []
    for name, contenders in cases(args.quick).items():
        if not args.case or any(text in name for text in args.case):
            rows += measure(name, contenders, budget)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "speed.md").write_text(markdown(rows, env) + "\n")
    payload = {"environment": env, "rows": [dataclasses.asdict(r) for r in rows]}
    (args.out / "speed.json").write_text(json.dumps(payload, indent=1) + "\n")
    print(f"wrote {args.out / 'speed.md'}")


if __name__ == "__main__":
    main()
