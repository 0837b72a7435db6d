"""Backward evaluations of the adjoint with the default norm and with the seminorm.

The default error norm of the backward solve is the largest RMS of its three channels (state,
adjoint, parameter gradients); the seminorm leaves the parameter gradients out (Kidger et al.
2021). NFE counts are deterministic, so this benchmark is not sensitive to machine load.

    python benchmarks/bench_seminorm.py [--out results]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from neuralode import odeint_adjoint

# (hidden width, batch, horizon T, tolerance)
PROBLEMS = [(64, 256, 1.0, 1e-6), (64, 16, 5.0, 1e-6), (256, 16, 5.0, 1e-6), (64, 16, 3.0, 1e-6),
            (256, 64, 3.0, 1e-5), (1024, 16, 3.0, 1e-6)]  # fmt: skip
SEEDS = range(3)


class MLPField(torch.nn.Module):
    """dy/dt = W2 tanh(W1 y + b1) + b2 on (batch, 2) states."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(2, width), torch.nn.Tanh(), torch.nn.Linear(width, 2)
        )

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(y)


def backward_evaluations(width: int, batch: int, horizon: float, tol: float, seed: int) -> dict:
    """Forward NFE and backward NFE with each norm for one problem."""
    torch.manual_seed(seed)
    func = MLPField(width).double()
    y0 = torch.randn(batch, 2, dtype=torch.float64)
    t = torch.tensor([0.0, horizon], dtype=torch.float64)
    row = {}
    for norm in ("default", "seminorm"):
        options = {"norm": "seminorm"} if norm == "seminorm" else None
        ys, stats = odeint_adjoint(func, y0, t, rtol=tol, atol=tol, adjoint_options=options,
                                   return_stats=True)  # fmt: skip
        ys[-1].square().mean().backward()
        row["forward"], row[norm] = stats.nfe, stats.backward_nfe
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("results"), help="output folder")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for width, batch, horizon, tol in PROBLEMS:
        runs = [backward_evaluations(width, batch, horizon, tol, seed) for seed in SEEDS]
        default = sum(r["default"] for r in runs)
        seminorm = sum(r["seminorm"] for r in runs)
        params = 2 * width + width + 2 * width + 2
        rows.append({"width": width, "parameters": params, "batch": batch, "horizon": horizon,
                     "tol": tol, "forward": sum(r["forward"] for r in runs), "default": default,
                     "seminorm": seminorm, "saving": 1 - seminorm / default})  # fmt: skip
    total_default = sum(r["default"] for r in rows)
    total_seminorm = sum(r["seminorm"] for r in rows)
    lines = [
        "# Adjoint backward evaluations: default norm against seminorm",
        "",
        "Command: `python benchmarks/bench_seminorm.py`. MLP 2→width→2 (tanh) vector field, "
        f"dopri5, float64, t ∈ [0, T]; NFE summed over seeds {list(SEEDS)}.",
        "",
        "| width (parameters) | batch | T | tol | forward NFE | backward NFE, default | "
        "backward NFE, seminorm | saving |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['width']} ({r['parameters']:,}) | {r['batch']} | {r['horizon']:g} | "
            f"{r['tol']:g} | {r['forward']} | {r['default']} | {r['seminorm']} | "
            f"{100 * r['saving']:.0f}% |"
        )
    lines += ["", f"All problems: {total_default} → {total_seminorm} backward evaluations "
              f"({100 * (1 - total_seminorm / total_default):.0f}% fewer)."]  # fmt: skip
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_seminorm.md").write_text(text)
    (args.out / "bench_seminorm.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
