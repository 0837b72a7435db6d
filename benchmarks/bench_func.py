"""Second derivatives and torch.func.vmap through the solve (issue 20).

1. A Hessian-vector product of the small-MLP Neural ODE loss (2→64→2, tanh, batch 256, dopri5,
   rtol = atol = 1e-6, float32 weights in float64 here so that finite differences are
   meaningful) with respect to the parameters, in each gradient mode (double backward:
   ``torch.autograd.grad(grad, params, v)`` of a ``create_graph=True`` gradient), against
   central finite differences of two gradients; the largest difference between the two.
2. ``torch.func.vmap`` over 64 parameter sets (``functional_call``; one solve of the batch,
   each instance its own steps) against a Python loop of 64 solves; the largest difference.

    python benchmarks/bench_func.py [--quick] [--threads 2] [--out results]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from neuralode import odeint

MODES = ["backprop", "checkpoint", "adjoint"]
TOL = {"rtol": 1e-6, "atol": 1e-6}


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


def hvp_rows(repeats: int) -> list[dict]:
    torch.manual_seed(0)
    field = Field().double()
    y0 = torch.randn(256, 2, dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    params = list(field.parameters())
    v = [torch.randn_like(p) for p in params]

    def gradient(mode: str, create_graph: bool) -> list[torch.Tensor]:
        loss = odeint(field, y0, t, gradient=mode, **TOL)[-1].pow(2).mean()
        return list(torch.autograd.grad(loss, params, create_graph=create_graph))

    def double_backward(mode: str) -> list[torch.Tensor]:
        return list(torch.autograd.grad(gradient(mode, True), params, v))

    def finite_differences(mode: str, eps: float = 1e-4) -> list[torch.Tensor]:
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

    rows = []
    for mode in MODES:
        exact_time, exact = timed(lambda mode=mode: double_backward(mode), repeats)
        fd_time, fd = timed(lambda mode=mode: finite_differences(mode), repeats)
        scale = max(float(x.abs().max()) for x in exact)
        diff = max(float((a - b).abs().max()) for a, b in zip(exact, fd, strict=True))
        rows.append({"mode": mode, "hvp_s": exact_time, "fd_s": fd_time,
                     "max_rel_diff": diff / scale})  # fmt: skip
    return rows


def vmap_row(repeats: int, sets: int = 64) -> dict:
    torch.manual_seed(1)
    field = Field().double()
    y0 = torch.randn(256, 2, dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    base = {name: p.detach() for name, p in field.named_parameters()}
    stacked = {
        name: p + 0.1 * torch.randn(sets, *p.shape, dtype=p.dtype) for name, p in base.items()
    }

    def solve(params: dict) -> torch.Tensor:
        func = lambda t, y: torch.func.functional_call(field, params, (t, y))  # noqa: E731
        return odeint(func, y0, t, **TOL)[-1]

    with torch.no_grad():
        vmap_time, batched = timed(lambda: torch.func.vmap(solve)(stacked), repeats)
        loop_time, looped = timed(
            lambda: torch.stack(
                [solve({k: v[i] for k, v in stacked.items()}) for i in range(sets)]
            ),
            repeats,
        )
    return {"sets": sets, "vmap_s": vmap_time, "loop_s": loop_time,
            "max_abs_diff": float((batched - looped).abs().max())}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    repeats = 1 if args.quick else 5
    hvp, vm = hvp_rows(repeats), vmap_row(repeats)
    lines = [
        "# Second derivatives and vmap through the solve (`benchmarks/bench_func.py`)",
        "",
        f"torch {torch.__version__}, {args.threads} threads, {platform.processor() or 'cpu'}; "
        f"best of {repeats} run(s) after a warm-up (load average {os.getloadavg()[0]:.1f}).",
        "",
        "Hessian-vector product of the MLP Neural ODE loss (2→64→2 tanh, batch 256, dopri5, "
        "rtol = atol = 1e-6, float64) with respect to the parameters:",
        "",
        "| gradient mode | HVP by double backward | finite differences of two gradients | "
        "largest difference / largest entry |",
        "| --- | ---: | ---: | ---: |",
    ]
    for row in hvp:
        lines.append(f"| {row['mode']} | {row['hvp_s'] * 1e3:.0f} ms | {row['fd_s'] * 1e3:.0f} ms"
                     f" | {row['max_rel_diff']:.1e} |")  # fmt: skip
    lines += [
        "",
        f"`torch.func.vmap` over {vm['sets']} parameter sets (functional_call, batch 256 each, "
        "dopri5, no gradient) against a Python loop of as many solves:",
        "",
        "| vmap (one solve of the batch, each set its own steps) | loop | speedup | "
        "largest difference |",
        "| ---: | ---: | ---: | ---: |",
        f"| {vm['vmap_s'] * 1e3:.0f} ms | {vm['loop_s'] * 1e3:.0f} ms | "
        f"{vm['loop_s'] / vm['vmap_s']:.1f}× | {vm['max_abs_diff']:.1e} |",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "func.md").write_text(text)
    (out / "func.json").write_text(json.dumps({"hvp": hvp, "vmap": vm}, indent=2))


if __name__ == "__main__":
    main()
