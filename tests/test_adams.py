"""The Adams methods (explicit_adams, implicit_adams, fixed_adams) against torchdiffeq 0.2.5's,
their measured orders, their gradients in every gradient mode, and their options' checks."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torchdiffeq

from neuralode import Checkpointed, ODEInputError, odeint, odeint_adjoint

DTYPE = torch.float64


class Field(torch.nn.Module):
    """A nonlinear, non-autonomous field with slow modes (|λ| ≲ 0.5: explicit Adams of order
    11 needs |h λ| ≲ 0.003 to be stable)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor([-0.5, 0.2, 0.3, -0.4], dtype=DTYPE))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        a = self.a
        return torch.stack(
            [
                a[0] * y[0] + a[1] * y[0] * y[1],
                a[2] * torch.sin(y[0]) + a[3] * y[1] + 0.1 * torch.cos(t),
            ]
        )


Y0 = torch.tensor([1.0, 0.5], dtype=DTYPE)
# Each method on a grid where it is stable: (output times, step_size).
GRIDS = {
    "explicit_adams": (torch.linspace(0.0, 1.0, 201, dtype=DTYPE), 0.005),
    "implicit_adams": (torch.linspace(0.0, 2.0, 41, dtype=DTYPE), 0.02),
    "fixed_adams": (torch.linspace(0.0, 2.0, 41, dtype=DTYPE), 0.02),
}


@pytest.mark.parametrize("method", sorted(GRIDS))
@pytest.mark.parametrize("kind", ["default", "step_size", "max_order"])
def test_agrees_with_torchdiffeq(method: str, kind: str) -> None:
    """The same numbers as torchdiffeq on its grid: the output times (default), a step_size
    (outputs at every 10th step), and a lower max_order with fewer corrector iterations."""
    times, step = GRIDS[method]
    options: dict = {}
    if kind == "step_size":
        times, options = times[::10], {"step_size": step}
    elif kind == "max_order":
        options = {"max_order": 5, "max_iters": 2}
    func = Field()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")  # neither solve's corrector fails to converge here
        want = torchdiffeq.odeint(func, Y0, times, method=method, options=options)
        got = odeint(func, Y0, times, method=method, options=options)
    assert float((got - want).abs().max()) < 1e-12
    assert float((got - Y0).abs().max()) > 0.1  # (the solution moves)


def test_non_converged_corrector_matches_torchdiffeq_and_warns_once() -> None:
    """Corrector iterations that miss rtol/atol: the last iterate is kept and the history
    drops its oldest derivative, as in torchdiffeq (same numbers), with one warning."""
    times = torch.linspace(0.0, 2.0, 21, dtype=DTYPE)
    options = {"max_iters": 1}
    func = Field()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = torchdiffeq.odeint(func, Y0, times, method="implicit_adams", options=options)
    with torch.no_grad(), pytest.warns(RuntimeWarning, match="did not converge") as caught:
        got = odeint(func, Y0, times, method="implicit_adams", options=options)
    assert len([w for w in caught if "did not converge" in str(w.message)]) == 1
    assert float((got - want).abs().max()) < 1e-12


def _decay_errors(method: str, steps: list[float], t_end: float, **options) -> list[float]:
    """|y(t_end) − e^(−t_end)| for y' = −y, y(0) = 1, at each step size."""
    errors = []
    for h in steps:
        y = odeint(lambda t, y: -y, torch.ones(1, dtype=DTYPE),
                   torch.tensor([0.0, t_end], dtype=DTYPE), rtol=1e-13, atol=1e-15,
                   method=method, options={"step_size": h, **options})  # fmt: skip
        errors.append(abs(float(y[-1, 0]) - math.exp(-t_end)))
    return errors


@pytest.mark.parametrize(
    ("method", "steps", "t_end", "options", "order"),
    [
        # One Adams–Bashforth step of order 3 while the history fills sets the order.
        ("explicit_adams", [0.004, 0.002, 0.001], 0.1, {}, 4),
        ("explicit_adams", [0.1, 0.05, 0.025], 1.0, {"max_order": 6}, 4),
        # The two rk4 steps (local errors O(h⁵), made once) set it, the corrector converging.
        ("implicit_adams", [0.05, 0.025, 0.0125], 1.0, {"max_iters": 50}, 5),
        # Adams–Moulton of order 4 on every step once the history is full.
        ("implicit_adams", [0.1, 0.05, 0.025], 1.0, {"max_order": 4, "max_iters": 50}, 4),
    ],
)
def test_measured_order(
    method: str, steps: list[float], t_end: float, options: dict, order: int
) -> None:
    errors = _decay_errors(method, steps, t_end, **options)
    slope = np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert abs(slope - order) < 0.25, (errors, slope)


def test_uneven_grid_keeps_the_order() -> None:
    """Variable-step coefficients: on an uneven grid the error falls at the method's order
    (where torchdiffeq's constant coefficients would lose it); on it torchdiffeq differs."""
    errors = []
    rng = np.random.default_rng(0)
    for n in (20, 40, 80):
        grid = np.sort(np.concatenate([[0.0, 1.0], rng.uniform(0.0, 1.0, n - 1)]))
        times = torch.tensor(grid, dtype=DTYPE)
        y = odeint(lambda t, y: -y, torch.ones(1, dtype=DTYPE), times, rtol=1e-13,
                   atol=1e-15, method="implicit_adams", options={"max_iters": 50})  # fmt: skip
        errors.append(float((y[:, 0] - torch.exp(-times)).abs().max()))
    assert errors[2] < errors[0] / 2**6, errors
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (its corrector does not converge on this grid)
        constant = torchdiffeq.odeint(lambda t, y: -y, torch.ones(1, dtype=DTYPE), times,
                                      rtol=1e-13, atol=1e-15, method="implicit_adams",
                                      options={"max_iters": 50})  # fmt: skip
    assert float((constant[:, 0] - torch.exp(-times)).abs().max()) > 1e3 * errors[2]


