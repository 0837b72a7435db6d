"""Where one compiled solve's time goes: the small MLP (2→64→2, tanh, dopri5, rtol = atol =
1e-6, float32, no autograd graph) at batch 1 and 256.

The per-call wall time (median of back-to-back calls), then one block of calls under
``torch.profiler``, split into the parts of a call that the profiler names: dynamo's guard
evaluation ("TorchDynamo Cache Lookup"), the Python before the graph ("Pregraph bytecode"),
the compiled graph itself ("Call CompiledFxGraph": the whole while_loop of steps), the wrapper
around it, and the tensor operations outside the compiled region (building the problem and
reading its summary), and the rest, the Python around them (checking the arguments, building the
problem and the loop). The profiler adds its own cost to each part (more to the many small
ones), so the shares, not the microseconds, are what to read.

Usage: ``python benchmarks/profile_compiled_call.py [--out results]``; writes
results/compiled_call_profile.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

import neuralode

sys.path.insert(0, str(Path(__file__).parent))
from bench_solvers import MLPField, environment

TOL = 1e-6
PARTS = {
    "TorchDynamo Cache Lookup": "guards (dynamo's cache lookup)",
    "Pregraph bytecode": "Python before the graph",
    "AOTDispatcher Runtime Wrapper Prologue": "AOT wrapper",
    "## Call CompiledFxGraph None ##": "compiled graph (the whole loop)",
}
REGION = "Torch-Compiled Region"


def profile_batch(batch: int, calls: int) -> dict[str, float]:
    """Wall time per call (µs) and the profiler's parts of a call (µs per call)."""
    torch.manual_seed(0)
    field, y0, t = MLPField(), torch.randn(batch, 2), torch.linspace(0.0, 1.0, 2)

    def solve() -> torch.Tensor:
        return neuralode.odeint(field, y0, t, rtol=TOL, atol=TOL, options={"compile": True})

    with torch.no_grad():
        start = time.perf_counter()
        solve()
        first = time.perf_counter() - start
        for _ in range(20):
            solve()
        times = []
        for _ in range(calls):
            start = time.perf_counter()
            solve()
            times.append(time.perf_counter() - start)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(calls):
                solve()
        wall = sum(times) / calls  # (the profiled block's wall time, per call)
        start = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU]):
            for _ in range(calls):
                solve()
        profiled = (time.perf_counter() - start) / calls
    events = {e.key: e for e in prof.key_averages()}
    parts = {label: events[key].cpu_time_total / calls for key, label in PARTS.items()
             if key in events}  # fmt: skip
    region = events[REGION].cpu_time_total / calls if REGION in events else 0.0
    inside = sum(v for k, v in parts.items() if k != PARTS["TorchDynamo Cache Lookup"])
    parts["wrapper of the compiled region (rest)"] = max(region - inside, 0.0)
    outside = [e.self_cpu_time_total for e in prof.events()
               if e.name.startswith("aten::") and not _within_region(e)]  # fmt: skip
    parts["tensor operations outside the compiled region"] = sum(outside) / calls
    rest = 1e6 * profiled - sum(parts.values())
    parts["the rest: Python outside the compiled region (checks, problem, loop)"] = rest
    return {
        "batch": batch,
        "first_call_s": first,
        "median_us": 1e6 * statistics.median(times),
        "mean_us": 1e6 * wall,
        "profiled_us": 1e6 * profiled,
        **{f"part: {k}": v for k, v in parts.items()},
    }


def _within_region(event: object) -> bool:
    """The event runs inside the compiled region (one of its ancestors is)."""
    parent = getattr(event, "cpu_parent", None)
    while parent is not None:
        if parent.name == REGION:
            return True
        parent = parent.cpu_parent
    return False


def markdown(rows: list[dict[str, float]], env: dict[str, object], calls: int) -> str:
    labels = [k for k in rows[0] if k.startswith("part: ")]
    lines = [
        "# Where one compiled solve's time goes",
        "",
        f"- {env['date']}; {env['cpu']}; 1 thread; torch {env['torch']}; "
        "`python benchmarks/profile_compiled_call.py`",
        "- MLP 2→64→2 (tanh), dopri5, rtol = atol = 1e-6, float32, no autograd graph; "
        f"median of {calls} back-to-back calls; the parts are the profiler's, per call, over "
        f"{calls} profiled calls (the profiler's own cost inflates them: read the shares)",
        "",
        "| | " + " | ".join(f"batch {r['batch']:.0f}" for r in rows) + " |",
        "| --- | " + " | ".join("---:" for _ in rows) + " |",
        "| first call (compile), s | " + " | ".join(f"{r['first_call_s']:.1f}" for r in rows)
        + " |",
        "| per call, µs (median) | " + " | ".join(f"{r['median_us']:.0f}" for r in rows) + " |",
        "| per call under the profiler, µs | "
        + " | ".join(f"{r['profiled_us']:.0f}" for r in rows) + " |",
    ]  # fmt: skip
    for label in labels:
        cells = [f"{r[label]:.0f} ({100 * r[label] / r['profiled_us']:.0f}%)" for r in rows]
        lines.append(f"| {label[6:]}, µs (share) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200, help="calls per measurement")
    parser.add_argument("--out", type=Path, default=Path("results"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = [profile_batch(batch, args.calls) for batch in (1, 256)]
    env = environment(1)
    args.out.mkdir(parents=True, exist_ok=True)
    text = markdown(rows, env, args.calls)
    (args.out / "compiled_call_profile.md").write_text(text)
    payload = {"environment": env, "rows": rows}
    (args.out / "compiled_call_profile.json").write_text(json.dumps(payload, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    main()
