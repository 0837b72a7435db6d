"""Speed of this checkout's solver against an older checkout's, both in one process.

compare_checkouts.py runs each checkout's bench_speed.py in its own process, one after the
other; on a shared machine its ratios drift by ±10 % between rounds, more than the differences
it is asked to resolve. Here the older checkout's package is loaded beside this one under
another name (``neuralode_old``: its ``src/neuralode`` copied to a temporary directory; this
works while its core imports itself relatively, as every commit since the core's rebuild
does), and bench_speed's neuralode contenders of each case run round-robin, old and new in
every round, on the same field objects and inputs. Load from other processes then hits both
alike. Reported per case and variant: the median time of each over the rounds and new / old
(< 1: faster now).

Usage::

    git worktree add /tmp/old <commit>
    python benchmarks/compare_in_process.py --old /tmp/old [--budget 4] [--threads 1] [--case TEXT]

Writes results/speed_in_process_vs_<commit>.{md,json} (``--name`` for another name).
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import TypeVar

import torch

import neuralode

sys.path.insert(0, str(Path(__file__).parent))
from bench_solvers import ConvField, MLPField, environment
from bench_speed import (
    COMPILE,
    Contender,
    VanDerPol,
    measure,
    neuralode_forward,
    neuralode_gradient,
)
from compare_checkouts import commit_of

ROOT = Path(__file__).resolve().parents[1]
OLD = "neuralode_old"
T = TypeVar("T")


def load_old(checkout: Path, into: Path) -> ModuleType:
    """The checkout's package, imported as ``neuralode_old`` from a copy under ``into``."""
    shutil.copytree(checkout / "src" / "neuralode", into / OLD)
    sys.path.insert(0, str(into))
    old = importlib.import_module(OLD)
    if not old.odeint.__module__.startswith(OLD):
        raise SystemExit(f"{checkout}'s odeint did not load as {OLD}: it imports itself by name")
    return old


def cases(old: ModuleType) -> dict[str, list[Contender]]:
    """bench_speed's cases (but the ODE-Net training step): each neuralode contender twice, by
    this checkout and by ``old``, next to each other."""
    torch.manual_seed(0)
    mlp, conv = MLPField(), ConvField()
    t2 = torch.linspace(0.0, 1.0, 2)
    y1, y256, y_conv = torch.randn(1, 2), torch.randn(256, 2), torch.randn(32, 64, 7, 7)
    vdp = VanDerPol(torch.logspace(-1, 1, 256))
    y_vdp = torch.cat([torch.full((256, 1), 2.0), torch.zeros(256, 1)], 1)
    t_vdp = torch.linspace(0.0, 10.0, 11)
    forward = [("eager", {}), ("compiled", COMPILE)]
    table = {
        "MLP 2-64-2, batch 1": [(mlp, y1, t2, o, v) for v, o in forward],
        "MLP 2-64-2, batch 256": [(mlp, y256, t2, o, v) for v, o in forward],
        "conv 64ch 7x7, batch 32": [(conv, y_conv, t2, o, v) for v, o in forward],
        "Van der Pol, μ 0.1-10, 256 samples, t 0-10": [
            (vdp, y_vdp, t_vdp, {}, "shared steps, eager"),
            (vdp, y_vdp, t_vdp, {"per_sample": True}, "per-sample steps, eager"),
            (vdp, y_vdp, t_vdp, COMPILE, "shared steps, compiled"),
            (vdp, y_vdp, t_vdp, {"per_sample": True, **COMPILE}, "per-sample steps, compiled"),
        ],
    }
    contenders = {
        case: [
            neuralode_forward(func, y0, t, options, variant, lib)
            for func, y0, t, options, variant in entries
            for lib in (neuralode, old)
        ]
        for case, entries in table.items()
    }

    def seminorm(lib: ModuleType) -> object:
        return lib.Adjoint(options={"norm": "seminorm"})

    # (the seminorm row: the default adjoint norm changed to torchdiffeq's after 1fa3413, which
    # takes more backward steps; with the seminorm both do the same work)
    gradients = [
        ("backprop", {}, "backprop, eager"),
        ("backprop", COMPILE, "backprop, compiled"),
        ("adjoint", {}, "adjoint, eager"),
        (seminorm, {}, "adjoint with seminorm, eager"),
        ("adjoint", COMPILE, "adjoint, compiled"),
        ("checkpoint", {}, "checkpoint, eager"),
    ]
    contenders["MLP 2-64-2, batch 256, forward + backward"] = [
        neuralode_gradient(
            mlp,
            y256,
            t2,
            gradient if isinstance(gradient, str) else gradient(lib),
            options,
            variant,
            lib,
        )
        for gradient, options, variant in gradients
        for lib in (neuralode, old)
    ]
    return contenders


