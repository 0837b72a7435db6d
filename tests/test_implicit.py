"""torchdiffeq's fixed-grid implicit Runge–Kutta family (implicit_euler … trbdf2): measured
orders, stiff stability where rk4 blows up, agreement with scipy's Radau, gradients in every
mode against finite differences, and the options (max_iters) with their errors."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from neuralode import (
    METHODS,
    ConvergenceError,
    NonFiniteStateError,
    ODEInputError,
    odeint,
    odeint_adjoint,
)

F64 = torch.float64
ORDERS = {
    "implicit_euler": 1,
    "implicit_midpoint": 2,
    "trapezoid": 2,
    "radauIIA3": 3,
    "gl4": 4,
    "radauIIA5": 5,
    "gl6": 6,
    "sdirk2": 2,
    "trbdf2": 2,
}
L_STABLE = ["implicit_euler", "radauIIA3", "radauIIA5", "sdirk2", "trbdf2"]
# Step sizes in each method's asymptotic range, its error well above the Newton tolerance.
STEPS = {1: [0.04, 0.02, 0.01], 2: [0.1, 0.05, 0.025], 3: [0.2, 0.1, 0.05]}


def raises(error: type[Exception], message: str):
    return pytest.raises(error, match=f"^{re.escape(message)}$")


def forced(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """A linear non-autonomous system (the stage times matter): rotation, decay, forcing."""
    return torch.stack([-0.5 * y[0] + 2.0 * y[1], -2.0 * y[0] - 0.5 * y[1] + torch.cos(3 * t)])


def forced_reference(t_end: float) -> np.ndarray:
    solution = solve_ivp(
        lambda s, y: forced(torch.tensor(s, dtype=F64), torch.from_numpy(y)).numpy(),
        (0.0, t_end), [1.0, 0.0], method="DOP853", rtol=1e-13, atol=1e-15,
    )  # fmt: skip
    return solution.y[:, -1]


@pytest.mark.parametrize("method", sorted(ORDERS))
def test_measured_order(method: str) -> None:
    order = ORDERS[method]
    assert METHODS[method].order == order
    steps = STEPS[min(order, 3)]
    reference = forced_reference(2.0)
    errors = []
    for h in steps:
        ys = odeint(forced, torch.tensor([1.0, 0.0], dtype=F64),
                    torch.tensor([0.0, 2.0], dtype=F64), method=method,
                    options={"step_size": h})  # fmt: skip
        errors.append(float(np.abs(ys[-1].numpy() - reference).max()))
    slope = np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert abs(slope - order) < 0.25, (method, errors, slope)


def stiff(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return -1000.0 * (y - torch.cos(t))


def stiff_exact(t: torch.Tensor) -> torch.Tensor:
    """y(0) = 0: the slow solution plus a transient that dies in 1e-3."""
    lam = 1000.0
    slow = (lam * lam * torch.cos(t) + lam * torch.sin(t)) / (lam * lam + 1)
    return slow - lam * lam / (lam * lam + 1) * torch.exp(-lam * t)


@pytest.mark.parametrize("method", sorted(ORDERS))
def test_stiff_problem_stable_with_steps_far_beyond_explicit_stability(method: str) -> None:
    """h λ = -100 (rk4 is stable only to |h λ| ≈ 2.8): every method stays bounded; the
    L-stable ones damp the transient and follow the slow solution."""
    t = torch.linspace(0.0, 2.0, 21, dtype=F64)
    y0 = torch.zeros(1, dtype=F64)
    ys, stats = odeint(stiff, y0, t, method=method, return_stats=True)
    assert stats.n_steps == 20 and torch.isfinite(ys).all()
    error = (ys[:, 0] - stiff_exact(t)).abs()
    if method in L_STABLE:
        # The first steps leave a little of the unit transient (R(-100) = 1/101 for implicit
        # Euler); from t = 0.5 on only the method's error on the slow solution is left.
        assert error[1] < 0.05 and error[5:].max() < 1e-4, error
    else:  # A-stable, not L-stable: the transient is not damped but does not grow
        assert ys.abs().max() <= 2.0


def test_rk4_blows_up_on_the_same_stiff_steps() -> None:
    t = torch.linspace(0.0, 2.0, 21, dtype=F64)
    ys = odeint(stiff, torch.zeros(1, dtype=F64), t, method="rk4")
    assert ys[-1].abs() > 1e100  # |R(-100)| ≈ 4e6 per step
    with pytest.raises(NonFiniteStateError):
        odeint(stiff, torch.zeros(1, dtype=F64), torch.linspace(0.0, 6.0, 61, dtype=F64),
               method="rk4")  # fmt: skip


def van_der_pol(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.stack([y[1], 2.0 * (1 - y[0] ** 2) * y[1] - y[0]])


@pytest.mark.parametrize(("method", "atol"), [("radauIIA5", 1e-8), ("gl6", 1e-9), ("gl4", 1e-6)])
def test_nonlinear_problem_agrees_with_scipy_radau(method: str, atol: float) -> None:
    t = torch.linspace(0.0, 1.5, 4, dtype=F64)
    y0 = torch.tensor([2.0, 0.0], dtype=F64)
    ys = odeint(van_der_pol, y0, t, method=method, options={"step_size": 0.025})
    reference = solve_ivp(
        lambda s, y: van_der_pol(torch.tensor(s), torch.from_numpy(y)).numpy(),
        (0.0, 1.5), y0.numpy(), method="Radau", rtol=1e-12, atol=1e-14, t_eval=t.numpy(),
    ).y.T  # fmt: skip
    error = np.abs(ys.numpy() - reference).max()
    assert 0 < error < atol, error


def test_outputs_on_the_grid_are_the_steps_themselves() -> None:
    """Without step_size the grid is the output times; the values there are the step results,
    the same as a solve that only asks for the end on that grid."""
    t = torch.tensor([0.0, 0.1, 0.25, 0.3, 0.6], dtype=F64)
    y0 = torch.tensor([2.0, 0.0], dtype=F64)
    ys, stats = odeint(van_der_pol, y0, t, method="gl4", return_stats=True)
    assert stats.n_steps == 4
    for i in range(1, len(t)):
        end = odeint(van_der_pol, y0, t[[0, i]], method="gl4", options={"grid": t[: i + 1]})
        torch.testing.assert_close(ys[i], end[-1], rtol=0, atol=1e-13)


class Decay(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([[-1.0, 0.6], [-0.4, -0.8]], dtype=F64))
        self.k = torch.nn.Parameter(torch.tensor(2.0, dtype=F64))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.tanh(y @ self.w.T) - self.k * y + torch.sin(t)


@pytest.mark.parametrize("method", ["gl4", "radauIIA5", "sdirk2", "trbdf2"])
def test_gradients_match_finite_differences_and_the_adjoint(method: str) -> None:
    func = Decay()
    y0 = torch.tensor([1.0, -0.5], dtype=F64, requires_grad=True)
    t = torch.linspace(0.0, 1.0, 3, dtype=F64)
    options = {"step_size": 0.05}

    def loss(solver=odeint) -> torch.Tensor:
        return (solver(func, y0, t, method=method, options=options) ** 2).sum()

    inputs = (y0, func.w, func.k)
    backprop = torch.autograd.grad(loss(), inputs)
    eps = 1e-6
    for x, grad in zip(inputs, backprop, strict=True):
        flat = x.detach().view(-1)
        for i in range(flat.numel()):
            with torch.no_grad():
                flat[i] += eps
                up = float(loss())
                flat[i] -= 2 * eps
                down = float(loss())
                flat[i] += eps
            assert abs((up - down) / (2 * eps) - float(grad.reshape(-1)[i])) < 1e-7
    # The adjoint solves backward with the same method; it matches to the discretisation error.
    # (Gauss methods are their own discrete adjoints: agreement to round-off.)
    adjoint = torch.autograd.grad(loss(odeint_adjoint), inputs)
    rtol = {"gl4": 1e-9, "radauIIA5": 1e-5}.get(method, 5e-3)
    for got, want in zip(adjoint, backprop, strict=True):
        torch.testing.assert_close(got, want, rtol=rtol, atol=rtol * 1e-2)


def test_checkpointed_gradient_equals_backprop() -> None:
    func = Decay()
    y0 = torch.tensor([1.0, -0.5], dtype=F64, requires_grad=True)
    t = torch.linspace(0.0, 1.0, 3, dtype=F64)
    options = {"step_size": 0.1}

    def solve(gradient: str) -> torch.Tensor:
        return odeint(func, y0, t, method="radauIIA3", options=options, gradient=gradient)

    modes = ("backprop", "checkpoint")
    grads = [torch.autograd.grad(solve(mode).sum(), (y0, func.w)) for mode in modes]
    for got, want in zip(*grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_float32_state_converges() -> None:
    t = torch.linspace(0.0, 1.0, 11)
    ys = odeint(stiff, torch.zeros(1), t, method="radauIIA5")
    assert ys.dtype == torch.float32
    want = odeint(stiff, torch.zeros(1, dtype=F64), t.double(), method="radauIIA5")
    torch.testing.assert_close(ys, want.float(), rtol=0, atol=1e-5)


def test_max_iters_validated() -> None:
    y0, t = torch.zeros(1, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64)
    for bad in (0, 2.5, True):
        with raises(ODEInputError, f"option 'max_iters' must be a positive integer, got {bad!r}"):
            odeint(stiff, y0, t, method="gl6", options={"max_iters": bad})
    with raises(ODEInputError, "option 'max_iters' must be a positive integer, got -1"):
        odeint(stiff, y0, t, method="trbdf2", options={"max_iters": -1})


def test_not_converging_is_a_named_error_at_the_failing_step() -> None:
    """One Newton iteration cannot confirm convergence on a nonlinear field: the solve stops
    with ConvergenceError (torchdiffeq warns and returns the unconverged stages)."""
    y0, t = torch.tensor([2.0, 0.0], dtype=F64), torch.tensor([0.0, 0.5], dtype=F64)
    message = (
        "the stage equations of method 'gl6' did not converge in max_iters=1 Newton iterations "
    )
    with pytest.raises(ConvergenceError, match=f"^{re.escape(message)}") as caught:
        odeint(van_der_pol, y0, t, method="gl6", options={"max_iters": 1, "step_size": 0.1})
    text = str(caught.value)
    assert text.endswith(
        "in the step from t=0 to t=0.1: use smaller steps (options 'step_size' or 'grid'), or "
        "raise options={'max_iters': ...}"
    ), text
    assert caught.value.t == 0.0
    # Enough iterations: the same solve goes through.
    odeint(van_der_pol, y0, t, method="gl6", options={"max_iters": 10, "step_size": 0.1})


def test_unknown_and_row_options_refused() -> None:
    y0, t = torch.zeros(1, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64)
    with raises(
        ODEInputError,
        "unknown option 'rtol_newton' for method 'radauIIA5'; valid options are: compile, dtype, "
        "grid, grid_constructor, interp, jacobian, jacobian_every, max_iters, per_sample, "
        "perturb, step_size",
    ):
        odeint(stiff, y0, t, method="radauIIA5", options={"rtol_newton": 1e-3})
    with raises(
        ODEInputError,
        "method 'sdirk2' (implicit) does not take option(s) ['per_sample']: it steps the whole "
        "state with one Jacobian, eagerly",
    ):
        odeint(stiff, y0, t, method="sdirk2", options={"per_sample": True})
    ignored = r"option\(s\) \['max_iters'\] do not apply to method 'rk4'"
    with pytest.warns(UserWarning, match=ignored):
        odeint(stiff, y0, t, method="rk4", options={"max_iters": 10})  # torchdiffeq ignores it


def test_per_sample_jacobian_blocks_and_reuse() -> None:
    """B independent systems: J as B diagonal blocks gives the same solution as the full one,
    and a Jacobian kept over several steps still converges to the same stages."""
    y0 = torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.5, -1.0]], dtype=F64)
    t = torch.linspace(0.0, 1.0, 5, dtype=F64)

    def batch(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.stack([y[:, 1], 2.0 * (1 - y[:, 0] ** 2) * y[:, 1] - y[:, 0]], -1)

    full, stats = odeint(batch, y0, t, method="radauIIA3", options={"step_size": 0.05},
                         return_stats=True)  # fmt: skip
    for options in ({"jacobian": "per_sample"}, {"jacobian_every": 5}):
        got, other = odeint(batch, y0, t, method="radauIIA3",
                            options={"step_size": 0.05, **options}, return_stats=True)  # fmt: skip
        torch.testing.assert_close(got, full, rtol=0, atol=1e-9)
    assert stats.n_jacobians == 20 and other.n_jacobians == 4
