"""torchdiffeq's step options with torchdiffeq's meaning: a fixed grid's ``interp``,
``perturb`` and ``grid_constructor``; adaptive steps' ``step_t`` and ``jump_t``."""

from __future__ import annotations

import math

import pytest
import torch
import torchdiffeq

from neuralode import ODEInputError, odeint, solve

Y0 = torch.tensor([1.0, -0.5], dtype=torch.float64)
T = torch.linspace(0.0, 2.0, 7, dtype=torch.float64)  # outputs between grid points


def smooth(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.cos(3 * t) * y + torch.sin(t)


def switch(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """dy/dt = y up to and including t = 0.5, then -2y: a jump in f at 0.5."""
    return torch.where(t <= 0.5, 1.0, -2.0) * y


def switch_exact(t: torch.Tensor) -> torch.Tensor:
    before = torch.exp(t)
    after = math.exp(0.5) * torch.exp(-2.0 * (t - 0.5))
    return Y0 * torch.where(t <= 0.5, before, after)[:, None]


@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4", "heun3"])
@pytest.mark.parametrize(
    "options",
    [
        {"step_size": 0.3},
        {"step_size": 0.3, "interp": "cubic"},
        {"grid_constructor": lambda func, y0, t: torch.linspace(0.0, 2.0, 9).double()},
    ],
    ids=["linear", "cubic", "grid_constructor"],
)
def test_fixed_grid_outputs_match_torchdiffeq(method: str, options: dict) -> None:
    expected = torchdiffeq.odeint(smooth, Y0, T, method=method, options=options)
    got = odeint(smooth, Y0, T, method=method, options=options)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-14)


def test_linear_interp_lies_on_the_chord() -> None:
    """Between two grid points the default output is the chord of the steps' ends."""
    t = torch.tensor([0.0, 0.1, 0.3], dtype=torch.float64)
    ys = odeint(smooth, Y0, t, method="rk4", options={"grid": [0.0, 0.3]})
    torch.testing.assert_close(ys[1], ys[0] + (ys[2] - ys[0]) / 3, rtol=0, atol=1e-15)


@pytest.mark.parametrize("method", ["euler", "rk4"])
def test_perturb_evaluates_f_on_the_side_of_the_step(method: str) -> None:
    """f jumps at the grid point 0.5 (f(0.5) is the left value): with perturb the step from 0.5
    uses the right value, as torchdiffeq's does; without it, the left value."""
    options = {"step_size": 0.25}
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    plain = odeint(switch, Y0, t, method=method, options=options)
    perturbed = odeint(switch, Y0, t, method=method, options={**options, "perturb": True})
    perturb = {**options, "perturb": True}
    expected = torchdiffeq.odeint(switch, Y0, t, method=method, options=perturb)
    torch.testing.assert_close(perturbed, expected, rtol=0, atol=1e-14)
    exact = switch_exact(t)
    assert (perturbed[-1] - exact[-1]).abs().max() < (plain[-1] - exact[-1]).abs().max()


def test_jump_t_lands_on_the_jump_and_restarts_after_it() -> None:
    options = {"jump_t": torch.tensor([0.5], dtype=torch.float64)}
    tolerances = {"rtol": 1e-8, "atol": 1e-10}
    with_jump, stats = odeint(switch, Y0, T, options=options, return_stats=True, **tolerances)
    _, plain_stats = odeint(switch, Y0, T, return_stats=True, **tolerances)
    expected = torchdiffeq.odeint(switch, Y0, T, method="dopri5", options=options, **tolerances)
    assert (with_jump - switch_exact(T)).abs().max() < 1e-7
    torch.testing.assert_close(with_jump, expected, rtol=0, atol=1e-8)
    assert stats.nfe < plain_stats.nfe  # no step-size collapse at the discontinuity


class _StepEnds(torch.nn.Module):
    """A field that records where its accepted steps end (torchdiffeq's callbacks)."""

    def __init__(self) -> None:
        super().__init__()
        self.ends: list[float] = []

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return smooth(t, y)

    def callback_accept_step(self, t0: torch.Tensor, y0: torch.Tensor, dt: torch.Tensor) -> None:
        self.ends.append(float(t0 + dt))


@pytest.mark.parametrize("direction", [1.0, -1.0])
def test_step_t_times_end_steps(direction: float) -> None:
    field = _StepEnds()
    points = [0.123, 0.77, 1.5]
    t = torch.tensor([0.0, 2.0], dtype=torch.float64) * direction
    step_t = torch.tensor(points, dtype=torch.float64) * direction
    solved = odeint(field, Y0, t, rtol=1e-6, atol=1e-8, options={"step_t": step_t})
    for point in step_t.tolist():
        assert min(abs(end - point) for end in field.ends) < 1e-15, (point, field.ends)
    reference = odeint(smooth, Y0, t, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(solved, reference, rtol=0, atol=1e-5)


def test_dense_output_follows_interp() -> None:
    """Solution.evaluate between grid points gives what odeint gives at that time."""
    t = torch.tensor([0.0, 2.0], dtype=torch.float64)
    solution = solve(smooth, Y0, t, method="rk4", options={"step_size": 0.3}, dense=True)
    inside = torch.tensor([0.45], dtype=torch.float64)
    expected = odeint(smooth, Y0, torch.tensor([0.0, 0.45, 2.0], dtype=torch.float64), method="rk4",
                      options={"step_size": 0.3})[1]  # fmt: skip
    torch.testing.assert_close(solution.evaluate(inside)[0], expected, rtol=0, atol=1e-15)


@pytest.mark.parametrize(
    "method, options, message",
    [
        ("rk4", {"interp": "quadratic"}, "option 'interp' must be 'linear' or 'cubic', got "
         "'quadratic'"),
        ("rk4", {"perturb": 1}, "option 'perturb' must be True or False, got 1"),
        ("dopri5", {"jump_t": [0.5], "per_sample": True}, "option 'jump_t' works with "
         "shared-step eager solves: it cannot be combined with options 'per_sample' or "
         "'compile'"),
        ("dopri5", {"step_t": [0.5, 1.0], "jump_t": [1.0]}, "options 'step_t' and 'jump_t' share "
         "the time(s) [1.0]: a time is either a step time or a jump time; leave it in 'jump_t'"),
        ("rk4", {"step_size": 0.1, "grid_constructor": lambda f, y, t: t}, "give one of options "
         "'step_size', 'grid', 'grid_constructor', not ['grid_constructor', 'step_size']"),
        ("rk4", {"grid_constructor": [0.0, 1.0]}, "option 'grid_constructor' must be a callable "
         "grid_constructor(func, y0, t) -> 1-D tensor of times, got [0.0, 1.0]"),
        ("dopri5", {"step_t": "soon"}, "option 'step_t' must be a 1-D tensor (or a sequence) of "
         "times, got 'soon'"),
    ],
)  # fmt: skip
def test_bad_step_options_are_named(method: str, options: dict, message: str) -> None:
    y0 = torch.ones(3, 2, dtype=torch.float64)
    with pytest.raises(ODEInputError) as error:
        odeint(smooth, y0, T, method=method, options=options)
    assert str(error.value) == message


@pytest.mark.parametrize(
    "method, options, ignored, kind",
    [
        ("dopri5", {"perturb": True}, ["perturb"], "adaptive steps"),
        ("dopri5", {"max_order": 4, "interp": "cubic"}, ["interp", "max_order"], "adaptive steps"),
        ("dopri5", {"step_t": [0.5], "step_size": 0.1}, ["step_t"], "a fixed grid"),
        ("rk4", {"first_step": 0.1, "max_num_steps": 10}, ["first_step", "max_num_steps"],
         "a fixed grid"),
    ],
)  # fmt: skip
def test_torchdiffeq_options_that_do_not_apply_are_ignored_with_a_warning(
    method: str, options: dict, ignored: list[str], kind: str
) -> None:
    """torchdiffeq warns about an option its solver does not take and solves without it: at
    every call (also when the parsed settings are remembered), pointing at the caller."""
    kept = {key: value for key, value in options.items() if key not in ignored}
    message = (
        f"neuralode: option(s) {ignored} do not apply to method {method!r} on {kind}; ignored, "
        "as torchdiffeq ignores them"
    )
    for _ in range(2):
        with pytest.warns(UserWarning) as caught:
            got = odeint(smooth, Y0, T, method=method, options=options)
        assert [str(w.message) for w in caught] == [message]
        assert caught[0].filename == __file__
    torch.testing.assert_close(got, odeint(smooth, Y0, T, method=method, options=kept),
                               rtol=0, atol=0)  # fmt: skip


def test_a_name_no_method_knows_is_still_refused() -> None:
    with pytest.raises(ODEInputError, match="unknown option 'max_ordre' for method 'dopri5'"):
        odeint(smooth, Y0, T, options={"max_ordre": 4})
