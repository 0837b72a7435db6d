"""Speed of this checkout against another one (an older commit), case by case.

Runs ``benchmarks/bench_speed.py`` of each checkout in turn, old then new, ``--rounds`` times
in one sitting (each checkout's own script, with its own ``src`` first on the path), and writes
a table of neuralode's rows: the median time of each checkout over the rounds, and the median
over rounds of the ratio new / old of the two runs of a round (< 1: faster now), which holds
better than single times when the machine's speed drifts. torchdiffeq's rows, whose code is the
same in both runs, show how much the machine drifted between the runs of a round.

Usage::

    git worktree add /tmp/old <commit>
    python benchmarks/compare_checkouts.py --old /tmp/old [--rounds 4] [--budget 2] [--quick]

Writes results/core_speed_comparison.{md,json} (``--name`` for another name).
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

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = "torchdiffeq"


def commit_of(checkout: Path) -> str:
    """The short hash of the checkout's HEAD."""
    command = ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()


def run_bench(checkout: Path, out: Path, budget: float, threads: int, quick: bool) -> dict:
    """One run of the checkout's bench_speed.py; its speed.json."""
    env = {**os.environ, "PYTHONPATH": str(checkout / "src")}
    command = [sys.executable, str(checkout / "benchmarks" / "bench_speed.py"),
               "--budget", str(budget), "--threads", str(threads), "--out", str(out)]  # fmt: skip
    if quick:
        command.append("--quick")
    subprocess.run(command, check=True, env=env, cwd=checkout, stdout=subprocess.DEVNULL)
    return json.loads((out / "speed.json").read_text())


def times(run: dict) -> dict[tuple[str, str, str], float]:
    """(case, library, variant) → time (ms) of one run."""
    return {(row["case"], row["library"], row["variant"]): row["time_ms"] for row in run["rows"]}


def table(old: list[dict], new: list[dict], settings: str, commit: str) -> tuple[str, list[dict]]:
    """The comparison as markdown, and its rows."""
    old_times, new_times = [times(run) for run in old], [times(run) for run in new]
    rows: list[dict] = []
    for key in old_times[0]:
        case, library, variant = key
        if library not in ("neuralode", REFERENCE) or key not in new_times[0]:
            continue
        pairs = [(o[key], n[key]) for o, n in zip(old_times, new_times, strict=True)]
        rows.append({
            "case": case, "library": library, "variant": variant,
            "old_ms": statistics.median(o for o, _ in pairs),
            "new_ms": statistics.median(n for _, n in pairs),
            "ratio": statistics.median(n / o for o, n in pairs),
            "ratios": [n / o for o, n in pairs],
        })  # fmt: skip
    return render(rows, settings, commit), rows


def render(rows: list[dict], settings: str, commit: str) -> str:
    """The comparison's rows as markdown (each row's drift-corrected ratio added)."""
    for row in rows:
        drift = _drift(rows, row["case"])
        row["drift_corrected"] = statistics.median(
            r / d for r, d in zip(row["ratios"], drift, strict=True)
        )
    lines = [
        "# Speed of the rebuilt core against the previous commit",
        "",
        f"- `python benchmarks/compare_checkouts.py --old <worktree of {commit}> {settings}`: "
        "benchmarks/bench_speed.py of each checkout, old then new in each round, in one "
        "sitting; median time over the rounds, and the median over rounds of new / old "
        "(< 1: faster now).",
        f"- {REFERENCE}'s rows run the same code in both: their ratios are the machine's drift. "
        "'÷ drift': the median over rounds of new / old divided by the same round's drift of "
        f"the case (the geometric mean of its {REFERENCE} rows' ratios).",
        "",
        "| case | library | variant | old (ms) | new (ms) | new / old | ÷ drift | per round |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in rows:
        per_round = ", ".join(f"{r:.2f}" for r in row["ratios"])
        lines.append(
            f"| {row['case']} | {row['library']} | {row['variant']} | {row['old_ms']:.3g} | "
            f"{row['new_ms']:.3g} | {row['ratio']:.3f} | {row['drift_corrected']:.3f} | "
            f"{per_round} |"
        )
    return "\n".join(lines) + "\n"


def _drift(rows: list[dict], case: str) -> list[float]:
    """Per round, the geometric mean of new / old over the reference library's rows of a case
    (1 where the case has none)."""
    reference = [
        row["ratios"] for row in rows if row["case"] == case and row["library"] == REFERENCE
    ]
    if not reference:
        return [1.0] * len(rows[0]["ratios"])
    return [statistics.geometric_mean(values) for values in zip(*reference, strict=True)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", type=Path, required=True, help="checkout of the old commit")
    parser.add_argument("--rounds", type=int, default=4, help="runs of each checkout")
    parser.add_argument("--budget", type=float, default=2.0, help="seconds of timing per case")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="bench_speed's --quick (no MNIST)")
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    parser.add_argument("--name", default="core_speed_comparison", help="output file name")
    parser.add_argument(
        "--render", type=Path, help="re-render a saved comparison's .json (no timing)"
    )
    args = parser.parse_args(argv)
    if args.render is not None:
        record = json.loads(args.render.read_text())
        text = render(record["rows"], record["settings"], record["old_commit"])
        print(text)
        args.render.with_suffix(".md").write_text(text)
        return
    commit = commit_of(args.old)
    runs: dict[str, list[dict]] = {"old": [], "new": []}
    with tempfile.TemporaryDirectory() as scratch:
        for round_index in range(args.rounds):
            for name, checkout in (("old", args.old.resolve()), ("new", ROOT)):
                out = Path(scratch) / f"{name}{round_index}"
                print(f"round {round_index + 1}/{args.rounds}: {name} ({checkout})", flush=True)
                runs[name].append(run_bench(checkout, out, args.budget, args.threads, args.quick))
    settings = f"--rounds {args.rounds} --budget {args.budget:g}" + (
        " --quick" if args.quick else ""
    )
    text, rows = table(runs["old"], runs["new"], settings, commit)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.md").write_text(text)
    record = {"old_commit": commit, "settings": settings, "rows": rows,
              "environment": runs["new"][-1]["environment"]}  # fmt: skip
    (args.out / f"{args.name}.json").write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
