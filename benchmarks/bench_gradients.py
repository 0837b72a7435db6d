"""Memory and time of one gradient, for each gradient mode, against torchdiffeq's adjoint.

Memory: peak resident memory added by one forward+backward pass, measured in a fresh subprocess
per configuration (ru_maxrss after the pass minus ru_maxrss before it), for 10, 100 and 1000
fixed rk4 steps on a state of 131,072 floats. The subprocesses run with glibc's mmap threshold
fixed at 128 KiB (MALLOC_MMAP_THRESHOLD_), so that freed tensors leave the resident set: with the
default, adaptive threshold, heap fragmentation makes the peak reflect memory no longer in use.
Time: one forward+backward pass of the small MLP vector field (2→64→2, tanh, batch 256) with
dopri5.

    python benchmarks/bench_gradients.py [--quick] [--threads 2] [--out results]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

MODES = ["backprop", "checkpoint", "adjoint", "torchdiffeq_adjoint"]
TIMED_MODES = [
    "backprop", "checkpoint", "adjoint", "adjoint_seminorm", "torchdiffeq_backprop",
    "torchdiffeq_adjoint",
]  # fmt: skip
STATE_SHAPE = (2048, 64)
LABELS = {
    "backprop": "backprop (through the solver)",
    "checkpoint": "checkpoint (segments of √steps steps)",
    "adjoint": "adjoint",
    "torchdiffeq_adjoint": "torchdiffeq adjoint (an output time per step)",
}
CHILD_ENVIRONMENT = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}  # 131,072 floats


class Field(torch.nn.Module):
    """dy/dt = tanh(y W) − y/2 on rows of width ``width``."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(width, width) / width**0.5)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.tanh(y @ self.weight) - 0.5 * y


def gradient_pass(mode: str, func: torch.nn.Module, y0: torch.Tensor, steps: int, **solver):
    """One forward+backward pass; returns (forward NFE, backward NFE) where known."""
    import torchdiffeq

    from neuralode import Checkpointed, odeint, odeint_adjoint

    if mode == "torchdiffeq_adjoint":  # its fixed-step grid is the output times
        t = torch.linspace(0, 1, steps + 1)
        ys = torchdiffeq.odeint_adjoint(func, y0, t, method="rk4", **solver)
        ys[-1].square().mean().backward()
        return None, None
    t = torch.tensor([0.0, 1.0])
    options = {"step_size": 1.0 / steps}
    if mode == "backprop":
        ys, stats = odeint(func, y0, t, method="rk4", options=options, return_stats=True, **solver)
    elif mode == "checkpoint":
        every = max(1, round(steps**0.5))
        ys, stats = odeint(func, y0, t, method="rk4", options=options, return_stats=True,
                           gradient=Checkpointed(every=every), **solver)  # fmt: skip
    else:
        ys, stats = odeint_adjoint(func, y0, t, method="rk4", options=options, return_stats=True,
                                   **solver)  # fmt: skip
    ys[-1].square().mean().backward()
    return stats.nfe, stats.backward_nfe


def measure_memory(mode: str, steps: int) -> dict:
    """Run in a subprocess: peak memory added by one gradient pass, in MiB."""
    torch.manual_seed(0)
    func = Field(STATE_SHAPE[1])
    y0 = torch.randn(*STATE_SHAPE, requires_grad=True)
    gradient_pass(mode, func, torch.randn(4, STATE_SHAPE[1], requires_grad=True), 2)  # warm-up
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    nfe, backward_nfe = gradient_pass(mode, func, y0, steps)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"mode": mode, "steps": steps, "peak_mib": (after - before) / 1024, "seconds": seconds,
            "nfe": nfe, "backward_nfe": backward_nfe}  # fmt: skip


