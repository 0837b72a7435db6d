"""Adaptive Runge–Kutta steps per batch sample (``options={"per_sample": True}``).

Each row b of a (B, n) state has its own time t_b, step dt_b, accept/reject and stop, so one
stiff sample no longer shrinks the steps of the others (torchode's idea). The field is evaluated
on the whole batch each iteration, rows that are done riding along with a zero step, and gets t
as a (B, 1, ..., 1) tensor that broadcasts against the state. Stages, error estimates, norms and
I control are tensor operations; the host synchronises once per iteration ("are all rows
done?") and once per output time an accepted step passes. Step-size control is not
differentiated, as in :class:`~neuralode.integrate.StepLoop`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from .errors import MaxStepsExceededError, ODEInputError, StepSizeUnderflowError
from .stats import PerSampleStats

if TYPE_CHECKING:
    from .problem import Problem


def solve_per_sample(problem: Problem, y0: torch.Tensor) -> torch.Tensor:
    """``problem`` solved from the flat ``y0`` with one step size per sample (the state's first
    dimension): flat states (len(times), N). Per-sample counters go to
    ``problem.stats.per_sample``; ``nfe`` counts batch evaluations of the field."""
    _check_supported(problem)
    shape = problem.layout.shapes[0]
    batch = shape[0]
    tableau = problem.tableau
    dtype, device = y0.dtype, y0.device
    coefficients = tableau.tensors(dtype, device)
    a = [row.reshape(-1) for row in coefficients.a]
    b, b_err = coefficients.b.reshape(-1), coefficients.b_err.reshape(-1)
    dense = torch.as_tensor(tableau.dense, dtype=dtype, device=device)  # (stages[+1], powers)
    order = tableau.error_order + 1
    control = problem.adaptive_controller()  # its safety and bounds, applied per sample
    rtol, atol = (_per_row(x / problem.tolerance.root, batch) for x in
                  (problem.tolerance.rtol, problem.tolerance.atol))  # fmt: skip
    max_steps = problem.max_num_steps
    times = torch.tensor(problem.times, dtype=dtype, device=device)
    direction = 1.0 if problem.times[-1] >= problem.times[0] else -1.0
    t_shape = (batch,) + (1,) * (len(shape) - 1)
    stats = PerSampleStats.zeros(batch, device)
    problem.stats.per_sample = stats

    def field(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        problem.stats.nfe += 1
        return problem.field.func(t.reshape(t_shape), y.reshape(shape)).reshape(batch, -1)

    t = times[0].expand(batch).clone()
    y = y0.reshape(batch, -1)
    f = field(t, y)
    stats.nfe += 1
    dt = _initial_step(field, t, y, f, rtol, atol, order, direction, stats)
    outputs = [y] + [torch.zeros_like(y) for _ in range(len(times) - 1)]
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    while not bool(done.all()):
        active = ~done
        if int(stats.n_accepted.max() + stats.n_rejected.max()) >= max_steps:
            at = _slowest(t, done, direction)
            raise MaxStepsExceededError(
                f"max_num_steps={max_steps} exceeded by a sample at t={at:.6g}; raise "
                "options={'max_num_steps': ...} or loosen rtol/atol",
                at,
            )
        remaining = direction * (times[-1] - t)
        step = direction * torch.where(active, torch.minimum(dt, remaining), torch.zeros_like(dt))
        ks = [f]
        for i in range(1, tableau.stages):
            y_stage = torch.addcmul(y, step[:, None], _combine(a[i], torch.stack(ks)))
            ks.append(field(t + coefficients.c[i] * step, y_stage))
        k = torch.stack(ks)  # (stages, B, n)
        stats.nfe += active.long() * (tableau.stages - 1)
        y1 = y_stage if tableau.fsal else torch.addcmul(y, step[:, None], _combine(b, k))
        with torch.no_grad():
            error = step[:, None] * _combine(b_err, k)
            scale = atol + rtol * torch.maximum(y.abs(), y1.abs())
            ratio = (error / scale).square().mean(dim=1).sqrt()
            accept = active & (ratio <= 1.0)
            factor = control.safety * ratio.clamp(min=1e-30) ** (-1.0 / order)
            low = torch.where(accept, 1.0, control.dfactor)
            high = torch.where(accept, control.ifactor, 1.0)
            factor = torch.minimum(torch.maximum(factor.nan_to_num(0.0), low), high)
            stats.n_accepted += accept.long()
            stats.n_rejected += (active & ~accept).long()
            dt = torch.where(active, step.abs() * factor, dt)
            _check_underflow(dt, t, active & ~accept, problem.times)
        t1 = t + step
        f1 = k[-1] if tableau.fsal else None
        for j in _output_candidates(times, t, t1, accept, direction):
            passed = accept & (direction * (times[j] - t) > 0) & (direction * (t1 - times[j]) >= 0)
            if bool(passed.any()):
                if f1 is None:
                    f1 = field(t1, y1)
                    stats.nfe += active.long()
                value = _interpolate(y, k, f1, step, (times[j] - t), dense, tableau.fsal)
                outputs[j] = torch.where(passed[:, None], value, outputs[j])
        if f1 is None:
            f1 = field(t1, y1)
            stats.nfe += active.long()
        t = torch.where(accept, t1, t)
        y = torch.where(accept[:, None], y1, y)
        f = torch.where(accept[:, None], f1, f)
        done = done | (accept & (direction * (times[-1] - t) <= 0))
    return torch.stack(outputs).reshape(len(times), -1)


def _combine(weights: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Σ_s weights[s] k[s]: (S,) weights of (S, B, n) stages → (B, n), as one matrix product."""
    return (weights @ k.reshape(k.shape[0], -1)).view(k.shape[1:])


