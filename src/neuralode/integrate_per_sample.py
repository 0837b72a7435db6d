"""PROTOTYPE (issue 10): adaptive Runge–Kutta steps per batch sample, ``options={"per_sample":
True}`` in odeint (single-tensor states; the field gets t as a (B, 1, ..., 1) tensor).

Each row b of a (B, n) state has its own time t_b, step dt_b, accept/reject and stop; the field
is evaluated on the whole batch each iteration (finished rows ride along with dt = 0), so one
stiff sample no longer shrinks the steps of the others. Stages, error estimate, norm and I
control are tensor operations; the only host synchronisation per iteration is "are all rows
done". Dense output fills the shared output times per row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .solvers.methods import METHODS


@dataclass
class PerSampleStats:
    """Per-row counters, each a (B,) int64 tensor: field evaluations the row needed (while it
    was not done), accepted and rejected steps."""

    nfe: torch.Tensor
    n_accepted: torch.Tensor
    n_rejected: torch.Tensor


def solve_per_sample(
    func,  # noqa: ANN001  (prototype)
    y0: torch.Tensor,
    times: torch.Tensor,
    method: str = "dopri5",
    rtol: float = 1e-6,
    atol: float = 1e-6,
    safety: float = 0.9,
    ifactor: float = 10.0,
    dfactor: float = 0.2,
    max_iterations: int = 100_000,
) -> tuple[torch.Tensor, PerSampleStats]:
    """Solve dy/dt = func(t, y) for y0 (B, n) with a step size per row; states at ``times``
    (increasing), shape (len(times), B, n)."""
    tableau = METHODS[method]
    dtype, device = y0.dtype, y0.device
    batch = y0.shape[0]
    a = [torch.as_tensor(np.asarray(row, dtype=np.float64), dtype=dtype, device=device)
         for row in tableau.a]  # fmt: skip
    b = torch.as_tensor(np.asarray(tableau.b, dtype=np.float64), dtype=dtype, device=device)
    b_err = torch.as_tensor(np.asarray(tableau.b_err, dtype=np.float64), dtype=dtype, device=device)
    c = torch.as_tensor(np.asarray(tableau.c, dtype=np.float64), dtype=dtype, device=device)
    dense = torch.as_tensor(tableau.dense, dtype=dtype, device=device)  # (S[+1], P)
    order = tableau.error_order + 1
    t_end = times[-1].to(dtype)
    times = times.to(dtype=dtype, device=device)

    t = torch.full((batch,), float(times[0]), dtype=dtype, device=device)
    y = y0
    f = func(t, y)
    stats = PerSampleStats(*(torch.zeros(batch, dtype=torch.long, device=device) for _ in range(3)))
    stats.nfe += 1
    # Hairer's initial step, per row (two evaluations).
    scale = atol + rtol * y.abs()
    scale = scale.detach()
    d0 = _rms(y / scale)
    d1 = _rms(f / scale)
    h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1)
    f1 = func(t + h0, y + h0[:, None] * f)
    stats.nfe += 1
    d2 = _rms((f1 - f) / scale) / h0
    dmax = torch.maximum(d1, d2)
    h1 = torch.where(dmax <= 1e-15, torch.clamp(h0 * 1e-3, min=1e-6), (0.01 / dmax) ** (1 / order))
    dt = torch.minimum(100 * h0, h1).detach()

    outputs = [y0]
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    filled = torch.zeros(batch, dtype=torch.long, device=device)  # outputs written per row
    pending = [torch.zeros_like(y0) for _ in range(len(times) - 1)]
    filled += 1
    iterations = 0
    while not bool(done.all()):
        iterations += 1
        if iterations > max_iterations:
            raise RuntimeError(f"max_iterations={max_iterations} exceeded")
        step = torch.where(done, torch.zeros_like(dt), torch.minimum(dt, t_end - t))
        ks = [f]
        for i in range(1, tableau.stages):
            y_stage = y + step[:, None] * torch.einsum("s,sbn->bn", a[i], torch.stack(ks))
            ks.append(func(t + c[i] * step, y_stage))
        k = torch.stack(ks)  # (S, B, n)
        active = ~done
        stats.nfe += active.long() * (tableau.stages - 1)
        y1 = y_stage if tableau.fsal else y + step[:, None] * torch.einsum("s,sbn->bn", b, k)
        with torch.no_grad():  # step-size control is not differentiated (as in StepLoop)
            error = step[:, None] * torch.einsum("s,sbn->bn", b_err, k)
            ratio = _rms(error / (atol + rtol * torch.maximum(y.abs(), y1.abs())))
            accept = active & (ratio <= 1.0)
            factor = torch.where(
                ratio == 0, torch.full_like(ratio, ifactor), safety * ratio ** (-1.0 / order)
            )
            factor = torch.where(
                accept, factor.clamp(1.0, ifactor), factor.clamp(dfactor, 1.0)
            ).nan_to_num(dfactor)
        stats.n_accepted += accept.long()
        stats.n_rejected += (active & ~accept).long()
        t1 = t + step
        # Dense output for every output time that an accepted step passed.
        f_end = k[-1] if tableau.fsal else None
        for j in range(1, len(times)):
            covered = accept & (times[j] > t) & (times[j] <= t1)
            if not bool(covered.any()):
                continue
            theta = (times[j] - t) / torch.where(step > 0, step, torch.ones_like(step))
            powers = theta[:, None] ** torch.arange(1, dense.shape[1] + 1, device=device)
            basis = k if tableau.fsal else torch.cat([k, func(t1, y1)[None]])
            weights = powers @ dense.T  # (B, S')
            value = y + step[:, None] * torch.einsum(
                "bs,sbn->bn", weights, basis[: weights.shape[1]]
            )
            pending[j - 1] = torch.where(covered[:, None], value, pending[j - 1])
            filled += covered.long()
        t = torch.where(accept, t1, t)
        y = torch.where(accept[:, None], y1, y)
        if tableau.fsal:
            f = torch.where(accept[:, None], f_end, f)
        else:
            f = torch.where(accept[:, None], func(t, y), f)
            stats.nfe += accept.long()
        dt = torch.where(active, step.abs() * factor, dt)
        done = done | (accept & (t >= t_end))
    del filled
    return torch.stack(outputs + pending), stats


def _rms(x: torch.Tensor) -> torch.Tensor:
    """Root mean square over the last dimension: (B, n) → (B,)."""
    return x.square().mean(dim=-1).sqrt()


def solve_problem_per_sample(problem, y0: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
    """``problem`` (a single-tensor state (B, ...)) solved with a step size per row: flat
    states (len(times), N), as ``Problem.solve`` returns them."""
    if problem.layout.is_tuple or len(problem.layout.shapes[0]) < 1:
        raise ValueError("per_sample steps need one state tensor with a batch dimension first")
    shape = problem.layout.shapes[0]
    batch = shape[0]
    t_shape = (batch,) + (1,) * (len(shape) - 1)

    def rows(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return problem.field.func(t.reshape(t_shape), y.reshape(shape)).reshape(batch, -1)

    rtol, atol = problem.tolerance.as_given()
    options = problem.options
    controls = {k: options[k] for k in ("safety", "ifactor", "dfactor") if k in options}
    times = torch.tensor(problem.times, dtype=y0.dtype, device=y0.device)
    states, stats = solve_per_sample(
        rows, y0.reshape(batch, -1), times, problem.tableau.name, rtol, atol, **controls
    )
    problem.stats.nfe += int(stats.nfe.max())
    problem.stats.n_accepted += int(stats.n_accepted.max())
    problem.stats.n_rejected += int(stats.n_rejected.max())
    problem.stats.per_sample = stats
    return states.reshape(len(problem.times), -1)