def time_mlp(mode: str, repeats: int) -> dict:
    """Median wall time of one forward+backward pass of the MLP problem (dopri5, tol 1e-6)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 64), torch.nn.Tanh(), torch.nn.Linear(64, 2))

    class MLP(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self.net(y)

    func = MLP()
    y0 = torch.randn(256, 2, requires_grad=True)
    t = torch.tensor([0.0, 1.0])
    tolerances = {"rtol": 1e-6, "atol": 1e-6}
    run = lambda: _mlp_pass(mode, func, y0, t, tolerances)  # noqa: E731
    nfe = run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return {"mode": mode, "ms": 1e3 * statistics.median(times), "nfe": nfe}


def _mlp_pass(mode, func, y0, t, tolerances):
    import torchdiffeq

    from neuralode import odeint, odeint_adjoint

    if mode == "torchdiffeq_adjoint":
        ys = torchdiffeq.odeint_adjoint(func, y0, t, **tolerances)
        ys[-1].square().mean().backward()
        return None
    if mode == "torchdiffeq_backprop":
        ys = torchdiffeq.odeint(func, y0, t, **tolerances)
        ys[-1].square().mean().backward()
        return None
    if mode.startswith("adjoint"):
        options = {"norm": "seminorm"} if mode == "adjoint_seminorm" else None
        ys, stats = odeint_adjoint(func, y0, t, adjoint_options=options, return_stats=True,
                                   **tolerances)  # fmt: skip
    else:
        ys, stats = odeint(func, y0, t, gradient=mode, return_stats=True, **tolerances)
    ys[-1].square().mean().backward()
    return f"{stats.nfe}+{stats.backward_nfe}"


def plot_memory(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for mode in MODES:
        points = sorted((r["steps"], r["peak_mib"]) for r in rows if r["mode"] == mode)
        if points:
            label = LABELS.get(mode, mode)
            ax.plot(*zip(*points, strict=True), marker="o", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("solver steps (rk4, fixed step)")
    ax.set_ylabel("peak memory of one forward+backward (MiB)")
    ax.set_title(
        f"Gradient memory against steps, state of {STATE_SHAPE[0] * STATE_SHAPE[1]:,} floats"
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer repeats, steps up to 100")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--out", type=Path, default=Path("results"), help="output folder")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(measure_memory(args.child[0], int(args.child[1]))))
        return 0

    step_counts = [10, 100] if args.quick else [10, 100, 1000]
    memory = []
    for steps in step_counts:
        for mode in MODES:
            command = [
                sys.executable,
                __file__,
                "--threads",
                str(args.threads),
                "--child",
                mode,
                str(steps),
            ]
            output = subprocess.run(
                command, check=True, capture_output=True, text=True, env=CHILD_ENVIRONMENT
            ).stdout
            memory.append(json.loads(output.strip().splitlines()[-1]))
            row = memory[-1]
            mib, seconds = row["peak_mib"], row["seconds"]
            print(f"memory {mode:20s} {steps:5d} steps {mib:8.1f} MiB {seconds:6.2f} s", flush=True)

    repeats = 3 if args.quick else 10
    timing = [time_mlp(mode, repeats) for mode in TIMED_MODES]
    reference = next(r["ms"] for r in timing if r["mode"] == "torchdiffeq_adjoint")

    cpu = platform.processor() or platform.machine()
    rows_x_cols = f"{STATE_SHAPE[0]}×{STATE_SHAPE[1]}"
    lines = [
        "# Gradient modes: memory and time",
        "",
        f"torch {torch.__version__}, {args.threads} threads, {cpu}. "
        "Command: `python benchmarks/bench_gradients.py`.",
        "",
        f"## Peak memory of one forward+backward pass (rk4, state {rows_x_cols} float32)",
        "",
        "| mode | "
        + " | ".join(f"{s} steps (MiB)" for s in step_counts)
        + " | NFE fwd+bwd at the most steps |",
        "| --- | " + " | ".join("---:" for _ in step_counts) + " | --- |",
    ]
    for mode in MODES:
        rows = [r for r in memory if r["mode"] == mode]
        last = rows[-1]
        nfe = "—" if last["nfe"] is None else f"{last['nfe']}+{last['backward_nfe']}"
        lines.append(
            f"| {mode.replace('_', ' ')} | "
            + " | ".join(f"{r['peak_mib']:.1f}" for r in rows)
            + f" | {nfe} |"
        )
    lines += [
        "",
        "Peak resident memory above the process's baseline, glibc mmap threshold fixed at 128 KiB. "
        "Checkpoint uses segments of √steps steps. torchdiffeq's fixed-step grid is its output "
        "times, so its row solves with as many output times as steps (memory grows with them).",
        "",
        "## Time of one forward+backward pass: MLP 2→64→2, batch 256, dopri5, rtol=atol=1e-6",
        "",
        "| mode | ms per gradient | NFE fwd+bwd | speed-up vs torchdiffeq adjoint |",
        "| --- | ---: | --- | ---: |",
    ]
    for row in timing:
        name, nfe, speedup = row["mode"].replace("_", " "), row["nfe"] or "—", reference / row["ms"]
        lines.append(f"| {name} | {row['ms']:.2f} | {nfe} | {speedup:.2f}× |")
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_gradients.md").write_text(text)
    summary = {
        "torch": torch.__version__,
        "threads": args.threads,
        "memory": memory,
        "timing": timing,
    }
    (args.out / "bench_gradients.json").write_text(json.dumps(summary, indent=2))
    plot_memory(memory, args.out / "bench_memory.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
