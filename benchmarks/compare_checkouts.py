"""Speed of this checkout against another one (an older commit), case by case.

Runs ``benchmarks/bench_speed.py`` of each checkout in turn, old then new, ``--rounds`` times
in one sitting (each checkout's own script, with its own ``src`` first on the path), and writes
a table of neuralode's rows: the best time of each checkout over the rounds and the ratio
new / old (< 1: faster now). torchdiffeq's rows, whose code is the same in both runs, show how
much the machine drifted between runs.

Usage::

    git worktree add /tmp/old <commit>
    python benchmarks/compare_checkouts.py --old /tmp/old [--rounds 2] [--budget 3]

Writes results/core_speed_comparison.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = "torchdiffeq"


def run_bench(checkout: Path, out: Path, budget: float, threads: int) -> dict:
    """One run of the checkout's bench_speed.py; its speed.json."""
    env = {**os.environ, "PYTHONPATH": str(checkout / "src")}
    command = [sys.executable, str(checkout / "benchmarks" / "bench_speed.py"),
               "--budget", str(budget), "--threads", str(threads), "--out", str(out)]  # fmt: skip
    subprocess.run(command, check=True, env=env, cwd=checkout, stdout=subprocess.DEVNULL)
    return json.loads((out / "speed.json").read_text())


def best_times(runs: list[dict]) -> dict[tuple[str, str, str], float]:
    """(case, library, variant) → the least time (ms) over the runs."""
    best: dict[tuple[str, str, str], float] = {}
    for run in runs:
        for row in run["rows"]:
            key = (row["case"], row["library"], row["variant"])
            best[key] = min(best.get(key, float("inf")), row["time_ms"])
    return best


def table(old: dict, new: dict, rounds: int, commit: str) -> tuple[str, list[dict]]:
    rows = []
    for key in old:
        case, library, variant = key
        if library not in ("neuralode", REFERENCE) or key not in new:
            continue
        times = {"old_ms": old[key], "new_ms": new[key], "ratio": new[key] / old[key]}
        rows.append({"case": case, "library": library, "variant": variant, **times})
    lines = [
        "# Speed of the rebuilt core against the previous commit",
        "",
        f"- `python benchmarks/compare_checkouts.py --old <worktree of {commit}>`: "
        f"benchmarks/bench_speed.py of each checkout, old then new, {rounds} round(s) in one "
        "sitting; the best time of each over the rounds. Ratio new / old: < 1 is faster now.",
        f"- {REFERENCE}'s rows run the same code in both: their ratio is the machine's drift.",
        "",
        "| case | library | variant | old (ms) | new (ms) | new / old |",
        "| --- | --- | --- | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(
            f"| {row['case']} | {row['library']} | {row['variant']} | {row['old_ms']:.3g} | "
            f"{row['new_ms']:.3g} | {row['ratio']:.3f} |"
        )
    return "\n".join(lines) + "\n", rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", type=Path, required=True, help="checkout of the old commit")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each checkout")
    parser.add_argument("--budget", type=float, default=3.0, help="seconds of timing per case")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    args = parser.parse_args(argv)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=args.old, text=True,
                            capture_output=True, check=True).stdout.strip()  # fmt: skip
    runs: dict[str, list[dict]] = {"old": [], "new": []}
    with tempfile.TemporaryDirectory() as scratch:
        for round_index in range(args.rounds):
            for name, checkout in (("old", args.old.resolve()), ("new", ROOT)):
                out = Path(scratch) / f"{name}{round_index}"
                print(f"round {round_index + 1}/{args.rounds}: {name} ({checkout})", flush=True)
                runs[name].append(run_bench(checkout, out, args.budget, args.threads))
    text, rows = table(best_times(runs["old"]), best_times(runs["new"]), args.rounds, commit)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "core_speed_comparison.md").write_text(text)
    record = {"old_commit": commit, "rounds": args.rounds, "budget_s": args.budget, "rows": rows,
              "environment": runs["new"][-1]["environment"]}  # fmt: skip
    (args.out / "core_speed_comparison.json").write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
