"""Second derivatives and torch.func.vmap through the solve (issue 20), and the same in diffrax.

1. A Hessian-vector product of the small-MLP Neural ODE loss (2→64→2, tanh, batch 256, dopri5,
   rtol = atol = 1e-6, float32 weights in float64 here so that finite differences are
   meaningful; t from 0 to 1, loss mean(y(1)²)) with respect to the parameters, in each
   gradient mode (double backward: ``torch.autograd.grad(grad, params, v)`` of a
   ``create_graph=True`` gradient), against central finite differences of two gradients; the
   largest difference between the two.
2. ``torch.func.vmap`` over 64 parameter sets (``functional_call``; one solve of the batch,
   each instance its own steps) against a Python loop of 64 solves; the largest difference.

Where jax and diffrax are installed (the ``bench-jax`` extra), the same two in diffrax on the
same weights, y0 and v (float64, jit-compiled, Dopri5 + PIDController): the HVP as ``jax.jvp``
of ``jax.grad`` through the adjoints that support it, against finite differences of two jax
gradients and against the torch HVP; ``jax.vmap`` of the jitted solve against a loop of 64
jitted solves. Otherwise the report says that the diffrax rows were skipped.

    python benchmarks/bench_func.py [--quick] [--threads 2] [--out results]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from neuralode import odeint

sys.path.insert(0, str(Path(__file__).parent))
from diffrax_peer import configure_jax, diffrax_solver, jax_params

MODES = ["backprop", "checkpoint", "adjoint"]
TOL = {"rtol": 1e-6, "atol": 1e-6}
EPS = 1e-4  # the finite differences' step along v
SETS = 64  # parameter sets under vmap
MAX_STEPS = 4096  # diffrax's default max_steps, for every diffrax solve here


class Field(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(2, 64), torch.nn.Tanh(), torch.nn.Linear(64, 2)
        )

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(y)


def timed(fn, repeats: int) -> tuple[float, object]:
    fn()  # warm-up
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out  # the best run: the machine may be shared


def first_call(fn) -> float:
    """Seconds of one call (a jitted function's first call: mostly its compilation)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _max_rel(exact: dict, other: dict) -> float:
    """Largest |exact - other| over all parameters / largest |exact|."""
    scale = max(float(abs(x).max()) for x in exact.values())
    return max(float(abs(exact[k] - other[k]).max()) for k in exact) / scale


def hvp_problem() -> tuple[Field, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """The field, y0, output times and direction v of the HVP: the same for torch and diffrax."""
    torch.manual_seed(0)
    field = Field().double()
    y0 = torch.randn(256, 2, dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    v = [torch.randn_like(p) for p in field.parameters()]
    return field, y0, t, v


def hvp_rows(repeats: int) -> tuple[list[dict], dict]:
    """The rows, and the backprop HVP (by parameter name) and step count for the comparison."""
    field, y0, t, v = hvp_problem()
    params = list(field.parameters())

    def gradient(mode: str, create_graph: bool) -> list[torch.Tensor]:
        loss = odeint(field, y0, t, gradient=mode, **TOL)[-1].pow(2).mean()
        return list(torch.autograd.grad(loss, params, create_graph=create_graph))

    def double_backward(mode: str) -> list[torch.Tensor]:
        return list(torch.autograd.grad(gradient(mode, True), params, v))

    def finite_differences(mode: str, eps: float = EPS) -> list[torch.Tensor]:
        shifted = []
        for sign in (1.0, -1.0):
            with torch.no_grad():
                for p, d in zip(params, v, strict=True):
                    p.add_(sign * eps * d)
            shifted.append(gradient(mode, False))
            with torch.no_grad():
                for p, d in zip(params, v, strict=True):
                    p.sub_(sign * eps * d)
        return [(a - b) / (2 * eps) for a, b in zip(*shifted, strict=True)]

    with torch.no_grad():
        _, stats = odeint(field, y0, t, return_stats=True, **TOL)
    rows, reference = [], {}
    for mode in MODES:
        exact_time, exact = timed(lambda mode=mode: double_backward(mode), repeats)
        fd_time, fd = timed(lambda mode=mode: finite_differences(mode), repeats)
        max_rel_diff = _max_rel(dict(enumerate(exact)), dict(enumerate(fd)))
        rows.append({"mode": mode, "hvp_s": exact_time, "fd_s": fd_time,
                     "max_rel_diff": max_rel_diff})  # fmt: skip
        if mode == "backprop":
            names = [name for name, _ in field.named_parameters()]
            reference = {"hvp": dict(zip(names, exact, strict=True)),
                         "steps": stats.n_accepted + stats.n_rejected}  # fmt: skip
    return rows, reference


def vmap_problem() -> tuple[Field, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    torch.manual_seed(1)
    field = Field().double()
    y0 = torch.randn(256, 2, dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    base = {name: p.detach() for name, p in field.named_parameters()}
    stacked = {
        name: p + 0.1 * torch.randn(SETS, *p.shape, dtype=p.dtype) for name, p in base.items()
    }
    return field, y0, t, stacked


def vmap_row(repeats: int) -> tuple[dict, torch.Tensor]:
    """The row, and vmap's final states (sets, 256, 2) for the comparison with diffrax."""
    field, y0, t, stacked = vmap_problem()

    def solve(params: dict) -> torch.Tensor:
        func = lambda t, y: torch.func.functional_call(field, params, (t, y))  # noqa: E731
        return odeint(func, y0, t, **TOL)[-1]

    with torch.no_grad():
        vmap_time, batched = timed(lambda: torch.func.vmap(solve)(stacked), repeats)
        loop_time, looped = timed(
            lambda: torch.stack(
                [solve({k: v[i] for k, v in stacked.items()}) for i in range(SETS)]
            ),
            repeats,
        )
    row = {"sets": SETS, "vmap_s": vmap_time, "loop_s": loop_time,
           "max_abs_diff": float((batched - looped).abs().max())}  # fmt: skip
    return row, batched


# -- diffrax ---------------------------------------------------------------------------------


def diffrax_hvp_rows(repeats: int, torch_reference: dict) -> tuple[list[dict], dict]:
    """The HVP of the same loss in diffrax, jax.jvp of jax.grad (forward over reverse), through
    each adjoint that supports it; the rows, and what the notes under the table report."""
    import diffrax
    import jax
    import jax.numpy as jnp
    import numpy as np

    field, y0, t, v = hvp_problem()
    params = jax_params(field)
    assert all(p.dtype == jnp.float64 for p in params.values()), "needs jax_enable_x64"
    names = [name for name, _ in field.named_parameters()]
    direction = {k: jnp.asarray(d.numpy()) for k, d in zip(names, v, strict=True)}
    y0_j, ts = jnp.asarray(y0.numpy()), jnp.asarray(t.numpy())
    final = diffrax.SaveAt(t1=True)  # the loss needs y(1) only (ts is [0, 1])

    def loss(solve) -> object:
        return lambda p: jnp.mean(solve(p, y0_j).ys[-1] ** 2)

    def hvp(solve) -> object:
        return jax.jit(lambda p, d: jax.jvp(jax.grad(loss(solve)), (p,), (d,))[1])

    def finite_differences(grad) -> object:
        def fd(p: dict, d: dict) -> dict:
            plus = grad(jax.tree.map(lambda x, dx: x + EPS * dx, p, d))
            minus = grad(jax.tree.map(lambda x, dx: x - EPS * dx, p, d))
            return jax.tree.map(lambda a, b: (a - b) / (2 * EPS), plus, minus)

        return jax.jit(fd)

    # diffrax's example "Computing second-order sensitivities": its default adjoint supports
    # forward over reverse when the Runge-Kutta stage loop is bounded and nothing but t1 is
    # saved (with the default stage loop or SaveAt(ts=...), jax refuses: "can't apply
    # forward-mode autodiff (jvp) to a custom_vjp function").
    bounded = diffrax.Dopri5(scan_kind="bounded")
    recursive = diffrax_solver("mlp", ts, solver=bounded, saveat=final, max_steps=MAX_STEPS)
    # the adjoint diffrax documents for forward and reverse mode together (any SaveAt); its
    # cost grows with max_steps.
    direct = diffrax_solver("mlp", ts, adjoint=diffrax.DirectAdjoint(), max_steps=MAX_STEPS)
    variants = {
        'RecursiveCheckpointAdjoint, Dopri5(scan_kind="bounded"), SaveAt(t1=True)': hvp(recursive),
        f"DirectAdjoint, SaveAt(ts=[0, 1]), max_steps={MAX_STEPS}": hvp(direct),
    }
    plain = diffrax_solver("mlp", ts, saveat=final, max_steps=MAX_STEPS)
    grad = jax.jit(jax.grad(loss(plain)))
    fd = finite_differences(grad)
    fd_first = first_call(lambda: jax.block_until_ready(fd(params, direction)))
    fd_time, fd_value = timed(lambda: jax.block_until_ready(fd(params, direction)), repeats)
    steps = int(plain(params, y0_j).stats["num_steps"])

    # diffrax stops gradients through its step-size controller: its HVP is the derivative with
    # the step sizes held, while the finite differences above let them adapt. The same finite
    # differences with the steps frozen at the unperturbed solve's (StepTo) separate the two.
    saved = diffrax_solver("mlp", ts, saveat=diffrax.SaveAt(t0=True, steps=True),
                           max_steps=MAX_STEPS)(params, y0_j).ts  # fmt: skip
    step_times = jnp.asarray(np.asarray(saved)[np.isfinite(np.asarray(saved))])
    frozen = diffrax_solver("mlp", ts, controller=diffrax.StepTo(ts=step_times), saveat=final,
                            max_steps=MAX_STEPS)  # fmt: skip
    fd_frozen = finite_differences(jax.jit(jax.grad(loss(frozen))))(params, direction)

    rows, values = [], []
    for name, fn in variants.items():
        compile_s = first_call(lambda fn=fn: jax.block_until_ready(fn(params, direction)))
        exact_time, exact = timed(
            lambda fn=fn: jax.block_until_ready(fn(params, direction)), repeats
        )
        values.append(exact)
        rows.append({
            "mode": name, "hvp_s": exact_time, "fd_s": fd_time, "first_call_s": compile_s,
            "max_rel_diff": _max_rel(exact, fd_value),
            "max_rel_diff_frozen_steps": _max_rel(exact, fd_frozen),
            "max_rel_diff_vs_torch_backprop": _max_rel(
                {k: np.asarray(x) for k, x in torch_reference["hvp"].items()},
                {k: np.asarray(x) for k, x in exact.items()},
            ),
        })  # fmt: skip
    notes = {
        "steps": steps,
        "torch_steps": torch_reference["steps"],
        "fd_first_call_s": fd_first,
        "max_rel_diff_between_adjoints": _max_rel(values[0], values[1]),
    }
    return rows, notes


def diffrax_vmap_row(repeats: int, torch_batched: torch.Tensor) -> dict:
    """jax.vmap over the same 64 parameter sets of the jitted diffrax solve, against a Python
    loop of 64 calls of the jitted solve."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    _, y0, t, stacked = vmap_problem()
    y0_j, ts = jnp.asarray(y0.numpy()), jnp.asarray(t.numpy())
    sets = {k: jnp.asarray(v.numpy()) for k, v in stacked.items()}
    solve = diffrax_solver("mlp", ts, max_steps=MAX_STEPS)
    one = jax.jit(lambda p: solve(p, y0_j).ys[-1])
    many = jax.jit(jax.vmap(lambda p: solve(p, y0_j).ys[-1]))

    def loop() -> object:
        return jax.block_until_ready(
            jnp.stack([one({k: v[i] for k, v in sets.items()}) for i in range(SETS)])
        )

    vmap_first = first_call(lambda: jax.block_until_ready(many(sets)))
    loop_first = first_call(lambda: jax.block_until_ready(one({k: v[0] for k, v in sets.items()})))
    vmap_time, batched = timed(lambda: jax.block_until_ready(many(sets)), repeats)
    loop_time, looped = timed(loop, repeats)
    return {"sets": SETS, "vmap_s": vmap_time, "loop_s": loop_time,
            "max_abs_diff": float(jnp.abs(batched - looped).max()),
            "max_abs_diff_vs_torch_vmap": float(np.abs(np.asarray(batched)
                                                       - torch_batched.numpy()).max()),
            "vmap_first_call_s": vmap_first, "loop_first_call_s": loop_first}  # fmt: skip


# -- report ------------------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.0f} ms" if seconds >= 0.01 else f"{seconds * 1e3:.1f} ms"


def markdown(report: dict) -> str:
    env, hvp, vm, jx = report["environment"], report["hvp"], report["vmap"], report["diffrax"]
    versions = f"; diffrax {env['diffrax']}, jax {env['jax']}" if jx else ""
    xla = "XLA: one thread" if env["threads"] == 1 else "XLA: its default threads"
    lines = [
        "# Second derivatives and vmap through the solve (`benchmarks/bench_func.py`)",
        "",
        f"torch {env['torch']}{versions}; {env['threads']} torch thread(s) ({xla}), "
        f"{env['cpu']} ({env['cpu_count']} cores); best of {env['repeats']} run(s) after a "
        f"warm-up (load average {env['load_start']:.1f} at the start, {env['load_end']:.1f} at "
        "the end).",
        "",
        "Hessian-vector product of the MLP Neural ODE loss (2→64→2 tanh, batch 256, dopri5, "
        "rtol = atol = 1e-6, float64, t from 0 to 1, loss mean(y(1)²)) with respect to the "
        "parameters:",
        "",
        "| library | gradient mode | HVP | finite differences of two gradients | "
        "largest difference / largest entry |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for row in hvp:
        lines.append(f"| neuralode | {row['mode']} | {_ms(row['hvp_s'])} | {_ms(row['fd_s'])}"
                     f" | {row['max_rel_diff']:.1e} |")  # fmt: skip
    for row in jx["hvp"] if jx else []:
        lines.append(f"| diffrax | {row['mode']} | {_ms(row['hvp_s'])} | "
                     f"{_ms(row['fd_s'])} | {row['max_rel_diff']:.1e} |")  # fmt: skip
    lines.append("")
    lines.append("neuralode: HVP by double backward (`torch.autograd.grad` of a "
                 "`create_graph=True` gradient); finite differences of two gradients in the same "
                 "mode.")  # fmt: skip
    if jx:
        notes, rows = jx["hvp_notes"], jx["hvp"]
        compiles = ", ".join(f"{r['first_call_s']:.0f} s" for r in rows)
        lines += [
            "",
            "diffrax: the same weights, y0 and v; Dopri5, `PIDController(rtol=1e-6, atol=1e-6)`, "
            "the first step chosen by diffrax, float64 (`jax_enable_x64`). The HVP is "
            "`jax.jit` of `jax.jvp` of `jax.grad` (forward over reverse). diffrax's default "
            "`RecursiveCheckpointAdjoint` supports it with the Runge–Kutta stage loop bounded "
            "and only t1 saved, as in diffrax's second-order example (otherwise JAX refuses to "
            "apply forward mode to its custom_vjp); `DirectAdjoint` supports both modes with "
            "any output times, at a cost that grows with max_steps; `ForwardMode` has no "
            "reverse mode and `BacksolveAdjoint` no forward mode. Finite differences: of two "
            f"jitted gradients (`RecursiveCheckpointAdjoint`, step {EPS:g} along v). First "
            f"(compiling) calls, untimed: {compiles} for the HVPs, "
            f"{notes['fd_first_call_s']:.0f} s for the finite differences.",
            "",
            f"- diffrax's solve takes {notes['steps']} steps, neuralode's "
            f"{notes['torch_steps']}: not the same discretisation, so the HVPs differ by the "
            "solvers' error; largest difference from neuralode's backprop HVP / its largest "
            "entry: "
            + ", ".join(f"{r['max_rel_diff_vs_torch_backprop']:.1e}" for r in rows)
            + f". The two diffrax adjoints agree to {notes['max_rel_diff_between_adjoints']:.0e}.",
            "- diffrax stops gradients through its step-size controller (so does neuralode's, "
            "which runs under no_grad), so the HVP is the derivative with the step sizes held, "
            "while the finite differences let the steps adapt to the perturbed weights. Finite "
            "differences with the steps frozen at the unperturbed solve's times (`StepTo`) "
            "differ from the diffrax HVP by "
            + ", ".join(f"{r['max_rel_diff_frozen_steps']:.1e}" for r in rows)
            + " of its largest entry.",
        ]
    else:
        lines += ["", f"diffrax rows skipped: {report['diffrax_skipped']}."]
    lines += [
        "",
        f"Over {vm['sets']} parameter sets (batch 256 each, dopri5, no gradient), one batched "
        "solve (each set its own steps) against a Python loop of as many solves:",
        "",
        "| library | batched | loop | speedup | largest difference |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| neuralode: `torch.func.vmap` (functional_call) | {_ms(vm['vmap_s'])} | "
        f"{_ms(vm['loop_s'])} | {vm['loop_s'] / vm['vmap_s']:.1f}× | "
        f"{vm['max_abs_diff']:.1e} |",
    ]
    if jx:
        dv = jx["vmap"]
        lines += [
            f"| diffrax: `jax.vmap` of the jitted solve | {_ms(dv['vmap_s'])} | "
            f"{_ms(dv['loop_s'])} | {dv['loop_s'] / dv['vmap_s']:.1f}× | "
            f"{dv['max_abs_diff']:.1e} |",
            "",
            "diffrax: `jax.jit(jax.vmap(solve))` against a loop of `jax.jit(solve)` calls, "
            f"both compiled before the timing ({dv['vmap_first_call_s']:.0f} s and "
            f"{dv['loop_first_call_s']:.0f} s); under vmap the solve loops until every set is "
            "done, each set with its own step sizes. Largest difference from neuralode's "
            f"final states: {dv['max_abs_diff_vs_torch_vmap']:.1e} (different step sequences).",
        ]
    else:
        lines += ["", f"diffrax row skipped: {report['diffrax_skipped']}."]
    lines += [
        "",
        f"The machine is shared ({env['cpu_count']} cores, other jobs running; load averages "
        "above): single runs of the same call vary severalfold, so the times are not a ranking "
        "of the modes or of the libraries; the accuracy columns are stable from run to run. "
        "With more torch threads than free cores, the intra-op thread pool stalls on small "
        "operations, the loop of small solves most of all: on a busy machine use `--threads 1`.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="results")
    args = parser.parse_args()
    versions = configure_jax(args.threads, x64=True)  # before JAX's first computation
    torch.set_num_threads(args.threads)
    repeats = 1 if args.quick else 5
    env = {"torch": torch.__version__, **(versions or {}), "threads": args.threads,
           "cpu": platform.processor() or "cpu", "cpu_count": os.cpu_count(),
           "repeats": repeats, "load_start": os.getloadavg()[0]}  # fmt: skip
    hvp, reference = hvp_rows(repeats)
    vm, batched = vmap_row(repeats)
    report: dict = {"environment": env, "hvp": hvp, "vmap": vm, "diffrax": None}
    if versions is None:
        report["diffrax_skipped"] = 'jax or diffrax not installed (`pip install -e ".[bench-jax]"`)'
    else:
        jx_hvp, notes = diffrax_hvp_rows(repeats, reference)
        report["diffrax"] = {"hvp": jx_hvp, "hvp_notes": notes,
                             "vmap": diffrax_vmap_row(repeats, batched)}  # fmt: skip
    env["load_end"] = os.getloadavg()[0]
    text = markdown(report)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "func.md").write_text(text)
    (out / "func.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
