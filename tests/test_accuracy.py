"""Adaptive solvers against exact solutions and scipy's DOP853 at 1e-12, in float64."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from neuralode import odeint

ADAPTIVE = ["adaptive_heun", "bosh3", "dopri5", "tsit5", "dopri8"]
# Looser tolerances for the low-order pairs keep their step counts reasonable.
RTOL = {"adaptive_heun": 1e-6, "bosh3": 1e-7, "dopri5": 1e-8, "tsit5": 1e-8, "dopri8": 1e-9}
# Global error allowed, in units of the local tolerance atol + rtol·|y|: errors accumulate over
# these horizons (up to 10 time units), and dopri8's interpolant is of order 5, below the method's.
ERROR_MULTIPLE = 50.0

LINEAR_A = torch.tensor(
    [[-0.5, 2.0, 0.0], [-2.0, -0.5, 0.3], [0.1, 0.0, -1.0]], dtype=torch.float64
)


def van_der_pol(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    mu = 1.0
    return torch.stack([y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]])


def lotka_volterra(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.stack([1.5 * y[0] - y[0] * y[1], -3.0 * y[1] + y[0] * y[1]])


def forced_pendulum(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.stack([y[1], -torch.sin(y[0]) - 0.1 * y[1] + 0.5 * torch.cos(t)])


def scipy_reference(
    func: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], y0: torch.Tensor, t: torch.Tensor
) -> np.ndarray:
    def rhs(time: float, y: np.ndarray) -> np.ndarray:
        return func(torch.tensor(time, dtype=torch.float64), torch.from_numpy(y)).numpy()

    times = t.numpy()
    result = solve_ivp(rhs, (times[0], times[-1]), y0.numpy(), method="DOP853", t_eval=times,
                       rtol=1e-12, atol=1e-12)  # fmt: skip
    assert result.success
    return result.y.T


def assert_within_tolerance(ys: torch.Tensor, reference: np.ndarray, rtol: float) -> None:
    scale = rtol + rtol * np.abs(reference)  # atol = rtol in these tests
    multiple = np.abs(ys.numpy() - reference) / scale
    assert multiple.max() < ERROR_MULTIPLE, f"error is {multiple.max():.1f}× the tolerance"


@pytest.mark.parametrize("method", ADAPTIVE)
def test_linear_system_against_matrix_exponential(method: str) -> None:
    y0 = torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64)
    t = torch.linspace(0, 5, 11, dtype=torch.float64)
    ys = odeint(lambda t, y: LINEAR_A @ y, y0, t, rtol=RTOL[method], atol=RTOL[method],
                method=method)  # fmt: skip
    exact = torch.stack([torch.linalg.matrix_exp(LINEAR_A * s) @ y0 for s in t])
    assert_within_tolerance(ys, exact.numpy(), RTOL[method])


CASES = {
    "van_der_pol": (van_der_pol, [2.0, 0.0], (0.0, 8.0)),
    "lotka_volterra": (lotka_volterra, [5.0, 1.0], (0.0, 6.0)),
    "forced_pendulum": (forced_pendulum, [1.0, 0.0], (0.0, 10.0)),
    "lotka_volterra_backwards": (lotka_volterra, [5.0, 1.0], (6.0, 0.0)),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("method", ADAPTIVE)
def test_nonlinear_against_scipy(method: str, case: str) -> None:
    func, start, (t0, t1) = CASES[case]
    y0 = torch.tensor(start, dtype=torch.float64)
    t = torch.linspace(t0, t1, 13, dtype=torch.float64)
    ys = odeint(func, y0, t, rtol=RTOL[method], atol=RTOL[method], method=method)
    assert_within_tolerance(ys, scipy_reference(func, y0, t), RTOL[method])


def test_tighter_tolerance_means_smaller_error_and_more_work() -> None:
    func, start, (t0, t1) = CASES["van_der_pol"]
    y0 = torch.tensor(start, dtype=torch.float64)
    t = torch.linspace(t0, t1, 5, dtype=torch.float64)
    reference = scipy_reference(func, y0, t)
    errors, nfes = [], []
    for tol in (1e-4, 1e-6, 1e-8):
        ys, stats = odeint(func, y0, t, rtol=tol, atol=tol, return_stats=True)
        errors.append(np.abs(ys.numpy() - reference).max())
        nfes.append(stats.nfe)
    assert errors[0] > errors[1] > errors[2]
    assert nfes[0] < nfes[1] < nfes[2]