def _loss(method: str, gradient, func: Field, y0: torch.Tensor) -> torch.Tensor:
    times = torch.tensor([0.0, 0.5, 1.0], dtype=DTYPE)
    options = {"step_size": 0.05}
    if gradient == "adjoint":
        ys = odeint_adjoint(func, y0, times, method=method, options=options)
    else:
        ys = odeint(func, y0, times, method=method, options=options, gradient=gradient)
    return (ys[1:] ** 2).sum()


@pytest.mark.parametrize("method", ["explicit_adams", "implicit_adams"])
@pytest.mark.parametrize("gradient", ["backprop", "adjoint", Checkpointed(every=3)])
def test_gradients_match_finite_differences(method: str, gradient) -> None:
    """d loss / d(y0, parameters) against central differences of the solve (backprop and the
    checkpointed reruns: the discrete solve's exact gradient; the adjoint: the continuous one,
    to the method's accuracy, about 1e-5 relative for explicit_adams at this step, 1e-8 for
    implicit_adams)."""
    rtol = 1e-4 if gradient == "adjoint" and method == "explicit_adams" else 1e-6
    func = Field()
    y0 = Y0.clone().requires_grad_(True)
    loss = _loss(method, gradient, func, y0)
    got = torch.autograd.grad(loss, (y0, func.a))
    eps = 1e-6
    for tensor, grad in zip((y0, func.a), got, strict=True):
        numeric = torch.zeros_like(tensor)
        for i in range(tensor.numel()):
            with torch.no_grad():
                original = tensor[i].item()
                tensor[i] = original + eps
                up = _loss(method, "backprop", func, y0.detach())
                tensor[i] = original - eps
                down = _loss(method, "backprop", func, y0.detach())
                tensor[i] = original
            numeric[i] = (up - down) / (2 * eps)
        torch.testing.assert_close(grad, numeric, rtol=rtol, atol=1e-8)


def test_checkpointed_reruns_start_from_the_segment_history() -> None:
    """A checkpointed solve reruns each segment with the history it first had: the same
    gradient as backprop to rounding (a rerun from the last history would differ)."""
    grads = []
    for gradient in ("backprop", Checkpointed(every=2)):
        func = Field()
        y0 = Y0.clone().requires_grad_(True)
        grads.append(torch.autograd.grad(_loss("implicit_adams", gradient, func, y0), (y0, func.a)))
    for got, want in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_order": 13}, "option 'max_order' must be an integer from 1 to 12 (the Adams "
         "history holds max_order - 1 past derivatives), got 13"),
        ({"max_order": 0}, "option 'max_order' must be an integer from 1 to 12 (the Adams "
         "history holds max_order - 1 past derivatives), got 0"),
        ({"max_order": 4.0}, "option 'max_order' must be an integer from 1 to 12 (the Adams "
         "history holds max_order - 1 past derivatives), got 4.0"),
        ({"max_iters": 0}, "option 'max_iters' must be a positive integer, got 0"),
        ({"max_iters": True}, "option 'max_iters' must be a positive integer, got True"),
        ({"stepsize": 0.1}, "unknown option 'stepsize' for method 'implicit_adams'; valid "
         "options are: dtype, grid, grid_constructor, interp, max_iters, max_order, perturb, "
         "step_size"),
        ({"rtol": 0.1}, "unknown option 'rtol' for method 'implicit_adams'; valid options "
         "are: dtype, grid, grid_constructor, interp, max_iters, max_order, perturb, "
         "step_size"),
        ({"per_sample": True}, "method 'implicit_adams' (a multistep method) does not take "
         "option(s) ['per_sample']: its history of past derivatives moves on with the shared "
         "steps of the whole state, eagerly; drop the option(s), or use an adaptive "
         "Runge–Kutta method (e.g. 'dopri5')"),
        ({"compile": True}, "method 'implicit_adams' (a multistep method) does not take "
         "option(s) ['compile']: its history of past derivatives moves on with the shared "
         "steps of the whole state, eagerly; drop the option(s), or use an adaptive "
         "Runge–Kutta method (e.g. 'dopri5')"),
    ],
)  # fmt: skip
def test_bad_options(options: dict, message: str) -> None:
    with pytest.raises(ODEInputError) as error:
        odeint(Field(), Y0, torch.tensor([0.0, 1.0], dtype=DTYPE), method="implicit_adams",
               options=options)  # fmt: skip
    assert str(error.value) == message


def test_low_max_order_is_rk4_with_a_warning() -> None:
    """max_order below 4: every step is rk4, as torchdiffeq (which also warns)."""
    times = torch.linspace(0.0, 1.0, 11, dtype=DTYPE)
    with torch.no_grad(), pytest.warns(UserWarning, match="reduces to rk4"):
        got = odeint(Field(), Y0, times, method="explicit_adams", options={"max_order": 3})
    with torch.no_grad():
        want = odeint(Field(), Y0, times, method="rk4")
    torch.testing.assert_close(got, want, rtol=0, atol=1e-15)


def test_each_solve_starts_with_an_empty_history() -> None:
    """A fresh history per solve: solving twice gives the same numbers."""
    func, times = Field(), torch.linspace(0.0, 2.0, 41, dtype=DTYPE)
    with torch.no_grad():
        first = odeint(func, Y0, times, method="implicit_adams")
        second = odeint(func, Y0, times, method="implicit_adams")
    assert torch.equal(first, second)
