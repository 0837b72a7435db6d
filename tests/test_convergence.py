"""Measured convergence order of every method on a problem with an analytic solution."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from neuralode import METHODS, odeint

OMEGA = 3.0
T_END = 2.0


def field(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Non-autonomous Gaussian decay and a harmonic oscillator: tests the stage times too."""
    return torch.stack([-2 * t * y[0], OMEGA * y[2], -OMEGA * y[1]])


def exact(t: float) -> torch.Tensor:
    return torch.tensor(
        [math.exp(-t * t), math.sin(OMEGA * t), math.cos(OMEGA * t)], dtype=torch.float64
    )


def riccati(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """y' = y², y(0) = 1/1.3: y = 1/(1.3 - t). dopri8's order shows on it above round-off."""
    return y**2


def riccati_exact(t: float) -> torch.Tensor:
    return torch.tensor([1 / (1.3 - t)], dtype=torch.float64)


# Step sizes in the asymptotic range of each method, above round-off.
STEP_SIZES = {
    "euler": [0.01, 0.005, 0.0025],
    "midpoint": [0.02, 0.01, 0.005],
    "heun2": [0.02, 0.01, 0.005],
    "heun3": [0.04, 0.02, 0.01],
    "fehlberg2": [0.02, 0.01, 0.005],
    "adaptive_heun": [0.02, 0.01, 0.005],
    "rk4": [0.05, 0.025, 0.0125],
    "bosh3": [0.04, 0.02, 0.01],
    "dopri5": [0.05, 0.025, 0.0125],
    "tsit5": [0.05, 0.025, 0.0125],
    "dopri8": [0.1, 0.05, 0.025],
    "rosenbrock23": [0.02, 0.01, 0.005],
    # Adams–Bashforth of order 11 (max_order 12) is stable only for |h λ| ≲ 0.003 (λ = 3i here).
    "explicit_adams": [0.001, 0.0005, 0.00025],
    "implicit_adams": [0.04, 0.02, 0.01],
    "fixed_adams": [0.04, 0.02, 0.01],
    "implicit_euler": [0.01, 0.005, 0.0025],
    "implicit_midpoint": [0.02, 0.01, 0.005],
    "trapezoid": [0.02, 0.01, 0.005],
    "sdirk2": [0.02, 0.01, 0.005],
    "trbdf2": [0.02, 0.01, 0.005],
    "radauIIA3": [0.04, 0.02, 0.01],
    "gl4": [0.1, 0.05, 0.025],
    "radauIIA5": [0.1, 0.05, 0.025],
    "gl6": [0.2, 0.1, 0.05],
}
PROBLEMS = {"dopri8": (riccati, riccati_exact, 1.0)}


def test_every_method_is_covered() -> None:
    assert set(STEP_SIZES) == set(METHODS)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_measured_order_matches_nominal(method: str) -> None:
    steps = STEP_SIZES[method]
    func, solution, t_end = PROBLEMS.get(method, (field, exact, T_END))
    errors = []
    for h in steps:
        ys = odeint(func, solution(0.0), torch.tensor([0.0, t_end]), method=method,
                    options={"step_size": h})  # fmt: skip
        errors.append(float((ys[-1] - solution(t_end)).abs().max()))
    slope = np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert abs(slope - METHODS[method].order) < 0.3, (method, errors, slope)


@pytest.mark.parametrize(
    "method, interp",
    [("rk4", "linear"), ("rk4", "cubic"), ("dopri5", None), ("tsit5", None), ("dopri8", None),
     ("bosh3", None), ("dopri5", "linear")],
)  # fmt: skip
def test_dense_output_order(method: str, interp: str | None) -> None:
    """One step of size h, output inside it: the local error of the interpolant is O(h^(q+1)),
    q = 1 for linear interpolation (a fixed-step method's default, as torchdiffeq), 3 for
    Hermite cubics (interp="cubic", bosh3's own), 4 for dopri5's and tsit5's interpolants, 5
    for dopri8's."""
    expected = {"rk4": 4, "bosh3": 4, "dopri5": 5, "tsit5": 5, "dopri8": 6}[method]
    expected = 2 if interp == "linear" else expected
    steps = [0.1, 0.05, 0.025]
    errors = []
    for h in steps:
        t = torch.tensor([0.0, 0.37 * h, h], dtype=torch.float64)
        options = {"grid": [0.0, h], **({"interp": interp} if interp else {})}
        ys = odeint(field, exact(0.0), t, method=method, options=options)
        errors.append(float((ys[1] - exact(0.37 * h)).abs().max()))
    slope = np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert abs(slope - expected) < 0.3, (method, errors, slope)
