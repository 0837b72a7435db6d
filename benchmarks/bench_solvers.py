"""Forward-solve wall time of neuralode against torchdiffeq (and torchode) on neural vector fields.

Every library solves the same problem (same weights, y0, method, tolerances, output times) in one
process under ``torch.no_grad()``. Solves are timed round-robin (one solve of each library, plus
one block of raw ``func`` calls, per round) so that load from other processes hits every library
alike; each reported time is the median over rounds after warm-up.

Usage: ``python benchmarks/bench_solvers.py [--quick] [--threads 2] [--out results]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
import torchdiffeq
from torch import nn

import neuralode

try:
    import torchode
except ImportError:  # torchode rows are skipped when it is not installed
    torchode = None

RTOL = ATOL = 1e-6
NOISY = 1.5  # a case is flagged (contended CPU) when a ratio of raw func times exceeds this
TORCHODE_METHODS = {"dopri5": "Dopri5", "tsit5": "Tsit5"}
TORCHDIFFEQ_METHODS = set(neuralode.METHODS) - {"tsit5"}


class MLPField(nn.Module):
    """dy/dt = W2 tanh(W1 y + b1) + b2 on states of shape (batch, 2)."""

    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, hidden), nn.Tanh(), nn.Linear(hidden, 2))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(y)


class ConvField(nn.Module):
    """dy/dt = conv3x3(tanh(conv3x3(y))) on feature maps of shape (batch, channels, H, W)."""

    def __init__(self, channels: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.tanh(self.conv1(y)))


@dataclass(frozen=True)
class Case:
    """One problem: a vector field, an initial state, a method and the output times."""

    problem: str
    func: nn.Module
    y0: torch.Tensor
    method: str
    t: torch.Tensor

    @property
    def n_times(self) -> int:
        return self.t.numel()


@dataclass
class Row:
    """Measurements of one library on one case."""

    problem: str
    library: str
    method: str
    n_times: int
    time_ms: float
    time_ms_min: float
    rounds: int
    nfe: int
    steps: int | None
    func_us: float
    func_us_1thread: float
    func_spread: float
    overhead: float
    speedup: float | None = None
    speedup_per_nfe: float | None = None
    max_abs_diff: float | None = None

    @property
    def contended(self) -> bool:
        """Whether the raw func time says other processes disturbed this case."""
        return self.func_spread > NOISY or self.func_us > NOISY * self.func_us_1thread


class CountingField(nn.Module):
    """Wraps a vector field and counts its calls (used only in the untimed counting solve)."""

    def __init__(self, func: nn.Module) -> None:
        super().__init__()
        self.func = func
        self.calls = 0

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.func(t, y)


# A solver factory does the untimed setup for (vector field, case) and returns the timed solve,
# which gives (final state shaped like y0, steps or None).
Solve = Callable[[], tuple[torch.Tensor, int | None]]
SolverFactory = Callable[[nn.Module, Case], Solve]


def neuralode_solver(func: nn.Module, case: Case) -> Solve:
    """neuralode.odeint; steps are accepted + rejected from its stats."""

    def solve() -> tuple[torch.Tensor, int | None]:
        y, stats = neuralode.odeint(
            func, case.y0, case.t, rtol=RTOL, atol=ATOL, method=case.method, return_stats=True
        )
        return y[-1], stats.n_steps

    return solve


def torchdiffeq_solver(func: nn.Module, case: Case) -> Solve:
    """torchdiffeq.odeint; it reports no step count."""

    def solve() -> tuple[torch.Tensor, int | None]:
        y = torchdiffeq.odeint(func, case.y0, case.t, rtol=RTOL, atol=ATOL, method=case.method)
        return y[-1], None

    return solve


def torchode_solver(func: nn.Module, case: Case) -> Solve:
    """torchode with an I controller, built once (as a model would hold it); each solve builds
    only the InitialValueProblem. The state is flattened to (batch, features) and each batch
    sample gets its own step size and error norm. Steps are the loop's iterations (the most any
    sample took); every iteration evaluates ``func`` on the whole batch."""
    y0, batch = case.y0, case.y0.shape[0]

    def flat_func(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return func(t, y.view_as(y0)).reshape(batch, -1)

    term = torchode.ODETerm(flat_func, with_stats=False)
    step = getattr(torchode, TORCHODE_METHODS[case.method])(term=term)
    controller = torchode.IntegralController(atol=ATOL, rtol=RTOL, term=term)
    solver = torchode.AutoDiffAdjoint(step, controller)
    y0_flat, t_eval = y0.reshape(batch, -1), case.t.expand(batch, case.n_times)

    def solve() -> tuple[torch.Tensor, int | None]:
        solution = solver.solve(torchode.InitialValueProblem(y0=y0_flat, t_eval=t_eval))
        return solution.ys[:, -1].view_as(y0), int(solution.stats["n_steps"].max())

    return solve


def solvers_for(method: str) -> dict[str, SolverFactory]:
    """The libraries that implement ``method``, neuralode first."""
    solvers: dict[str, SolverFactory] = {"neuralode": neuralode_solver}
    if method in TORCHDIFFEQ_METHODS:
        solvers["torchdiffeq"] = torchdiffeq_solver
    if torchode is not None and method in TORCHODE_METHODS:
        solvers["torchode"] = torchode_solver
    return solvers


def cases() -> list[Case]:
    """The benchmark problems, with weights and initial states from a fixed seed."""
    torch.manual_seed(0)
    mlp, conv = MLPField(), ConvField()
    y_mlp256, y_mlp1 = torch.randn(256, 2), torch.randn(1, 2)
    y_conv = torch.randn(32, 64, 7, 7)
    t2, t10 = torch.linspace(0.0, 1.0, 2), torch.linspace(0.0, 1.0, 10)
    return [
        Case("MLP 2-64-2, batch 256", mlp, y_mlp256, "dopri5", t2),
        Case("MLP 2-64-2, batch 256", mlp, y_mlp256, "tsit5", t2),
        Case("MLP 2-64-2, batch 256", mlp, y_mlp256, "dopri5", t10),
        Case("MLP 2-64-2, batch 1", mlp, y_mlp1, "dopri5", t2),
        Case("MLP 2-64-2, batch 1", mlp, y_mlp1, "dopri5", t10),
        Case("conv 64ch 7x7, batch 32", conv, y_conv, "dopri5", t2),
    ]


def time_block(fn: Callable[[], object], calls: int = 1) -> float:
    """Seconds per call of ``fn`` over ``calls`` back-to-back calls."""
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def measure(case: Case, budget_s: float, min_rounds: int, warmup: int) -> list[Row]:
    """Time every library on ``case`` round-robin and return one row per library."""
    factories = solvers_for(case.method)
    solvers = {name: make(case.func, case) for name, make in factories.items()}
    finals, nfes, steps = {}, {}, {}
    for name, make in factories.items():
        counter = CountingField(case.func)
        finals[name], steps[name] = make(counter, case)()
        nfes[name] = counter.calls
    t0 = torch.zeros(())
    calls = nfes["neuralode"]  # one raw block costs about one neuralode solve's evaluations
    samples: dict[str, list[float]] = {name: [] for name in [*solvers, "func", "func_1thread"]}
    threads = torch.get_num_threads()
    rounds, start = 0, time.perf_counter()
    elapsed = 0.0
    # At least two timed rounds; min_rounds unless that takes over 2 budgets (a loaded CPU).
    while (
        rounds < warmup + 2
        or elapsed < budget_s
        or (rounds < warmup + min_rounds and elapsed < 2 * budget_s)
    ):
        order = list(solvers.items())
        order = order[rounds % len(order) :] + order[: rounds % len(order)]
        func_s = time_block(lambda: case.func(t0, case.y0), calls)
        torch.set_num_threads(1)
        func_1thread_s = time_block(lambda: case.func(t0, case.y0), calls)
        torch.set_num_threads(threads)
        round_times = {name: time_block(solve) for name, solve in order}
        if rounds >= warmup:
            samples["func"].append(func_s)
            samples["func_1thread"].append(func_1thread_s)
            for name, seconds in round_times.items():
                samples[name].append(seconds)
        rounds += 1
        elapsed = time.perf_counter() - start
    func_us = statistics.median(samples["func"]) * 1e6
    lower, _, upper = statistics.quantiles(samples["func"], n=4)
    rows = []
    for name in solvers:
        time_ms = statistics.median(samples[name]) * 1e3
        rows.append(
            Row(
                problem=case.problem,
                library=name,
                method=case.method,
                n_times=case.n_times,
                time_ms=time_ms,
                time_ms_min=min(samples[name]) * 1e3,
                rounds=len(samples[name]),
                nfe=nfes[name],
                steps=steps[name],
                func_us=func_us,
                func_us_1thread=statistics.median(samples["func_1thread"]) * 1e6,
                func_spread=upper / lower,
                overhead=time_ms * 1e3 / (nfes[name] * func_us),
            )
        )
    ours = rows[0]
    for row in rows[1:]:
        row.speedup = row.time_ms / ours.time_ms
        row.speedup_per_nfe = (row.time_ms / row.nfe) / (ours.time_ms / ours.nfe)
        row.max_abs_diff = float((finals[row.library] - finals["neuralode"]).abs().max())
    return rows


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def load_average() -> float | None:
    """The 1-minute load average (other processes competing for the CPU), where known."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def environment(threads: int) -> dict[str, object]:
    """Versions, threads and machine, for the report's header."""
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "neuralode": neuralode.__version__,
        "torchdiffeq": torchdiffeq.__version__,
        "torchode": torchode.__version__ if torchode is not None else None,
        "threads": threads,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_average_1min_start": load_average(),
        "rtol": RTOL,
        "atol": ATOL,
        "dtype": "float32",
    }


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def targets(rows: list[Row]) -> list[str]:
    """The issue's targets on the MLP problems: neuralode ≥ 2× faster than torchdiffeq per solve
    at equal NFE, and neuralode's overhead < 2."""
    ours = {(r.problem, r.method, r.n_times): r for r in rows if r.library == "neuralode"}
    lines = ["", "## Targets (MLP problems)", ""]
    for r in rows:
        if r.library != "torchdiffeq" or not r.problem.startswith("MLP"):
            continue
        mine = ours[(r.problem, r.method, r.n_times)]
        lines.append(
            f"- {r.problem}, {r.method}, n_t={r.n_times}: speedup {r.speedup:.2f}× "
            f"({'pass' if r.speedup >= 2 else 'FAIL'}, NFE {mine.nfe} vs {r.nfe}); "
            f"overhead {mine.overhead:.2f} ({'pass' if mine.overhead < 2 else 'FAIL'})"
            + (" †" if r.contended else "")
        )
    return lines


