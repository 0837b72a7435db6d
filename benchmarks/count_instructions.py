"""Instructions per call of this checkout's solver against an older checkout's (valgrind).

Wall-clock ratios on a shared machine drift by ±5 % even in one process
(compare_in_process.py), more than the per-solve overheads they are asked to compare. The
number of instructions a call executes does not drift. This script runs compare_in_process.py's
eager cases under valgrind's callgrind, once for each package's contenders (in one process,
the second package's counts depend on what ran before them, by up to 2 %). It switches the
count on around ``--calls`` calls of each contender, after ``--warmup`` calls (CPython
specialises a function's bytecode only after it has run several times: the first calls of a
process count up to 2 % more), and reports instructions per call, new / old, less the cost of
switching the count on and off (measured around an empty call). Instructions are not time
(cache misses and memory traffic are not in them), so large-batch cases, whose time is in the
kernels, are better judged by time; at batch 1, where the time is the Python and dispatch
overhead, they are the overhead. Compiled variants are left out (compiling under valgrind
takes hours).

Usage::

    git worktree add /tmp/old <commit>
    python benchmarks/count_instructions.py --old /tmp/old [--calls 5] [--warmup 30] [--case TEXT]

Needs valgrind. Writes results/instructions_vs_<commit>.{md,json} (``--name`` for another).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from compare_checkouts import commit_of
from compare_in_process import (
    OLD,
    ROOT,
    cases,
    comparison_parser,
    load_old,
    old_and_new,
    write_report,
)

INNER = "NEURALODE_COUNT_INSTRUCTIONS_INNER"
"""Set in the process that valgrind runs: the folder for the list of what each dump counted."""
LIBRARY = "NEURALODE_COUNT_INSTRUCTIONS_LIBRARY"
"""Set in the process that valgrind runs: whose contenders it counts (neuralode or the old
package)."""
TOGGLE = ("switching the count", "", "")
"""The dump of an empty call: what starting and stopping the count costs (the callgrind_control
subprocess returning), subtracted from the others."""


def count_inside(args: argparse.Namespace, folder: Path, library: str) -> None:
    """Under callgrind: the calls of each eager contender of ``library`` counted, one dump each,
    named by index; ``folder/dumps.json`` lists (case, variant, library) per index."""
    pid = str(os.getpid())

    def control(*options: str) -> None:
        subprocess.run(["callgrind_control", *options, pid], check=True, capture_output=True)

    names = []

    def count(name: tuple[str, str, str], run: Callable[[], object]) -> None:
        for _ in range(args.warmup):
            run()
        control("--zero")
        control("--instr=on")
        for _ in range(args.calls):
            run()
        control("--instr=off")
        control("--dump", f"call{len(names)}")
        names.append(name)
        print(" | ".join(part for part in name if part), flush=True)

    count(TOGGLE, lambda: None)
    with tempfile.TemporaryDirectory() as tmp:
        old = load_old(args.old, Path(tmp))
        for case, contenders in cases(old).items():
            if args.case not in case:
                continue
            for contender in contenders:
                if contender.library == library and "compiled" not in contender.variant:
                    count((case, contender.variant, contender.library), contender.run)
    (folder / "dumps.json").write_text(json.dumps(names))


def read_dumps(folder: Path, calls: int) -> dict[tuple[str, str, str], float]:
    """Instructions per call of each (case, variant, library) from callgrind's dump files, less
    the toggling cost (:data:`TOGGLE`'s count)."""
    names = [tuple(name) for name in json.loads((folder / "dumps.json").read_text())]
    found = {}
    for dump in folder.glob("callgrind.out.*"):
        text = dump.read_text(errors="replace")
        trigger = re.search(r"^desc: Trigger: .*?call(\d+)\s*$", text, re.MULTILINE)
        totals = re.search(r"^totals: (\d+)", text, re.MULTILINE)
        if trigger and totals:
            found[int(trigger.group(1))] = int(totals.group(1)) / calls
    counts = {names[index]: found[index] for index in sorted(found)}
    toggle = counts.pop(TOGGLE)
    return {name: count - toggle for name, count in counts.items()}


def main() -> None:
    parser = comparison_parser(__doc__.splitlines()[0], "instructions")
    parser.add_argument("--calls", type=int, default=5, help="calls counted per contender")
    parser.add_argument(
        "--warmup", type=int, default=30, help="uncounted calls before them (steady state)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if os.environ.get(INNER):
        count_inside(args, Path(os.environ[INNER]), os.environ[LIBRARY])
        return
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("count_instructions.py needs valgrind (callgrind); install it first")
    counts = {}
    for library in ("neuralode", OLD):
        with tempfile.TemporaryDirectory() as folder:
            output = f"--callgrind-out-file={folder}/callgrind.out"
            command = ["valgrind", "--tool=callgrind", "--instr-atstart=no", output,
                       sys.executable, *sys.argv]  # fmt: skip
            print(f"{library} under valgrind (minutes: torch alone takes 3 to import) ...",
                  flush=True)  # fmt: skip
            subprocess.run(command, env={**os.environ, INNER: folder, LIBRARY: library},
                           check=True)  # fmt: skip
            counts.update(read_dumps(Path(folder), args.calls))
    old_commit, new_commit = commit_of(args.old), commit_of(ROOT)
    lines = [
        f"# Instructions per call: {new_commit} (new) against {old_commit} (old)",
        "",
        f"- `python benchmarks/count_instructions.py --old <worktree of {old_commit}> "
        f"--calls {args.calls} --warmup {args.warmup}"
        + (f" --case {args.case!r}" if args.case else "")
        + f"` (this commit's benchmark: {new_commit}, with uncommitted changes if any): "
        "compare_in_process.py's eager cases under valgrind's callgrind, each package's in a "
        f"process of its own, instructions executed per call (mean of {args.calls} calls after "
        f"{args.warmup} uncounted ones, less the cost of switching the count on and off). "
        "Deterministic up to the allocator; not time.",
        f"- torch {torch.__version__}, {args.threads} thread(s); dopri5, rtol = atol = 1e-6, "
        "float32.",
        "",
        "| case | variant | old (M instructions) | new (M instructions) | new / old |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    rows = []
    for case, variant, new, before in old_and_new(counts):
        rows.append({"case": case, "variant": variant, "old": before, "new": new,
                     "new_over_old": new / before})  # fmt: skip
        lines.append(f"| {case} | {variant} | {before / 1e6:.3f} | {new / 1e6:.3f} | "
                     f"{new / before:.3f} |")  # fmt: skip
    record = {"old": old_commit, "new": new_commit, "calls": args.calls, "warmup": args.warmup,
              "rows": rows}  # fmt: skip
    write_report(args.out / (args.name or f"instructions_vs_{old_commit}"), lines, record)


if __name__ == "__main__":
    main()