def _output_candidates(
    times: torch.Tensor, t: torch.Tensor, t1: torch.Tensor, accept: torch.Tensor, direction: float
) -> range:
    """Indices of the output times that some accepted step of this iteration may have passed:
    those in (earliest start, latest end] (one host synchronisation)."""
    key = direction * times
    start = torch.where(accept, direction * t, torch.inf).min()
    end = torch.where(accept, direction * t1, -torch.inf).max()
    first, last = torch.searchsorted(key, torch.stack([start, end]), right=True).tolist()
    return range(max(first, 1), last)


def _check_supported(problem: Problem) -> None:
    if problem.layout.is_tuple or len(problem.layout.shapes[0]) < 1:
        raise ODEInputError(
            "options['per_sample'] needs y0 to be one tensor whose first dimension is the batch"
        )
    unsupported = sorted({"norm", "controller", "grid", "step_size"} & set(problem.options))
    if unsupported:
        raise ODEInputError(
            f"options['per_sample'] uses the RMS norm and I control of each sample: it cannot "
            f"be combined with option(s) {unsupported}"
        )


def _per_row(tolerance: torch.Tensor, batch: int) -> torch.Tensor:
    """A 0-d tolerance as is; a flat (N,) one as (B, N / B) rows."""
    return tolerance if tolerance.dim() == 0 else tolerance.reshape(batch, -1)


def _initial_step(
    field: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    t: torch.Tensor,
    y: torch.Tensor,
    f: torch.Tensor,
    rtol: torch.Tensor,
    atol: torch.Tensor,
    order: int,
    direction: float,
    stats: PerSampleStats,
) -> torch.Tensor:
    """Hairer, Nørsett & Wanner's starting step per row (one batch evaluation)."""
    with torch.no_grad():
        scale = atol + rtol * y.abs()

        def rms(x: torch.Tensor) -> torch.Tensor:
            return (x / scale).square().mean(dim=1).sqrt()

        d0, d1 = rms(y), rms(f)
        h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1)
        f1 = field(t + direction * h0, y + direction * h0[:, None] * f)
        stats.nfe += 1
        d2 = rms(f1 - f) / h0
        largest = torch.maximum(d1, d2)
        h1 = torch.where(
            largest <= 1e-15,
            torch.clamp(h0 * 1e-3, min=1e-6),
            (0.01 / largest.clamp(min=1e-300)) ** (1.0 / order),
        )
        return torch.minimum(100 * h0, h1)


def _interpolate(
    y: torch.Tensor,
    k: torch.Tensor,
    f1: torch.Tensor,
    step: torch.Tensor,
    offset: torch.Tensor,
    dense: torch.Tensor,
    fsal: bool,
) -> torch.Tensor:
    """Dense output of each row's step at t + offset (rows whose step is 0 get y)."""
    basis = k if fsal else torch.cat([k, f1[None]])
    safe_step = torch.where(step != 0, step, torch.ones_like(step))
    theta = torch.where(step != 0, offset / safe_step, torch.zeros_like(step))
    powers = theta[:, None] ** torch.arange(1, dense.shape[1] + 1, device=y.device)
    weights = powers @ dense.T  # (B, basis)
    return y + step[:, None] * torch.einsum("bs,sbn->bn", weights, basis[: weights.shape[1]])


def _check_underflow(
    dt: torch.Tensor, t: torch.Tensor, rejected: torch.Tensor, times: list[float]
) -> None:
    span = abs(times[-1] - times[0])
    tiny = rejected & (dt < 10.0 * math.ulp(max(abs(times[-1]), abs(times[0]), span)))
    if bool(tiny.any()):
        at = float(t[tiny][0])
        raise StepSizeUnderflowError(
            f"step size underflow at t={at:.6g} in sample {int(tiny.nonzero()[0])}: the problem "
            "may be stiff or the vector field singular or discontinuous there",
            at,
        )


def _slowest(t: torch.Tensor, done: torch.Tensor, direction: float) -> float:
    """The time of the sample furthest behind."""
    behind = t[~done] if bool((~done).any()) else t
    return float(behind.min() if direction > 0 else behind.max())