def markdown(rows: list[Row], env: dict[str, object]) -> str:
    """The report: environment header, notes, the results table and the targets."""
    header = [
        "# Solver benchmark: neuralode vs torchdiffeq vs torchode",
        "",
        f"- date: {env['date']}; torch {env['torch']}, torchdiffeq {env['torchdiffeq']}, "
        f"torchode {env['torchode']}, neuralode {env['neuralode']}, Python {env['python']}",
        f"- CPU: {env['cpu']} ({env['cpu_count']} logical cores), torch threads: "
        f"{env['threads']}; 1-min load average at start / end: "
        f"{_fmt(env['load_average_1min_start'], '.2f')} / "
        f"{_fmt(env['load_average_1min_end'], '.2f')} (other processes share the CPU when it "
        "exceeds 0)",
        f"- forward solves under `torch.no_grad()`, float32, rtol = atol = {RTOL:g}, "
        f"t = linspace(0, 1, n_t); whole run {env['elapsed_s']:.0f} s",
        "- time: median wall time per solve over the rounds after warm-up (libraries timed "
        "round-robin); func: one raw call of the vector field; overhead = time / (NFE × func)",
        "- speedup: this row's time / neuralode's time (per solve, and per function "
        "evaluation); max|Δy|: largest difference of the final state from neuralode's",
        "- torchode controls the step size of each batch sample separately (its own error "
        "norm), so its NFE and steps differ from the other two; steps is its iteration count; "
        "its solver modules are built once, outside the timing",
        f"- †: the CPU was contended during this case, so its times are unreliable: the raw func "
        f"time varied between rounds (upper / lower quartile > {NOISY}) or was over {NOISY}× its "
        "time on one thread (intra-op threads waiting for a busy core)",
        "",
    ]
    columns = [
        "problem",
        "n_t",
        "library",
        "method",
        "time (ms)",
        "NFE",
        "steps",
        "func (µs)",
        "overhead",
        "speedup",
        "speedup/NFE",
        "max \\|Δy\\|",  # escaped: a bare | would split the cell
        "rounds",
    ]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        cells = [
            r.problem + (" †" if r.contended else ""),
            str(r.n_times),
            r.library,
            r.method,
            f"{r.time_ms:.3f}",
            str(r.nfe),
            _fmt(r.steps, "d"),
            f"{r.func_us:.1f}",
            f"{r.overhead:.2f}",
            _fmt(r.speedup, ".2f"),
            _fmt(r.speedup_per_nfe, ".2f"),
            _fmt(r.max_abs_diff, ".1e"),
            str(r.rounds),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join([*header, *lines, *targets(rows), ""])


def main(argv: list[str] | None = None) -> None:
    """Run every case, print the table and write ``bench_solvers.{md,json}``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run (< 30 s)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--out", type=Path, default=Path("results"), help="output folder")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    budget_s, min_rounds, warmup = (1.0, 3, 1) if args.quick else (12.0, 5, 3)
    env = environment(args.threads)
    start = time.perf_counter()
    rows: list[Row] = []
    with torch.no_grad():
        for case in cases():
            rows.extend(measure(case, budget_s, min_rounds, warmup))
            print(f"done: {case.problem}, {case.method}, n_t={case.n_times}", file=sys.stderr)
    env["elapsed_s"] = round(time.perf_counter() - start, 1)
    env["load_average_1min_end"] = load_average()
    report = markdown(rows, env)
    print(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_solvers.md").write_text(report)
    payload = {
        "environment": env,
        "quick": args.quick,
        "rows": [{**asdict(r), "contended": r.contended} for r in rows],
    }
    (args.out / "bench_solvers.json").write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
