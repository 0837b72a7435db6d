"""Bad input gets a clear error that names the problem."""

from __future__ import annotations

import re

import pytest
import torch

from neuralode import (
    MaxStepsExceededError,
    NonFiniteStateError,
    ODEInputError,
    StepSizeUnderflowError,
    odeint,
)

Y0 = torch.tensor([1.0, 2.0])
T = torch.tensor([0.0, 1.0])


def decay(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return -y


def raises(error: type[Exception], message: str):
    return pytest.raises(error, match=f"^{re.escape(message)}$")


def test_nan_in_y0() -> None:
    with raises(ODEInputError, "y0 contains NaN or Inf (1 of 2 entries)"):
        odeint(decay, torch.tensor([1.0, float("nan")]), T)


def test_inf_in_t() -> None:
    with raises(ODEInputError, "t contains NaN or Inf (1 of 2 entries)"):
        odeint(decay, Y0, torch.tensor([0.0, float("inf")]))


def test_t_not_one_dimensional() -> None:
    with raises(ODEInputError, "t must be a non-empty 1-D tensor of times, got shape (2, 1)"):
        odeint(decay, Y0, T[:, None])


def test_t_not_monotonic() -> None:
    message = (
        "t must be strictly increasing or strictly decreasing; t[2]=0.5 does not follow t[1]=1"
    )
    with raises(ODEInputError, message):
        odeint(decay, Y0, torch.tensor([0.0, 1.0, 0.5]))


def test_t_repeated() -> None:
    message = "t must be strictly increasing or strictly decreasing; t[1]=0 does not follow t[0]=0"
    with raises(ODEInputError, message):
        odeint(decay, Y0, torch.tensor([0.0, 0.0]))


def test_integer_y0() -> None:
    message = (
        "y0 must have a floating-point dtype (float16, bfloat16, float32 or float64) or be "
        "complex (complex64 or complex128), got torch.int64"
    )
    with raises(ODEInputError, message):
        odeint(decay, torch.tensor([1, 2]), T)


def test_integer_t() -> None:
    with raises(ODEInputError, "t must have a floating-point dtype, got torch.int64"):
        odeint(decay, Y0, torch.tensor([0, 1]))


def test_y0_not_a_tensor() -> None:
    with raises(
        ODEInputError, "y0 must be a torch.Tensor or a non-empty tuple of tensors, got list"
    ):
        odeint(decay, [1.0, 2.0], T)


def test_t_on_another_device() -> None:
    t = T.to("meta")
    with raises(ODEInputError, "t is on meta but y0 is on cpu; put both on the same device"):
        odeint(decay, Y0, t)


def test_func_returns_wrong_shape() -> None:
    message = "func(t, y) returned shape (3,) but y has shape (2,): dy/dt must have the shape of y"
    with raises(ODEInputError, message):
        odeint(lambda t, y: torch.zeros(3), Y0, T)


def test_func_returns_wrong_dtype() -> None:
    message = (
        "func(t, y) returned dtype torch.float64 but y has dtype torch.float32: dy/dt must have "
        "the dtype of y"
    )
    with raises(ODEInputError, message):
        odeint(lambda t, y: y.double(), Y0, T)


def test_func_returns_tensor_for_tuple_state() -> None:
    message = "func(t, y) must return a state like y (a tuple of 2 tensors), got Tensor"
    with raises(ODEInputError, message):
        odeint(lambda t, y: y[0], (Y0, Y0), T)


def test_unknown_method_lists_valid_ones() -> None:
    message = (
        "unknown method 'rk45'; valid methods are: adaptive_heun, bosh3, dopri5, dopri8, euler, "
        "explicit_adams, fehlberg2, fixed_adams, gl4, gl6, heun2, heun3, implicit_adams, "
        "implicit_euler, implicit_midpoint, midpoint, radauIIA3, radauIIA5, rk4, rosenbrock23, "
        "scipy_solver, sdirk2, trapezoid, trbdf2, tsit5 (or a neuralode.Tableau)"
    )
    with raises(ODEInputError, message):
        odeint(decay, Y0, T, method="rk45")


def test_unknown_option() -> None:
    message = (
        "unknown option 'stepsize' for method 'rk4'; valid options are: dtype, grid, "
        "grid_constructor, interp, perturb, step_size"
    )
    with raises(ODEInputError, message):
        odeint(decay, Y0, T, method="rk4", options={"stepsize": 0.1})


def test_unknown_adaptive_option() -> None:
    message = (
        "unknown option 'atol' for method 'dopri5'; valid options are: compile, controller, "
        "dfactor, dtype, first_step, grid, grid_constructor, ifactor, interp, jacobian, "
        "jacobian_every, jump_t, max_num_steps, max_step, min_step, norm, per_sample, perturb, "
        "safety, step_size, step_t"
    )
    with raises(ODEInputError, message):
        odeint(decay, Y0, T, options={"atol": 1e-3})


def test_unknown_controller() -> None:
    with raises(ODEInputError, "unknown controller 'PD'; valid controllers are: I, PI, PID"):
        odeint(decay, Y0, T, options={"controller": "PD"})


@pytest.mark.parametrize("name", ["rtol", "atol"])
def test_negative_tolerance(name: str) -> None:
    with raises(ODEInputError, f"{name} must be finite and non-negative, got -0.001"):
        odeint(decay, Y0, T, **{name: -1e-3})


def test_tolerance_of_wrong_shape() -> None:
    message = "atol of shape (3,) does not broadcast to the state's shape (2,)"
    with raises(ODEInputError, message):
        odeint(decay, Y0, T, atol=torch.full((3,), 1e-6))


def test_step_size_underflow_names_t() -> None:
    """y' = 1/(1 - t) has a singularity at t = 1: the steps shrink until they underflow."""
    with pytest.raises(
        StepSizeUnderflowError, match=r"^step size underflow at t=(0\.99|1)\d*: "
    ) as info:
        odeint(lambda t, y: 1 / (1 - t) ** 2 * torch.ones_like(y), Y0.double(),
               torch.tensor([0.0, 2.0], dtype=torch.float64))  # fmt: skip
    assert 0.99 < info.value.t <= 1.0


def test_max_num_steps_names_t_and_nfe() -> None:
    pattern = (
        r"^max_num_steps=10 exceeded at t=0\.\d+ \(integrating from t=0 to t=100\) after \d+ "
        r"function evaluations; raise options=\{'max_num_steps': \.\.\.\}, loosen rtol/atol, or "
        r"use method='rosenbrock23' if the problem is stiff$"
    )
    with pytest.raises(MaxStepsExceededError, match=pattern):
        odeint(lambda t, y: torch.cos(10 * t) * y, Y0, torch.tensor([0.0, 100.0]),
               options={"max_num_steps": 10})  # fmt: skip


def test_nan_during_adaptive_solve_names_t() -> None:
    def blows_up(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.where(t > 0.5, torch.full_like(y, float("nan")), -y)

    with pytest.raises(
        NonFiniteStateError, match=r"^the state became NaN or Inf at t=0\.5\d*: "
    ) as info:
        odeint(blows_up, Y0.double(), torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert 0.49 < info.value.t <= 0.5


def test_nan_during_fixed_step_solve_names_step() -> None:
    def blows_up(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.where(t > 0.5, torch.full_like(y, float("nan")), -y)

    message = "the state became NaN or Inf in the step from t=0.5 to t=0.75"
    with raises(NonFiniteStateError, message):
        odeint(blows_up, Y0, torch.tensor([0.0, 1.0]), method="rk4", options={"step_size": 0.25})


def test_nan_in_initial_derivative() -> None:
    with raises(NonFiniteStateError, "dy/dt is NaN or Inf at the initial time t=0"):
        odeint(lambda t, y: y * float("nan"), Y0, T)


def test_step_size_that_divides_float32_times_takes_whole_steps() -> None:
    """float32 times 0.01 apart differ from 0.01 by up to 5·10⁻⁶ of it: still one step."""
    t = torch.arange(100, dtype=torch.float32) * 0.01
    for i in range(99):
        _, stats = odeint(
            lambda s, y: -y,
            Y0,
            t[i : i + 2],
            method="rk4",
            options={"step_size": 0.01},
            return_stats=True,
        )
        assert stats.n_accepted == 1
