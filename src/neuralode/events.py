"""Solving until an event: ``odeint_event`` with torchdiffeq's arguments and meaning.

The solve steps until ``event_fn(t, y)`` changes sign across an accepted step, then locates the
zero on that step's dense output (Illinois' regula falsi, to the resolution of t). Gradients
reach the event time by the implicit function theorem: g(t*, y(t*; θ); θ) = 0 gives

    dt*/dθ = −(∂g/∂θ + ∂g/∂y · ∂y(t*)/∂θ) / (∂g/∂t + ∂g/∂y · f(t*, y*)),

and the state at the event moves with it, dy(t*)/dθ = ∂y(t*)/∂θ + f(t*, y*) dt*/dθ. The
solution up to t* comes from ``odeint_interface`` (``odeint`` or ``odeint_adjoint``), so either
gradient mode carries ∂y(t*)/∂θ.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import torch

from .core.arith import SCALAR
from .core.config import make_problem
from .core.loop import MAX_STEPS, RUNNING, STOPPED, AcceptedStep, Loop
from .core.state import State, StateLayout, VectorFieldFn
from .errors import ODEInputError, SolverError
from .odeint import odeint
from .solution import DEFAULT_ATOL, DEFAULT_RTOL

EventFn = Callable[[torch.Tensor, State], torch.Tensor]
"""event_fn(t, y) → a 0-d tensor; the event is where it crosses zero."""


class EventNotFoundError(SolverError):
    """The solve reached its horizon (``t_max``) or its step bound without an event."""


def odeint_event(
    func: VectorFieldFn,
    y0: State,
    t0: torch.Tensor,
    *,
    event_fn: EventFn,
    reverse_time: bool = False,
    odeint_interface: Callable[..., Any] = odeint,
    t_max: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, State]:
    """Solve dy/dt = func(t, y) from (t0, y0) until ``event_fn(t, y)`` crosses zero.

    Args:
        func: the vector field, as for :func:`~neuralode.odeint`.
        y0: the initial state, as for :func:`~neuralode.odeint`.
        t0: the start time, 0-d or of shape (1,).
        event_fn: g(t, y) → a one-element tensor; a zero at t0 itself is not an event. Where g
            does not change along the solution at the event (dg/dt = 0, e.g. an event function
            that returns zeros after a horizon) the event time has no gradient from g.
        reverse_time: integrate towards decreasing t.
        odeint_interface: ``neuralode.odeint`` or ``neuralode.odeint_adjoint`` (how the
            solution up to the event is differentiated).
        t_max: give up at this time (default: no horizon; ``max_num_steps`` bounds the search).
        kwargs: ``rtol``, ``atol``, ``method``, ``options`` and the adjoint's arguments, passed
            on to ``odeint_interface``.

    Returns:
        (event_t, solution): the event time, 0-d, differentiable with respect to y0, func's and
        event_fn's parameters; and the states at t0 and event_t, shape (2, *y0.shape) (a tuple
        of such for tuple states).

    Raises:
        EventNotFoundError: no crossing before ``t_max`` or within ``max_num_steps``.
    """
    if not (torch.is_tensor(t0) and t0.numel() == 1 and t0.dtype.is_floating_point):
        raise ODEInputError(f"t0 must be a one-element floating-point tensor, got {t0!r}")
    t0 = t0.reshape(())
    event_fn = _combined(event_fn, t0, y0)
    start = float(t0.detach())
    direction = -1.0 if reverse_time else 1.0
    horizon = direction * math.inf if t_max is None else float(t_max)
    if direction * (horizon - start) <= 0:
        raise ODEInputError(
            f"t_max={horizon:.6g} is not {'before' if reverse_time else 'after'} t0={start:.6g} "
            f"(reverse_time={reverse_time})"
        )
    with torch.no_grad():
        t_event = _find_event(func, y0, start, horizon, event_fn, kwargs)
    t_star = torch.tensor(t_event, dtype=t0.dtype, device=t0.device)
    # t0 keeps its gradient: a later start moves the event (odeint differentiates start times).
    solution = odeint_interface(func, y0, torch.stack([t0, t_star]), **kwargs)
    event_t, at_event = _implicit_event(func, event_fn, t_star, solution)
    return event_t, at_event


def odeint_until_event(
    func: VectorFieldFn,
    y0: State,
    t: torch.Tensor,
    event_fn: EventFn,
    solve: Callable[[torch.Tensor], Any],
    kwargs: dict[str, Any],
) -> tuple[torch.Tensor, Any]:
    """``odeint(..., event_fn=...)`` with torchdiffeq's meaning: solve from t[0] (towards t[1]'s
    side; the other times are ignored) until event_fn crosses zero (any of its entries, for a
    multi-entry event_fn), and return (event_t, ``solve(t[0], event_t)``). As in torchdiffeq,
    event_t is a plain value (no gradient; :func:`odeint_event` gives it one) and the solution,
    states at t[0] and event_t, is differentiated by ``solve``'s gradient mode as a solve to a
    fixed time."""
    if not (torch.is_tensor(t) and t.dim() == 1 and t.numel() >= 1 and t.dtype.is_floating_point):
        raise ODEInputError(f"t must be a non-empty 1-D floating-point tensor, got {t!r}")
    t0 = t[0]
    start = float(t0.detach())
    direction = -1.0 if t.numel() > 1 and float(t[1].detach()) < start else 1.0
    event_fn = _combined(event_fn, t0, y0)
    with torch.no_grad():
        t_event = _find_event(func, y0, start, direction * math.inf, event_fn, kwargs)
    event_t = torch.tensor(t_event, dtype=t.dtype, device=t.device)
    return event_t, solve(torch.stack([t0, event_t]))


def _combined(event_fn: EventFn, t0: torch.Tensor, y0: State) -> EventFn:
    """A multi-entry event_fn as one (torchdiffeq's combine_event_functions): each entry signed
    to start positive, their minimum, which first crosses zero when any entry does."""
    with torch.no_grad():
        first = event_fn(t0.detach(), y0)
    if not torch.is_tensor(first) or first.numel() <= 1:
        return event_fn
    signs = torch.sign(first)

    def combined(t: torch.Tensor, y: State) -> torch.Tensor:
        return (event_fn(t, y) * signs).min()

    return combined


def _find_event(
    func: VectorFieldFn,
    y0: State,
    start: float,
    horizon: float,
    event_fn: EventFn,
    kwargs: dict[str, Any],
) -> float:
    """The event time, by a search solve that stops at the first sign change."""
    options = {k: v for k, v in dict(kwargs.get("options") or {}).items() if k != "compile"}
    like = y0[0] if isinstance(y0, tuple) else y0
    like = like.real if like.is_complex() else like  # (time is real)
    finite_end = horizon if math.isfinite(horizon) else start + math.copysign(1.0, horizon)
    times = torch.tensor([start, finite_end], dtype=like.dtype, device=like.device)
    problem = make_problem(
        func,
        y0,
        times,
        kwargs.get("rtol", DEFAULT_RTOL),
        kwargs.get("atol", DEFAULT_ATOL),
        kwargs.get("method"),
        options,
    )
    if problem.execution.scipy is not None:
        raise ODEInputError(
            "event handling steps with neuralode's own methods: method='scipy_solver' cannot "
            "look for events (torchdiffeq's cannot either); pass a method such as 'dopri5'"
        )
    if not problem.method.adaptive and not math.isfinite(horizon):
        raise ODEInputError("a fixed-step method needs t_max to find an event")
    # Checked with a finite end; the search itself runs to the horizon, which may be ±inf.
    crossing = _Crossing(event_fn, problem.layout, like, start, problem.y0)
    loop = Loop(problem.stepper(), problem.controller, [start, horizon], problem.field, SCALAR,
                problem.max_num_steps)  # fmt: skip
    y0_row, f0 = problem.y0.view(1, -1), problem.first_derivative(problem.y0)
    carry = loop.finished(loop.run(loop.start(y0_row, f0, problem.first_step), watch=crossing))
    if carry.status == MAX_STEPS:
        error = loop.failure(carry, problem.stats.nfe)
        raise EventNotFoundError(f"no zero crossing of event_fn up to t={carry.t:.6g}: {error}",
                                 carry.t)  # fmt: skip
    if carry.status not in (RUNNING, STOPPED):
        raise loop.failure(carry, problem.stats.nfe)
    if crossing.time is None:
        raise EventNotFoundError(
            f"no zero crossing of event_fn between t0={start:.6g} and t_max={horizon:.6g} "
            f"(event_fn went from {crossing.first:.6g} to {crossing.last:.6g})",
            horizon,
        )
    return crossing.time


@dataclasses.dataclass
class _Crossing:
    """Watches the accepted steps for a sign change of g and locates its zero."""

    event_fn: EventFn
    layout: StateLayout
    like: torch.Tensor
    t0: float
    y0: torch.Tensor
    time: float | None = None

    def __post_init__(self) -> None:
        self.first = self.last = self.g(self.t0, self.y0)

    def g(self, t: float, y: torch.Tensor) -> float:
        time = torch.tensor(t, dtype=self.like.dtype, device=self.like.device)
        return float(self.event_fn(time, self.layout.unflatten(y.reshape(-1))))

    def __call__(self, step: AcceptedStep) -> bool:
        g_start, g_end = self.last, self.g(step.t1, step.y1)
        self.last = g_end
        if g_start == 0.0 or ((g_end > 0) == (g_start > 0) and g_end != 0.0):
            return False  # (a zero at t0 is not an event: the next step's sign decides)
        self.time = self._locate(step, g_start, g_end)
        return True

    def _locate(self, step: AcceptedStep, g_a: float, g_b: float) -> float:
        """Illinois' regula falsi on the step's dense output, to the resolution of t. A step
        that ends exactly at a zero (g may have jumped to 0, as past a horizon) is bisected
        for the first time where g is 0 or has changed sign."""
        a, b = step.t, step.t1
        if g_b == 0.0:
            while abs(b - a) > 4 * math.ulp(max(abs(a), abs(b))):
                m = 0.5 * (a + b)
                g_m = self.g(m, step.at([m]))
                if g_m == 0.0 or (g_m > 0) != (g_a > 0):
                    b = m
                else:
                    a = m
            return b
        side = 0
        for _ in range(200):
            if g_b == 0.0 or abs(b - a) <= 4 * math.ulp(max(abs(a), abs(b))):
                break
            m = b - g_b * (b - a) / (g_b - g_a)
            if not (min(a, b) < m < max(a, b)):
                m = 0.5 * (a + b)
            g_m = self.g(m, step.at([m]))
            if (g_m > 0) == (g_b > 0):
                b, g_b = m, g_m
                if side == -1:
                    g_a /= 2  # Illinois: halve the stale end's value
                side = -1
            else:
                a, g_a = b, g_b
                b, g_b = m, g_m
                side = 1
        return b


def _implicit_event(
    func: VectorFieldFn, event_fn: EventFn, t_star: torch.Tensor, solution: State
) -> tuple[torch.Tensor, State]:
    """event_t with the implicit-function gradient, and the solution whose last state moves
    with it (values unchanged)."""
    parts = solution if isinstance(solution, tuple) else (solution,)
    y_star = tuple(p[-1] for p in parts)
    state = y_star if isinstance(solution, tuple) else y_star[0]
    with torch.enable_grad():
        t_probe = t_star.detach().requires_grad_(True)
        y_probe = tuple(y.detach().requires_grad_(True) for y in y_star)
        g_probe = event_fn(t_probe, y_probe if isinstance(solution, tuple) else y_probe[0])
        dg: tuple[torch.Tensor | None, ...] = (None,) * (1 + len(y_probe))
        if g_probe.requires_grad:
            dg = torch.autograd.grad(g_probe, (t_probe, *y_probe), allow_unused=True)
        with torch.no_grad():
            f = func(t_star, state)
        f_parts = f if isinstance(f, tuple) else (f,)
        # (for complex y, PyTorch's gradient is ∂g/∂Re y + i ∂g/∂Im y: the rate is Re(conj(d) f))
        slope = sum(
            (
                torch.view_as_real(d * fp.conj()).select(-1, 0).sum()
                if d.is_complex()
                else (d * fp).sum()
                for d, fp in zip(dg[1:], f_parts, strict=True)
                if d is not None
            ),
            start=torch.zeros((), dtype=t_star.dtype, device=t_star.device),
        )
        if dg[0] is not None:
            slope = slope + dg[0]
        slope = slope.detach()
        g = event_fn(t_star.detach(), state).reshape(())
        if float(slope) == 0.0:
            # g does not move along the solution there (it touches zero, or is 0 past a
            # horizon): no implicit gradient, as torchdiffeq's regularised division gives for
            # such event functions.
            event_t = t_star.detach() + 0.0 * (g - g.detach())
        else:
            event_t = t_star.detach() - (g - g.detach()) / slope
        shift = event_t - event_t.detach()  # 0, with the gradient of event_t
        moved = tuple(
            torch.cat([p[:-1], (y + fp.detach() * shift)[None]])
            for p, y, fp in zip(parts, y_star, f_parts, strict=True)
        )
    return event_t, moved if isinstance(solution, tuple) else moved[0]
