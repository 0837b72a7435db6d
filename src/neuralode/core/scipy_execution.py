"""``method="scipy_solver"``: the solve handed to ``scipy.integrate.solve_ivp``, as torchdiffeq's
``scipy_solver`` does it (options ``solver``, ``min_step``, ``max_step``; rtol and atol passed
on; the state flattened to float64 NumPy and back).

scipy is an optional dependency (``pip install scipy``, or the ``scipy`` extra): it is imported
here, when such a solve runs, never by ``import neuralode``.

No gradient flows through solve_ivp: the solution is a constant to autograd, as in torchdiffeq
(a warning says so when y0 or func's parameters require grad). ``odeint_adjoint`` differentiates
it: its backward solve is solved by scipy too (torchdiffeq's behaviour), or by the
``adjoint_method`` given.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from ..errors import ODEInputError, SolverError
from .config import Problem


def integrate_scipy(problem: Problem, y0: torch.Tensor) -> torch.Tensor:
    """States at ``problem.times`` from the flat ``y0``, shape (len(times), N), by solve_ivp;
    no autograd graph. NFE counts every call of func (Jacobian estimates included)."""
    try:
        from scipy.integrate import solve_ivp
    except ImportError:
        raise ODEInputError(
            "method='scipy_solver' needs scipy, which is not installed: pip install scipy (or "
            "pip install 'neuralode[scipy]')"
        ) from None
    options = problem.execution.scipy
    assert options is not None
    if torch.is_grad_enabled():
        _warn_if_differentiable(problem, y0)
    times = problem.times
    layout, field = problem.layout, problem.field
    y0 = y0.detach()
    problem.outcome.status = 0
    if len(times) == 1:
        return y0[None].clone()

    def rhs(t: float, y: Any) -> Any:
        row = torch.as_tensor(y, device=y0.device).to(y0.dtype).view(1, -1)
        with torch.no_grad():
            return field(float(t), row).detach().reshape(-1).double().cpu().numpy()

    tolerance = problem.tolerance
    bounds: dict[str, float] = {"max_step": options.max_step}
    if options.min_step is not None:
        bounds["min_step"] = options.min_step
    result = solve_ivp(
        rhs,
        t_span=(times[0], times[-1]),
        y0=y0.double().cpu().numpy(),
        method=options.solver,
        t_eval=times,
        rtol=_numpy(tolerance.rtol),
        atol=_numpy(tolerance.atol),
        **bounds,
    )
    states = torch.as_tensor(result.y.T, device=y0.device).to(y0.dtype)  # (reached, N)
    if not result.success or states.shape[0] < len(times):
        reached = float(result.t[-1]) if len(result.t) else times[0]
        error = SolverError(
            f"scipy's {options.solver} failed at t={reached:.6g} (solving to t={times[-1]:.6g}): "
            f"{result.message}",
            reached,
        )
        problem.outcome.status, problem.outcome.error = 1, error
        if problem.raise_on_failure:
            raise error
        missing = y0.new_full((len(times) - states.shape[0], layout.size), float("nan"))
        states = torch.cat([states, missing])
    problem.stats.n_accepted = 0  # (solve_ivp does not report its steps)
    problem.stats.n_jacobians = int(getattr(result, "njev", 0) or 0)
    return states


def _numpy(tolerance: torch.Tensor) -> Any:
    """A 0-d tolerance as a float, per-component ones as a float64 array."""
    if tolerance.dim() == 0:
        return float(tolerance)
    return tolerance.detach().double().cpu().numpy()


def _warn_if_differentiable(problem: Problem, y0: torch.Tensor) -> None:
    func = problem.field.func
    params = func.parameters() if isinstance(func, torch.nn.Module) else ()
    if not (y0.requires_grad or any(p.requires_grad for p in params)):
        return
    message = (
        "neuralode: method='scipy_solver' solves with scipy.integrate.solve_ivp, which autograd "
        "cannot see: the solution carries no gradient (as in torchdiffeq). Use odeint_adjoint "
        "(gradient='adjoint') to differentiate it, or a torch method"
    )
    warnings.warn(message, RuntimeWarning, stacklevel=8)
