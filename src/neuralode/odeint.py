"""The torchdiffeq-shaped faces over :func:`~neuralode.solution.solve`: ``odeint`` and
``odeint_adjoint`` with torchdiffeq's arguments and meaning."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from .core.state import State, VectorFieldFn
from .core.tableau import Tableau
from .gradients import Adjoint, GradientMode
from .solution import DEFAULT_ATOL, DEFAULT_RTOL, solve


def odeint(
    func: VectorFieldFn,
    y0: State,
    t: torch.Tensor,
    rtol: float | torch.Tensor = DEFAULT_RTOL,
    atol: float | torch.Tensor = DEFAULT_ATOL,
    method: str | Tableau | None = None,
    options: Mapping[str, Any] | None = None,
    *,
    event_fn: Callable[[torch.Tensor, State], torch.Tensor] | None = None,
    gradient: str | GradientMode = "backprop",
    return_stats: bool = False,
) -> Any:
    """Solve dy/dt = func(t, y), y(t[0]) = y0, and return y at every time in ``t``.

    Drop-in for ``torchdiffeq.odeint``; gradients flow to y0, to func's parameters, and to
    ``t``, by backpropagation through the solver unless ``gradient`` says otherwise.

    Args:
        func: the vector field, ``func(t, y) -> dy/dt``; t is a 0-d tensor of y0's dtype, y and
            dy/dt have y0's structure (a tensor or a tuple of tensors).
        y0: initial state, a tensor of any shape (0-d and batch dimensions included) or a tuple
            of tensors sharing dtype and device; float64, float32, or float16/bfloat16 (solved
            in float32, tolerances raised to the dtype's resolution with a one-time warning), or
            complex64/complex128 (solved in the real view; func gets and returns complex
            tensors and a real t; scale and norm take each entry's modulus, as torchdiffeq).
        t: 1-D tensor of strictly increasing or strictly decreasing output times.
        rtol: relative tolerance, a float or a tensor broadcastable to the state.
        atol: absolute tolerance, a float or a tensor broadcastable to the state.
        method: one of ``neuralode.METHODS`` (default ``"dopri5"``; the fixed-grid Adams and
            implicit Runge–Kutta methods included), a :class:`~neuralode.Tableau` (an explicit
            Runge–Kutta method of your own), or ``"scipy_solver"``
            (``scipy.integrate.solve_ivp``, with options ``solver``, ``min_step``,
            ``max_step``; needs scipy; no gradient through it, as torchdiffeq, but
            ``odeint_adjoint`` differentiates it).
        options: solver options. Any method: ``step_size`` (fixed steps of this size) or ``grid``
            (fixed steps on these times) or ``grid_constructor`` (torchdiffeq's), and
            torchdiffeq's ``dtype`` (a floating torch.dtype for time and step sizes; accepted,
            but time is always float64 here). Fixed grids: ``interp`` (``"linear"``, the
            default for fixed-step methods, or ``"cubic"``) and ``perturb`` (f evaluated just
            inside each step). Adaptive steps: ``step_t`` and ``jump_t`` (times steps land
            on; f may jump at the latter). torchdiffeq option names that do not apply to the
            method are ignored with a warning, as torchdiffeq ignores them. Adaptive
            methods also: ``first_step``, ``safety`` (0.9, in (0, 1]), ``ifactor`` (10,
            largest growth), ``dfactor`` (0.2, largest shrink), ``min_step`` / ``max_step``
            (bounds on the step's magnitude),
            ``max_num_steps`` (100000), ``norm`` (callable on the scaled error shaped like y0, a
            tuple for tuple states; default RMS, the largest RMS of the parts for tuples),
            ``controller`` (``"I"``, ``"PI"`` or ``"PID"``), ``per_sample`` (True: every sample
            of a (B, ...) state takes its own steps, and func gets t as a (B, 1, ..., 1)
            tensor), ``compile`` (True: the whole adaptive solve as one ``torch.compile``'d
            call; see :mod:`neuralode.core.compiled`). ``rosenbrock23`` instead of the last two:
            ``jacobian`` (``"full"`` or ``"per_sample"``: B independent systems) and
            ``jacobian_every`` (1). ``explicit_adams`` / ``implicit_adams`` (``fixed_adams``),
            torchdiffeq's Adams methods on the grid, besides it: ``max_order`` (12: the
            history holds at most max_order − 1 past derivatives; below 4 every step is rk4)
            and ``max_iters`` (4: the corrector's functional iterations, tested against rtol
            and atol). The fixed-grid implicit methods (``implicit_euler``,
            ``implicit_midpoint``, ``trapezoid``, ``radauIIA3``, ``gl4``, ``radauIIA5``,
            ``gl6``, ``sdirk2``, ``trbdf2``): ``step_size`` or ``grid``, ``max_iters`` (100,
            Newton iterations per step; :class:`~neuralode.errors.ConvergenceError` when they
            do not converge), ``jacobian`` and ``jacobian_every``.
        event_fn: torchdiffeq's event handling: ``event_fn(t, y)`` → a tensor; the solve runs
            from t[0] (towards t[1]; the other times are ignored) until it crosses zero (any
            entry, for several), and ``(event_t, solution)`` is returned, the solution being
            the states at t[0] and event_t. As in torchdiffeq, event_t carries no gradient here
            (:func:`~neuralode.odeint_event` gives it the implicit-function one).
        gradient: how to differentiate the solve: ``"backprop"`` (default), ``"adjoint"``,
            ``"checkpoint"``, or a configured :class:`~neuralode.gradients.Backprop`,
            :class:`~neuralode.gradients.Adjoint` or :class:`~neuralode.gradients.Checkpointed`.
        return_stats: also return the :class:`SolverStats` of this solve (its backward fields
            fill in when the gradient is computed).

    Returns:
        y at the times ``t``: shape ``(len(t), *y0.shape)`` (a tuple of such for tuple states);
        ``(event_t, y at [t[0], event_t])`` with ``event_fn``; and with ``return_stats``,
        ``(that, stats)`` (of the final solve).

    Raises:
        ODEInputError: bad arguments (shape, dtype, device, NaN/Inf, non-monotonic t, unknown
            method or option, negative tolerance, func returning a wrong shape or dtype).
        StepSizeUnderflowError, MaxStepsExceededError, NonFiniteStateError: the solve failed;
            the message says at which t.
    """
    if event_fn is not None:
        from .events import odeint_until_event  # (events.py builds on odeint)

        def until(times: torch.Tensor) -> Any:
            return odeint(func, y0, times, rtol, atol, method, options, gradient=gradient,
                          return_stats=return_stats)  # fmt: skip

        kwargs = {"rtol": rtol, "atol": atol, "method": method, "options": options}
        event_t, found = odeint_until_event(func, y0, t, event_fn, until, kwargs)
        return ((event_t, found[0]), found[1]) if return_stats else (event_t, found)
    solution = solve(
        func, y0, t, rtol=rtol, atol=atol, method=method, options=options, gradient=gradient
    )
    return (solution.ys, solution.stats) if return_stats else solution.ys


def odeint_adjoint(
    func: VectorFieldFn,
    y0: State,
    t: torch.Tensor,
    rtol: float | torch.Tensor = DEFAULT_RTOL,
    atol: float | torch.Tensor = DEFAULT_ATOL,
    method: str | None = None,
    options: Mapping[str, Any] | None = None,
    adjoint_rtol: float | None = None,
    adjoint_atol: float | None = None,
    adjoint_method: str | None = None,
    adjoint_options: Mapping[str, Any] | None = None,
    adjoint_params: Sequence[torch.Tensor] | None = None,
    *,
    event_fn: Callable[[torch.Tensor, State], torch.Tensor] | None = None,
    return_stats: bool = False,
) -> Any:
    """``odeint`` differentiated by the adjoint method: drop-in for
    ``torchdiffeq.odeint_adjoint``. Memory is O(1) in the number of steps.

    The adjoint_* arguments configure the backward solve and default to the forward ones;
    ``adjoint_options={"norm": "seminorm"}`` leaves the parameter-gradient channels out of its
    error control (fewer backward steps); a callable ``norm`` gets torchdiffeq's tuple
    ``(t, y, adj_y, *adj_params)`` (``(t, *y, *adj_y, *adj_params)`` for tuple states; ``t``, a
    channel this solve does not integrate, is a 0-d zero). The default is torchdiffeq's: the
    largest of the forward norm of y and adj_y and the RMS of each parameter's gradient.
    ``func`` must be an ``nn.Module`` unless ``adjoint_params`` lists the tensors it depends on.
    See :func:`odeint` for the rest.
    """
    mode = Adjoint(adjoint_rtol, adjoint_atol, adjoint_method, adjoint_options, adjoint_params)
    return odeint(func, y0, t, rtol, atol, method, options, event_fn=event_fn, gradient=mode,
                  return_stats=return_stats)  # fmt: skip


def odeint_dense(
    func: VectorFieldFn,
    y0: State,
    t0: torch.Tensor | float,
    t1: torch.Tensor | float,
    *,
    rtol: float | torch.Tensor = DEFAULT_RTOL,
    atol: float | torch.Tensor = DEFAULT_ATOL,
    method: str | Tableau | None = None,
    options: Mapping[str, Any] | None = None,
) -> Callable[[torch.Tensor], State]:
    """Solve from t0 to t1 and return the solution as a function of time: torchdiffeq's
    ``odeint_dense``, on the method's dense output of the accepted steps
    (``solve(..., dense=True)``).

    Unlike torchdiffeq's, any method (not only dopri5), tuple states and t1 < t0 are accepted,
    and the function takes a 0-d time (→ y0's shape, as torchdiffeq's) or a 1-D tensor of times
    in [t0, t1] (→ ``(len(t), *y0.shape)``); it is differentiable like the solve (backprop).
    """
    like = y0[0] if isinstance(y0, tuple) else y0
    dtype = like.dtype.to_real() if like.is_complex() else like.dtype
    if torch.is_tensor(t0):
        dtype = t0.dtype if t0.dtype.is_floating_point else dtype
    ends = [torch.as_tensor(end, dtype=dtype, device=like.device).reshape(()) for end in (t0, t1)]
    solution = solve(func, y0, torch.stack(ends), rtol=rtol, atol=atol, method=method,
                     options=options, dense=True)  # fmt: skip

    def dense_output_fn(t_eval: torch.Tensor) -> State:
        t_eval = torch.as_tensor(t_eval)
        ys = solution.evaluate(t_eval.reshape(-1))
        if t_eval.dim() > 0:
            return ys
        return tuple(y[0] for y in ys) if isinstance(ys, tuple) else ys[0]

    return dense_output_fn
