"""The solver core's contract: arguments parsed once (the defects of issue 17, each reproduced
and mended), solve() -> Solution with per-sample statuses, methods given as a Tableau, the PID
controller, half-precision and 0-d states, and fields that ignore y."""

from __future__ import annotations

import math
import re
import warnings

import pytest
import torch

from neuralode import (
    Checkpointed,
    ODEInputError,
    StepSizeUnderflowError,
    Tableau,
    odeint,
    odeint_adjoint,
    solve,
)
from neuralode.core import config

T = torch.tensor([0.0, 1.0], dtype=torch.float64)


def decay(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return -y


class Decay(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.k = torch.nn.Parameter(torch.tensor(0.7, dtype=torch.float64))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return -self.k * y


def test_step_size_with_compile_is_refused_not_ignored() -> None:
    """Defect 1: options step_size and compile together ran adaptive steps silently."""
    message = (
        "options['compile'] runs adaptive steps; it cannot be combined with option(s) "
        "['step_size']: drop 'compile' for fixed steps"
    )
    with pytest.raises(ODEInputError, match=re.escape(message)):
        odeint(decay, T.clone(), T, method="dopri5", options={"step_size": 0.1, "compile": True})


def test_adjoint_of_a_fixed_grid_solve() -> None:
    """Defect 2: the adjoint's backward solve copied the forward grid and failed. The backward
    rk4 steps on the same grid, so the gradient is the forward solve's (exp(-k) to rk4's
    error on 4 steps)."""
    func = Decay()
    y0 = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    grid = torch.linspace(0, 1, 5, dtype=torch.float64)
    ys = odeint_adjoint(func, y0, T, method="rk4", options={"grid": grid})
    dy0, dk = torch.autograd.grad(ys[-1, 0], (y0, func.k))
    assert float(dy0) == pytest.approx(math.exp(-0.7), rel=1e-4)
    assert float(dk) == pytest.approx(-math.exp(-0.7), rel=1e-4)


def test_forward_seminorm_is_named() -> None:
    """Defect 3: options={'norm': 'seminorm'} gave "'str' object is not callable"."""
    with pytest.raises(ODEInputError, match=r"adjoint_options=\{'norm': 'seminorm'\}"):
        odeint(decay, T.clone(), T, options={"norm": "seminorm"})


def test_zero_atol_with_a_zero_component() -> None:
    """Defect 4: atol=0 with a zero in y0 blamed the field ('dy/dt is NaN or Inf'). Pure
    relative control works; rtol = atol = 0 is refused by name."""

    def field(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.stack([-y[0], torch.ones_like(y[1])])

    y0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    ys = odeint(field, y0, T, rtol=1e-8, atol=0.0)
    exact = torch.tensor([math.exp(-1.0), 1.0], dtype=torch.float64)
    torch.testing.assert_close(ys[-1], exact, rtol=1e-6, atol=0)
    with pytest.raises(ODEInputError, match=r"rtol and atol are both 0 for 2 state component"):
        odeint(field, y0, T, rtol=0.0, atol=0.0)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"safety": 2}, "option 'safety' must be a number in (0, 1], got 2.0"),
        ({"dfactor": 0.0}, "option 'dfactor' must be a number in (0, 1], got 0.0"),
        ({"ifactor": 0.5}, "option 'ifactor' must be a finite number >= 1, got 0.5"),
        ({"first_step": -0.1}, "option 'first_step' must be a positive number"),
        ({"min_step": 0.5, "max_step": 0.1}, "option 'min_step' (0.5) exceeds 'max_step' (0.1)"),
        ({"max_num_steps": 0}, "option 'max_num_steps' must be a positive integer, got 0"),
    ],
)
def test_controller_values_out_of_range_are_refused(options: dict, message: str) -> None:
    """Defect 5: safety=2 ran 600,000 evaluations into MaxStepsExceededError; a negative
    first_step was accepted."""
    with pytest.raises(ODEInputError, match=re.escape(message)):
        odeint(decay, T.clone(), T, options=options)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_with_default_tolerances(dtype: torch.dtype) -> None:
    """Defect 6: float16 failed ('dy/dt is NaN or Inf'), bfloat16 returned 0.828 for e^-1.
    Solved in float32 with tolerances raised to the dtype's resolution (warned once)."""
    y0 = torch.ones(3, dtype=dtype)
    t = torch.tensor([0.0, 1.0], dtype=dtype)
    config._WARNED_RESOLUTION.clear()
    with pytest.warns(
        RuntimeWarning, match=f"rtol=1e-07, atol=1e-09 below the resolution of a {dtype}"
    ):
        ys, stats = odeint(decay, y0, t, return_stats=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once is enough
        odeint(decay, y0, t)
    assert ys.dtype == dtype
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(ys[-1].float(), torch.full((3,), math.exp(-1.0)), rtol=4 * eps,
                               atol=0)  # fmt: skip
    assert stats.nfe < 100


def test_zero_dimensional_state_in_every_gradient_mode() -> None:
    """Defect 7: a 0-d y0 raised TypeError in every gradient mode."""
    for gradient in ("backprop", "adjoint", Checkpointed(every=2)):
        func = Decay()
        y0 = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
        ys = odeint(func, y0, T, rtol=1e-10, atol=1e-10, gradient=gradient)
        assert ys.shape == (2,)
        assert float(ys[-1].detach()) == pytest.approx(2 * math.exp(-0.7), rel=1e-8)
        dy0, dk = torch.autograd.grad(ys[-1], (y0, func.k))
        assert float(dy0) == pytest.approx(math.exp(-0.7), rel=1e-7)
        assert float(dk) == pytest.approx(-2 * math.exp(-0.7), rel=1e-7)


def test_adjoint_of_a_field_that_ignores_y_and_parameters() -> None:
    """Defect 8: dy/dt = cos(t) failed in the adjoint ('element 0 of tensors does not require
    grad'); y(1) = y0 + sin(1) and dy(1)/dy0 = 1."""
    y0 = torch.tensor([0.5], dtype=torch.float64, requires_grad=True)
    ys = odeint_adjoint(lambda t, y: torch.cos(t) * torch.ones_like(y), y0, T, rtol=1e-10,
                        atol=1e-10, adjoint_params=())  # fmt: skip
    assert float(ys[-1, 0].detach()) == pytest.approx(0.5 + math.sin(1.0), rel=1e-9)
    (dy0,) = torch.autograd.grad(ys[-1, 0], y0)
    assert float(dy0) == pytest.approx(1.0, rel=1e-12)


def test_solution_reports_a_failing_sample_by_index() -> None:
    """Per-sample steps: sample 1 runs into a singularity (y' = y², y0 = 2 blows up at t = 1/2);
    with raise_on_failure=False the others finish and the failure is reported by index."""
    y0 = torch.tensor([[0.5], [2.0], [-1.0]], dtype=torch.float64)
    t = torch.linspace(0, 1, 5, dtype=torch.float64)
    solution = solve(lambda t, y: y**2, y0, t, rtol=1e-8, atol=1e-8,
                     options={"per_sample": True}, raise_on_failure=False)  # fmt: skip
    assert not solution.success and solution.failed.tolist() == [1]
    assert solution.status.tolist() == [0, 1, 0]
    exact = y0[[0, 2], 0] / (1 - y0[[0, 2], 0] * t[:, None])  # y0 / (1 - y0 t)
    torch.testing.assert_close(solution.ys[:, [0, 2], 0], exact, rtol=1e-6, atol=0)
    assert torch.isnan(solution.ys[3:, 1]).all() and not torch.isnan(solution.ys[:3, 1]).any()
    with pytest.raises(StepSizeUnderflowError, match=r"at t=0\.5\d* in sample 1"):
        solution.raise_for_status()
    with pytest.raises(StepSizeUnderflowError, match="in sample 1"):
        solve(lambda t, y: y**2, y0, t, options={"per_sample": True})


def test_a_tableau_of_your_own_is_a_method() -> None:
    """Ralston's second-order method, given as a Tableau: the error falls as h²."""
    ralston = Tableau(name="ralston", order=2, c=(0.0, 2 / 3), a=((), (2 / 3,)), b=(0.25, 0.75))
    errors = []
    for step in (0.1, 0.05):
        ys = odeint(decay, torch.tensor([1.0], dtype=torch.float64), T, method=ralston,
                    options={"step_size": step})  # fmt: skip
        errors.append(abs(float(ys[-1, 0]) - math.exp(-1.0)))
    assert math.log2(errors[0] / errors[1]) == pytest.approx(2.0, abs=0.1)


def test_pid_controller_meets_the_tolerance() -> None:
    def rotation(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.stack([-y[1], y[0]])

    y0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    t = torch.linspace(0, 6, 4, dtype=torch.float64)
    ys = odeint(rotation, y0, t, rtol=1e-9, atol=1e-9, options={"controller": "PID"})
    exact = torch.stack([torch.cos(t), torch.sin(t)], dim=1)
    torch.testing.assert_close(ys, exact, rtol=0, atol=1e-7)


def test_dense_output_between_the_output_times() -> None:
    """solve(..., dense=True): the solution anywhere in [t0, t1] from the accepted steps'
    interpolant, to the tolerance, differentiable by backprop (d/dk of e^(-k t) = -t e^(-k t))."""
    func = Decay()
    y0 = torch.tensor([1.0], dtype=torch.float64)
    t = torch.tensor([0.0, 3.0], dtype=torch.float64)
    solution = solve(func, y0, t, rtol=1e-10, atol=1e-10, dense=True)
    between = torch.tensor([2.5, 0.1, 1.7], dtype=torch.float64)
    values = solution.evaluate(between)[:, 0]
    torch.testing.assert_close(values, torch.exp(-0.7 * between), rtol=1e-8, atol=0)
    (dk,) = torch.autograd.grad(values.sum(), func.k)
    expected = float((-between * torch.exp(-0.7 * between)).sum())
    assert float(dk) == pytest.approx(expected, rel=1e-7)
    backwards = solve(decay, y0, t.flip(0), rtol=1e-10, atol=1e-10, dense=True)
    torch.testing.assert_close(backwards.evaluate(between)[:, 0], torch.exp(3.0 - between),
                               rtol=1e-8, atol=0)  # fmt: skip
    with pytest.raises(ODEInputError, match=r"t=3\.5 is outside the solved interval \[0, 3\]"):
        solution.evaluate(torch.tensor([3.5]))
    with pytest.raises(ODEInputError, match="dense=True keeps the steps of shared-step eager"):
        solve(decay, y0[None], t, options={"per_sample": True}, dense=True)


def test_step_callbacks_as_torchdiffeq_calls_them() -> None:
    """callback_step before every attempt, callback_accept_step / callback_reject_step after
    (adaptive methods), with 0-d t0 and dt and the state shaped like y0; the adjoint's backward
    solve calls the *_adjoint variants; a fixed grid calls callback_step only."""

    class Watched(Decay):
        def __init__(self) -> None:
            super().__init__()
            self.calls: dict[str, list] = {}

        def _record(self, name: str, t0: torch.Tensor, y0: torch.Tensor, dt: torch.Tensor):
            self.calls.setdefault(name, []).append((t0.shape, tuple(y0.shape), dt.shape))

        def callback_step(self, t0, y0, dt):
            self._record("step", t0, y0, dt)

        def callback_accept_step(self, t0, y0, dt):
            self._record("accept", t0, y0, dt)

        def callback_reject_step(self, t0, y0, dt):
            self._record("reject", t0, y0, dt)

        def callback_step_adjoint(self, t0, y0, dt):
            self._record("step_adjoint", t0, y0, dt)

    func = Watched()
    y0 = torch.ones(2, 3, dtype=torch.float64, requires_grad=True)
    t = torch.linspace(0, 5, 3, dtype=torch.float64)
    ys, stats = odeint_adjoint(func, y0, t, rtol=1e-6, atol=1e-6, options={"first_step": 1.0},
                               return_stats=True)  # fmt: skip
    assert len(func.calls["step"]) == stats.n_steps
    assert len(func.calls["accept"]) == stats.n_accepted
    assert len(func.calls["reject"]) == stats.n_rejected > 0
    assert set(func.calls["step"]) == {((), (2, 3), ())}
    ys[-1].sum().backward()
    assert len(func.calls["step_adjoint"]) == stats.backward_steps > 0
    assert set(func.calls["step_adjoint"]) == {((), (2 * 6 + 1,), ())}  # [y, a, dL/dk], flat
    fixed = Watched()
    odeint(fixed, y0.detach(), t, method="rk4", options={"step_size": 0.5})
    assert len(fixed.calls["step"]) == 10 and set(fixed.calls) == {"step"}


@pytest.mark.parametrize("name", ["dopri5", "bosh3", "fehlberg2", "adaptive_heun", "dopri8"])
def test_one_row_error_estimate_is_the_tableaus(name: str) -> None:
    """On one row, an adaptive ExplicitRK forms its error estimate from the stages its
    combinations stack (FSAL: all but f(t1, y1)); it equals the definition Σ b_err[s] k[s] of
    the base class. No stack of stages is alive while the field runs (the adjoint's backward
    field is a vector-Jacobian product: memory held then adds to its peak), and none is recorded
    for the estimate where autograd records the step."""
    import gc

    from neuralode.core.arith import SCALAR
    from neuralode.core.methods import METHODS
    from neuralode.core.steppers import ExplicitRK, Stepper

    n = 17  # (wider than any tableau row, so that a (k, n) tensor is a stack of states)
    weights = torch.randn(n, dtype=torch.float64)
    stacks = []

    def field(t: float, y: torch.Tensor) -> torch.Tensor:
        alive = (o for o in gc.get_objects() if type(o) is torch.Tensor)
        stacks.extend(o.shape for o in alive if o.dim() == 2 and o.shape[1] == n and len(o) > 1)
        return torch.tanh(y * weights) * math.cos(t)

    stepper = ExplicitRK(METHODS[name], estimates_error=True)
    y = torch.randn(1, n, dtype=torch.float64, requires_grad=True)
    ks, _ = stepper.step(field, SCALAR, 0.3, y, field(0.3, y), 1.5)
    assert stacks == []
    shortcut, definition = stepper.error(SCALAR, ks), Stepper.error(stepper, SCALAR, ks)
    assert not shortcut.requires_grad  # (step-size control: no graph recorded for it)
    assert definition.abs().max() > 1e-6  # (a real estimate, not zeros)
    torch.testing.assert_close(shortcut, definition, rtol=1e-12, atol=1e-15)
    assert stepper._error is None  # handed over, not held into the next step