def comparison_parser(description: str, name: str) -> argparse.ArgumentParser:
    """The options of a comparison of this checkout with an older one (``name``: the default
    output name, before ``_vs_<commit>``)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--old", type=Path, required=True, help="checkout of the older commit")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--case", default="", help="only the cases whose name contains this")
    parser.add_argument("--name", help=f"output name (default {name}_vs_<commit>)")
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    return parser


def main() -> None:
    parser = comparison_parser(__doc__.splitlines()[0], "speed_in_process")
    parser.add_argument("--budget", type=float, default=4.0, help="seconds of rounds per case")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    old_commit, new_commit = commit_of(args.old), commit_of(ROOT)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        old = load_old(args.old, Path(tmp))
        for case, contenders in cases(old).items():
            if args.case not in case:
                continue
            print(f"\n{case}", flush=True)
            rows += measure(case, contenders, args.budget)
    found = {(r.case, r.variant, r.library): r for r in rows}
    lines = [
        f"# Speed in one process: {new_commit} (new) against {old_commit} (old)",
        "",
        f"- `python benchmarks/compare_in_process.py --old <worktree of {old_commit}> "
        f"--budget {args.budget:g} --threads {args.threads}"
        + (f" --case {args.case!r}" if args.case else "")
        + f"` (this commit's benchmark: "
        f"{new_commit}, with uncommitted changes if any); both packages in one process, "
        "bench_speed's neuralode contenders, old and new in every round on the same fields and "
        "inputs; median time per call over the rounds.",
        f"- {environment(args.threads)['cpu']}; torch {torch.__version__}; dopri5, "
        "rtol = atol = 1e-6, float32.",
        "",
        "| case | variant | old (ms) | new (ms) | new / old | NFE old / new | rounds |",
        "| --- | --- | ---: | ---: | ---: | --- | ---: |",
    ]
    table = []
    for case, variant, new, before in old_and_new(found):
        ratio = new.time_ms / before.time_ms
        table.append({"case": case, "variant": variant, "old_ms": before.time_ms,
                      "new_ms": new.time_ms, "new_over_old": ratio, "nfe_old": before.nfe_batch,
                      "nfe_new": new.nfe_batch, "rounds": new.rounds})  # fmt: skip
        lines.append(f"| {case} | {variant} | {before.time_ms:.3g} | {new.time_ms:.3g} | "
                     f"{ratio:.3f} | {before.nfe_batch:.0f} / {new.nfe_batch:.0f} | "
                     f"{new.rounds} |")  # fmt: skip
    record = {"old": old_commit, "new": new_commit, "budget": args.budget, "rows": table}
    write_report(args.out / (args.name or f"speed_in_process_vs_{old_commit}"), lines, record)


def old_and_new(found: dict[tuple[str, str, str], T]) -> Iterator[tuple[str, str, T, T]]:
    """(case, variant, new, old) of each of this checkout's measurements in ``found`` (keyed by
    case, variant and library) with the older checkout's of the same case and variant."""
    for (case, variant, library), new in found.items():
        if library == "neuralode":
            yield case, variant, new, found[(case, variant, OLD)]


def write_report(path: Path, lines: list[str], record: dict) -> None:
    """The table's ``lines`` to path.md, ``record`` to path.json, and the table printed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    path.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
