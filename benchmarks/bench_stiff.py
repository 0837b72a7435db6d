"""Stiff problems: neuralode's rosenbrock23 against scipy's Radau and BDF.

Robertson's chemical kinetics on t ∈ [0, 1e5] and Van der Pol with μ = 1000 on t ∈ [0, 3000],
float64, at two tolerances each. neuralode solves the torch field with Jacobians from autograd;
scipy solves the same equations written in numpy with its finite-difference Jacobians (its
usual use). Reported: wall time (median of 3), NFE (scipy: without the evaluations its
finite-difference Jacobians take), Jacobians, LU factorisations, accepted/rejected steps, and
the largest error against Radau at rtol 1e-10. The explicit dopri5 is tried with 20,000 steps
at most, to show that it does not finish.

Usage: ``python benchmarks/bench_stiff.py [--out results]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.integrate import solve_ivp

import neuralode

sys.path.insert(0, str(Path(__file__).parent))
from bench_solvers import environment


def robertson_torch(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    y1, y2, y3 = y[0], y[1], y[2]
    return torch.stack([-0.04 * y1 + 1e4 * y2 * y3, 0.04 * y1 - 1e4 * y2 * y3 - 3e7 * y2**2,
                        3e7 * y2**2])  # fmt: skip


def robertson_numpy(t: float, y: np.ndarray) -> np.ndarray:
    y1, y2, y3 = y
    return np.array([-0.04 * y1 + 1e4 * y2 * y3, 0.04 * y1 - 1e4 * y2 * y3 - 3e7 * y2**2,
                     3e7 * y2**2])  # fmt: skip


def vdp_torch(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.stack([y[1], 1000.0 * (1 - y[0] ** 2) * y[1] - y[0]])


def vdp_numpy(t: float, y: np.ndarray) -> np.ndarray:
    return np.array([y[1], 1000.0 * (1 - y[0] ** 2) * y[1] - y[0]])


@dataclass(frozen=True)
class Problem:
    name: str
    torch_field: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    numpy_field: Callable[[float, np.ndarray], np.ndarray]
    y0: tuple[float, ...]
    t: tuple[float, ...]
    tolerances: tuple[tuple[float, float], ...]  # (rtol, atol)


PROBLEMS = (
    Problem("Robertson, t 0-1e5", robertson_torch, robertson_numpy, (1.0, 0.0, 0.0),
            (0.0, 1e-3, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5), ((1e-4, 1e-8), (1e-6, 1e-10))),
    Problem("Van der Pol μ=1000, t 0-3000", vdp_torch, vdp_numpy, (2.0, 0.0),
            tuple(np.linspace(0, 3000, 7)), ((1e-4, 1e-4), (1e-6, 1e-6))),
)  # fmt: skip


@dataclass
class Row:
    problem: str
    rtol: float
    atol: float
    solver: str
    time_ms: float | None
    nfe: int | None
    jacobians: int | None
    lu: int | None
    accepted: int | None
    rejected: int | None
    max_error: float | None
    note: str = ""


def reference(problem: Problem) -> np.ndarray:
    solution = solve_ivp(problem.numpy_field, (problem.t[0], problem.t[-1]), problem.y0,
                         method="Radau", rtol=1e-10, atol=1e-14, t_eval=problem.t)  # fmt: skip
    return solution.y.T


def timed(fn: Callable[[], object], repeats: int = 3) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3, result


def neuralode_row(
    problem: Problem, rtol: float, atol: float, exact: np.ndarray, options: dict | None = None
) -> Row:
    y0 = torch.tensor(problem.y0, dtype=torch.float64)
    t = torch.tensor(problem.t, dtype=torch.float64)

    def solve() -> tuple[torch.Tensor, neuralode.SolverStats]:
        return neuralode.odeint(
            problem.torch_field, y0, t, rtol=rtol, atol=atol, method="rosenbrock23",
            options=options, return_stats=True,
        )  # fmt: skip

    ms, (ys, stats) = timed(solve)
    # One LU per attempted step (a rejected step's retry refactors W with the new h).
    return Row(problem.name, rtol, atol, "neuralode rosenbrock23", ms, stats.nfe,
               stats.n_jacobians, stats.n_steps, stats.n_accepted, stats.n_rejected,
               float(np.abs(ys.numpy() - exact).max()))  # fmt: skip


def scipy_row(problem: Problem, method: str, rtol: float, atol: float, exact: np.ndarray) -> Row:
    def solve() -> object:
        return solve_ivp(problem.numpy_field, (problem.t[0], problem.t[-1]), problem.y0,
                         method=method, rtol=rtol, atol=atol, t_eval=problem.t)  # fmt: skip

    ms, solution = timed(solve)
    return Row(problem.name, rtol, atol, f"scipy {method}", ms, solution.nfev, solution.njev,
               solution.nlu, None, None, float(np.abs(solution.y.T - exact).max()))  # fmt: skip


def reuse_row(problem: Problem, rtol: float, atol: float, exact: np.ndarray) -> Row:
    """rosenbrock23 with each Jacobian serving up to 10 accepted steps (a W-method keeps its
    order so; the default is a fresh one per step)."""
    row = neuralode_row(problem, rtol, atol, exact, {"jacobian_every": 10})
    row.solver += ", jacobian_every=10"
    return row


def dopri5_row(problem: Problem, rtol: float, atol: float) -> Row:
    y0 = torch.tensor(problem.y0, dtype=torch.float64)
    t = torch.tensor(problem.t, dtype=torch.float64)
    start = time.perf_counter()
    try:
        neuralode.odeint(problem.torch_field, y0, t, rtol=rtol, atol=atol,
                         options={"max_num_steps": 20_000})  # fmt: skip
        note = "finished"
    except neuralode.MaxStepsExceededError as error:
        note = f"MaxStepsExceededError at t={error.t:.4g}"
    ms = (time.perf_counter() - start) * 1e3
    return Row(problem.name, rtol, atol, "neuralode dopri5 (explicit)", ms, None, None, None,
               None, None, None, note)  # fmt: skip


def batch_rows(batch: int = 128) -> list[Row]:
    """``batch`` Robertson systems with rate constants spread over 0.01-0.08 in one (B, 3)
    state: the full (3B × 3B) Jacobian (3B products) against B diagonal blocks (3)."""
    rates = torch.linspace(0.01, 0.08, batch, dtype=torch.float64)[:, None]

    def field(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        y1, y2, y3 = y[:, :1], y[:, 1:2], y[:, 2:]
        return torch.cat([-rates * y1 + 1e4 * y2 * y3,
                          rates * y1 - 1e4 * y2 * y3 - 3e7 * y2**2, 3e7 * y2**2], 1)  # fmt: skip

    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64).expand(batch, 3).clone()
    t = torch.tensor([0.0, 1.0, 100.0, 1e4], dtype=torch.float64)
    rows = []
    for jacobian in ("full", "per_sample"):

        def solve(jacobian: str = jacobian) -> tuple[torch.Tensor, neuralode.SolverStats]:
            return neuralode.odeint(field, y0, t, rtol=1e-6, atol=1e-10, method="rosenbrock23",
                                    options={"jacobian": jacobian}, return_stats=True)  # fmt: skip

        ms, (_, stats) = timed(solve)
        rows.append(Row(f"Robertson ×{batch} (rates 0.01-0.08), t 0-1e4", 1e-6, 1e-10,
                        f"neuralode rosenbrock23, jacobian={jacobian!r}", ms, stats.nfe,
                        stats.n_jacobians, stats.n_steps, stats.n_accepted, stats.n_rejected,
                        None))  # fmt: skip
    return rows


def markdown(rows: list[Row], env: dict[str, object]) -> str:
    def cell(value: object, spec: str = "") -> str:
        return "—" if value is None else format(value, spec)

    lines = [
        "# Stiff problems: neuralode rosenbrock23 vs scipy Radau and BDF",
        "",
        f"- {env['date']}; {env['cpu']}; torch {env['torch']}, 1 thread; float64",
        "- time: median of 3 solves; NFE: evaluations of f (scipy's count leaves out those of "
        "its finite-difference Jacobians; neuralode's Jacobians are autograd, N reverse-mode "
        "products each); LU: factorisations; max error: largest absolute "
        "difference from Radau at rtol 1e-10, atol 1e-14 over the output times",
        "",
        "| problem | rtol / atol | solver | time (ms) | NFE | Jacobians | LU | accepted / "
        "rejected | max error | note |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        steps = "—" if r.accepted is None else f"{r.accepted} / {r.rejected}"
        lines.append(
            f"| {r.problem} | {r.rtol:g} / {r.atol:g} | {r.solver} | {cell(r.time_ms, '.1f')} | "
            f"{cell(r.nfe)} | {cell(r.jacobians)} | {cell(r.lu)} | {steps} | "
            f"{cell(r.max_error, '.2e')} | {r.note} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("results"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    env = environment(1)
    rows: list[Row] = []
    for problem in PROBLEMS:
        exact = reference(problem)
        for rtol, atol in problem.tolerances:
            rows.append(neuralode_row(problem, rtol, atol, exact))
            rows += [scipy_row(problem, method, rtol, atol, exact) for method in ("Radau", "BDF")]
            print(*(asdict(r) for r in rows[-3:]), sep="\n", flush=True)
        rows.append(reuse_row(problem, *problem.tolerances[-1], exact))
        rows.append(dopri5_row(problem, *problem.tolerances[-1]))
        print(asdict(rows[-1]), flush=True)
    rows += batch_rows()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "stiff.md").write_text(markdown(rows, env))
    payload = {"environment": env, "rows": [asdict(r) for r in rows]}
    (args.out / "stiff.json").write_text(json.dumps(payload, indent=1) + "\n")
    print(f"wrote {args.out / 'stiff.md'}")


if __name__ == "__main__":
    main()
