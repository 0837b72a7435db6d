"""The first compiled solve of a new process: compiled there (cold), loaded from the compile cache
(warm), and with the cache off. Writes results/compile_cache.md and .json.

Each case runs in fresh processes, in this order: with an empty cache folder (cold: the solve is
compiled and kept), again with that folder (warm: loaded), and with ``NEURALODE_COMPILE_CACHE=off``
(compiled by torch.compile in the process, the default). Times are wall seconds of the first
``odeint(..., options={"compile": True})`` call in the process (after ``import neuralode`` and
building the field), its median over ``--rounds`` rounds, and the import time. The first call is
split into its phases: tracing (from the call until dynamo hands the graph to neuralode's
backend), the backend (compiling, or for a warm cache the package's key and its loading, which
imports inductor), and the rest (the first run of the compiled code and dynamo's guards).

    python benchmarks/bench_compile_cache.py [--rounds 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_solvers import environment

CHILD = """
import json, sys, time
started = time.perf_counter()
import torch
import neuralode
import neuralode.core.compile_cache as cache
import neuralode.core.compiled as compiled
imported = time.perf_counter() - started
spans = {{}}
def timed(module, name):
    inner = getattr(module, name)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            spans.setdefault(name, (start, time.perf_counter()))
    setattr(module, name, wrapper)
for module, name in ((compiled, "_backend"), (cache, "graph_key"), (cache, "_load")):
    timed(module, name)
torch.set_num_threads({threads})
torch.manual_seed(0)
batch = {batch}
net = torch.nn.Sequential(torch.nn.Linear(2, 64), torch.nn.Tanh(), torch.nn.Linear(64, 2))
y0, t = torch.randn(batch, 2), torch.linspace(0, 1, 2)
options = {{"compile": True, "per_sample": {per_sample}}}
def solve():
    with torch.no_grad():
        return neuralode.odeint(lambda t, y: net(y), y0, t, rtol=1e-6, atol=1e-6, options=options)
start = time.perf_counter()
solve()
end = time.perf_counter()
first = end - start
backend_start, backend_end = spans["_backend"]
phases = {{"trace_s": backend_start - start, "backend_s": backend_end - backend_start,
          "after_s": end - backend_end}}
for name in ("graph_key", "_load"):
    begun, ended = spans.get(name, (0.0, 0.0))
    phases[name.strip("_") + "_s"] = ended - begun
blocks = []
for _ in range(7):
    start = time.perf_counter()
    for _ in range(40):
        solve()
    blocks.append((time.perf_counter() - start) / 40)
later = sorted(blocks)[3]
print(json.dumps({{"import_s": imported, "first_s": first, "later_ms": 1e3 * later, **phases}}))
"""

CASES = {
    "MLP 2-64-2, batch 1": {"batch": 1, "per_sample": False},
    "MLP 2-64-2, batch 256": {"batch": 256, "per_sample": False},
    "MLP 2-64-2, batch 256, per-sample steps": {"batch": 256, "per_sample": True},
}
MODES = ("cold", "warm", "off")
PHASES = ("trace_s", "backend_s", "graph_key_s", "load_s", "after_s")


def first_call(case: dict, cache: str, threads: int) -> dict:
    """One fresh process's import time, first compiled call and later calls."""
    env = {**os.environ, "NEURALODE_COMPILE_CACHE": cache}
    code = CHILD.format(threads=threads, **case)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, check=True)  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(rounds: int, threads: int) -> list[dict]:
    rows = []
    for name, case in CASES.items():
        runs: dict[str, list[dict]] = {mode: [] for mode in MODES}
        for _ in range(rounds):
            with tempfile.TemporaryDirectory() as folder:
                runs["cold"].append(first_call(case, folder, threads))
                runs["warm"].append(first_call(case, folder, threads))
            runs["off"].append(first_call(case, "off", threads))
        row = {"case": name}
        for mode, results in runs.items():
            for key in ("import_s", "first_s", "later_ms", *PHASES):
                row[f"{mode}_{key}"] = statistics.median(r[key] for r in results)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def table(rows: list[dict], rounds: int, threads: int) -> str:
    setting = environment(threads)
    lines = [
        "# The first compiled solve of a new process",
        "",
        f"- `python benchmarks/bench_compile_cache.py --rounds {rounds} --threads {threads}`; "
        f"{setting['date']}; {setting['cpu']} ({setting['cpu_count']} cores, load average "
        f"{setting['load_average_1min_start']} at the start); torch {setting['torch']}",
        "- Fresh processes per case: cold (empty cache folder: compiled and kept), warm (the same "
        "folder: loaded), cache off (torch.compile in the process, the default). Median "
        f"over {rounds} rounds of the first `odeint(..., options={{'compile': True}})` call's "
        "wall time (dopri5, rtol = atol = 1e-6, float32, under `torch.no_grad()`), and of later "
        "calls (the median of 7 blocks of 40 calls in each process).",
        "",
        "| case | first call, cold (s) | first call, warm (s) | first call, cache off (s) | "
        "later calls, warm (ms) | later calls, cache off (ms) | import neuralode (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['cold_first_s']:.2f} | {r['warm_first_s']:.2f} | "
            f"{r['off_first_s']:.2f} | {r['warm_later_ms']:.3f} | {r['off_later_ms']:.3f} | "
            f"{r['warm_import_s']:.2f} |"
        )
    lines += [
        "",
        "The first call in phases (s): tracing (from the call until dynamo hands the graph to "
        "the backend), the backend (compiling; warm: the package's key, then loading it, which "
        "imports inductor), the rest (the first run of the compiled code, dynamo's guards).",
        "",
        "| case | process | first call | tracing | backend | of which key | of which loading | "
        "rest |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        for mode in MODES:
            lines.append(
                f"| {r['case']} | {mode} | {r[f'{mode}_first_s']:.2f} | "
                + " | ".join(f"{r[f'{mode}_{phase}']:.2f}" for phase in PHASES)
                + " |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the three processes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--out", type=Path, default=Path("results"), help="where to write")
    args = parser.parse_args()
    rows = measure(args.rounds, args.threads)
    text = table(rows, args.rounds, args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "compile_cache.json").write_text(json.dumps(rows, indent=1) + "\n")
    (args.out / "compile_cache.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
