"""Branch-free adaptive steps on rows: the loop behind per-sample steps and the compiled path.

The state is a (R, N) block of rows. Every row has its own time, step size, accept/reject and
stop: R = 1 is the usual shared-step solve of the whole (flattened) state, R = B gives each
sample of a batch its own steps (torchode's idea). One iteration of the loop is a pure function
of tensors (:meth:`RowLoop.body`): stages, error norm per row, I/PI control, dense output at every
output time the step passed, and masked updates, with no Python branch on a tensor's value. So
the same body runs

* eagerly, one Python iteration per step (autograd records it: backpropagation works), or
* inside ``torch.compile`` as one ``while_loop``: the whole solve is a single compiled call with
  fused arithmetic and no host synchronisation per step.

Time is kept in float64 tensors whatever the state's dtype, so steps land where the float64
clock of :class:`~neuralode.integrate.StepLoop` puts them. Step-size control runs under no_grad.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch.utils.checkpoint import checkpoint

from .errors import MaxStepsExceededError, NonFiniteStateError, StepSizeUnderflowError
from .solvers.tableau import Tableau

RowField = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""field(t, y): t of shape (R,) (float64), y of shape (R, N) → dy/dt of shape (R, N)."""
RowNorm = Callable[[torch.Tensor], torch.Tensor]
"""norm(x): (R, N) scaled errors → (R,) norms."""


def rms_rows(x: torch.Tensor) -> torch.Tensor:
    """Root mean square of each row: (R, N) → (R,)."""
    return x.square().mean(dim=1).sqrt()


class Carry(NamedTuple):
    """Everything the loop carries from one iteration to the next, packed into few tensors
    (each carried tensor costs a compiled loop time per iteration).

    clock: (4, R) float64 rows t, dt (next step magnitude), the PI controller's last accepted
    error ratio and the last error ratio; state: (2, R, N) rows y and dy/dt; outputs:
    (len(times), R, N); counts: (3, R) int64 accepted and rejected steps and 1 where the step
    fell below the resolution of t; iterations: 0-d int64.
    """

    clock: torch.Tensor
    state: torch.Tensor
    outputs: torch.Tensor
    counts: torch.Tensor
    iterations: torch.Tensor

    @property
    def t(self) -> torch.Tensor:
        return self.clock[0]

    @property
    def dt(self) -> torch.Tensor:
        return self.clock[1]

    @property
    def ratio(self) -> torch.Tensor:
        return self.clock[3]

    @property
    def accepted(self) -> torch.Tensor:
        return self.counts[0]

    @property
    def rejected(self) -> torch.Tensor:
        return self.counts[1]

    @property
    def underflow(self) -> torch.Tensor:
        return self.counts[2].bool()


@dataclass(frozen=True)
class Control:
    """Step-size control constants (I control, or PI when ``beta2`` > 0)."""

    order: int
    safety: float = 0.9
    ifactor: float = 10.0
    dfactor: float = 0.2
    beta1: float = 1.0
    beta2: float = 0.0


@dataclass
class RowLoop:
    """Solves rows from ``times[0]`` through ``times[-1]`` with an adaptive tableau.

    Args:
        field: the vector field on rows (see :data:`RowField`).
        tableau: an adaptive explicit Runge–Kutta method.
        times: (T,) float64 output times, strictly monotonic.
        bounds: the first and last output time as floats.
        rtol, atol: 0-d, or (R, N) tolerances.
        norm: the error norm of each row.
        control: step-size control constants.
        max_num_steps: bound on iterations (attempted steps of the slowest row).
    """

    field: RowField
    tableau: Tableau
    times: torch.Tensor
    bounds: tuple[float, float]
    rtol: torch.Tensor
    atol: torch.Tensor
    norm: RowNorm
    control: Control
    max_num_steps: int

    def __post_init__(self) -> None:
        # Built outside any compiled region: only the direction is a Python number, so one
        # compiled loop serves every interval and tolerance.
        first, last = self.bounds
        self.direction = 1.0 if last >= first else -1.0
        resolution = 10.0 * math.ulp(max(abs(first), abs(last), abs(last - first)))
        # Separate tensors: views of one would alias inside the compiled loop.
        self.t_end, self.resolution = (
            torch.tensor(x, dtype=torch.float64, device=self.times.device)
            for x in (last, resolution)
        )
        self.dense = _dense_weights(self.tableau, self.times.device)

    # -- the loop --------------------------------------------------------------------------

    def start(self, y0: torch.Tensor, f0: torch.Tensor, first_dt: torch.Tensor | None) -> Carry:
        """The carry before the first step: y0, f0 of shape (R, N); first_dt (R,) or None for
        Hairer's starting step (one more evaluation)."""
        rows = y0.shape[0]
        t = self.times[0].expand(rows)
        dt = self.initial_step(t, y0, f0) if first_dt is None else first_dt
        ones = torch.ones_like(t)
        outputs = torch.cat([y0[None], y0.new_zeros((self.times.shape[0] - 1, *y0.shape))])
        return Carry(
            torch.stack([t, dt, ones, ones]),
            torch.stack([y0, f0]),
            outputs,
            torch.zeros((3, rows), dtype=torch.long, device=y0.device),
            torch.zeros((), dtype=torch.long, device=y0.device),
        )

    def running(self, carry: Carry) -> torch.Tensor:
        """0-d bool: some row is short of the end, below the step bound, and none underflowed."""
        active = self.direction * (self.t_end - carry.t) > 0
        underflow = carry.counts[2].any()
        return active.any() & (carry.iterations < self.max_num_steps) & ~underflow

    def body(self, carry: Carry) -> Carry:
        """One attempted step of every row that is not done (rows that are done step by 0)."""
        tableau, direction = self.tableau, self.direction
        t, dt = carry.t, carry.dt
        y, f = carry.state
        remaining = direction * (self.t_end - t)
        active = remaining > 0
        last = active & (dt >= remaining)
        step = direction * torch.where(active, torch.minimum(dt, remaining), 0.0)
        h = step.to(y.dtype)[:, None]
        ks = [f]
        y1 = y
        for i in range(1, tableau.stages):
            y1 = y + h * _combine(tableau.a[i], ks)
            ks.append(self.field(t + tableau.c[i] * step, y1))
        t1 = torch.where(last, self.t_end, t + step)
        if tableau.fsal:
            f1 = ks[-1]
        else:
            y1 = y + h * _combine(tableau.b, ks)
            f1 = self.field(t1, y1)
        with torch.no_grad():
            accept, dt, previous, ratio, underflow = self._control(carry, y, y1, h, step, ks)
        outputs = self._dense_outputs(carry, t1, step, h, [*ks, f1], accept)
        rejected = active & ~accept
        return Carry(
            torch.stack([torch.where(accept, t1, t), dt, previous, ratio]),
            torch.where(accept[:, None], torch.stack([y1, f1]), carry.state),
            outputs,
            carry.counts + torch.stack([accept, rejected, underflow]).long(),
            carry.iterations + 1,
        )

    def _control(
        self,
        carry: Carry,
        y: torch.Tensor,
        y1: torch.Tensor,
        h: torch.Tensor,
        step: torch.Tensor,
        ks: list[torch.Tensor],
    ) -> tuple[torch.Tensor, ...]:
        """Accept or reject each row's step and size its next one (I or PI control)."""
        c = self.control
        error = h * _combine(self.tableau.b_err, ks)
        scale = self.atol + self.rtol * torch.maximum(y.abs(), y1.abs())
        ratio = self.norm(error / scale).to(torch.float64)
        active = step != 0
        accept = active & (ratio <= 1.0)
        safe = ratio.clamp(min=1e-30)
        k = c.order + 1
        pi = safe ** (-c.beta1 / k) * carry.clock[2] ** (c.beta2 / k)
        factor = c.safety * torch.where(accept, pi, safe ** (-1.0 / k))
        factor = torch.where(ratio == 0, c.ifactor, factor).nan_to_num(c.dfactor)
        low = torch.where(accept, 1.0, c.dfactor)
        high = torch.where(accept, c.ifactor, 1.0)
        dt = torch.where(active, step.abs() * factor.clamp(low, high), carry.dt)
        previous = torch.where(accept & (ratio > 0), ratio.clamp(min=1e-4), carry.clock[2])
        underflow = active & ~accept & (dt < self.resolution)
        return accept, dt, previous, ratio, underflow

    def _dense_outputs(
        self,
        carry: Carry,
        t1: torch.Tensor,
        step: torch.Tensor,
        h: torch.Tensor,
        basis: list[torch.Tensor],
        accept: torch.Tensor,
    ) -> torch.Tensor:
        """Outputs with every output time in (t, t1] of an accepted step filled in from the
        step's dense output (eagerly: only when some step passed one)."""
        direction, times, t = self.direction, self.times[:, None], carry.t[None]
        passed = accept & (direction * (times - t) > 0) & (direction * (t1 - times) >= 0)

        def fill(outputs: torch.Tensor) -> torch.Tensor:
            theta = (times - t) / torch.where(step != 0, step, 1.0)  # (T, R)
            n_powers, n_basis = self.dense.shape
            powers = torch.stack([theta ** (p + 1) for p in range(n_powers)], dim=-1)
            weights = (powers @ self.dense).to(h.dtype)  # (T, R, basis)
            stacked = torch.stack(basis[:n_basis])  # (basis, R, N)
            values = carry.state[0] + h * torch.einsum("trs,srn->trn", weights, stacked)
            return torch.where(passed[..., None], values, outputs)

        if torch.compiler.is_compiling():  # (torch.cond here fails inductor's alias check)
            return fill(carry.outputs)
        return fill(carry.outputs) if bool(passed.any()) else carry.outputs

    # -- before and after ------------------------------------------------------------------

    def initial_step(self, t: torch.Tensor, y: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        """Hairer, Nørsett & Wanner's starting step of each row (Solving ODEs I, II.4), (R,)."""
        with torch.no_grad():
            scale = self.atol + self.rtol * y.abs()
            d0, d1 = (self.norm(x / scale).to(torch.float64) for x in (y, f))
            small = (d0 < 1e-5) | (d1 < 1e-5)
            h0 = torch.where(small, 1e-6, 0.01 * d0 / torch.where(small, 1.0, d1))
            f1 = self.field(
                t + self.direction * h0, y + (self.direction * h0).to(y.dtype)[:, None] * f
            )
            d2 = self.norm((f1 - f) / scale).to(torch.float64) / h0
            largest = torch.maximum(d1, d2)
            h1 = torch.where(
                largest <= 1e-15,
                (h0 * 1e-3).clamp(min=1e-6),
                (0.01 / largest.clamp(min=1e-300)) ** (1.0 / (self.control.order + 1)),
            )
            return torch.minimum(100 * h0, h1)

    def summary(self, carry: Carry) -> tuple[bool, int, int, int]:
        """(every row reached the end, iterations, most accepted and most rejected steps of a
        row), in one host synchronisation."""
        behind = (self.direction * (self.t_end - carry.t) > 0).any()
        counts = torch.cat([behind[None], carry.iterations[None], carry.counts[:2].amax(dim=1)])
        behind, iterations, accepted, rejected = counts.tolist()
        return not behind, iterations, accepted, rejected

    def raise_stop(self, carry: Carry) -> None:
        """Raise the error that stopped the loop short of the end."""
        behind = self.direction * (self.t_end - carry.t) > 0
        if bool(carry.underflow.any()):
            row = int(carry.underflow.nonzero()[0])
            at = float(carry.t[row])
            where = f" in sample {row}" if carry.t.shape[0] > 1 else ""
            if not math.isfinite(float(carry.ratio[row])):
                raise NonFiniteStateError(
                    f"the state became NaN or Inf at t={at:.6g}{where}: every step from there "
                    "produced non-finite values",
                    at,
                )
            raise StepSizeUnderflowError(
                f"step size underflow at t={at:.6g}{where}: dt={float(carry.dt[row]):.3g} is "
                "below the resolution of t; the problem may be stiff or the vector field "
                "singular or discontinuous there",
                at,
            )
        late = carry.t[behind]
        at = float(late.min() if self.direction > 0 else late.max())
        raise MaxStepsExceededError(
            f"max_num_steps={self.max_num_steps} exceeded at t={at:.6g} (integrating from "
            f"t={self.bounds[0]:.6g} to t={self.bounds[1]:.6g}); raise "
            "options={'max_num_steps': ...}, loosen rtol/atol, or use method='rosenbrock23' if "
            "the problem is stiff",
            at,
        )

    def solve(
        self,
        y0: torch.Tensor,
        f0: torch.Tensor,
        first_dt: torch.Tensor | None,
        segments: Segments | None = None,
    ) -> Carry:
        """Run the loop eagerly, one Python iteration per step; the final carry. With
        ``segments``, autograd keeps only each segment's first carry and reruns the segment
        in the backward pass (gradient checkpointing)."""
        carry = self.start(y0, f0, first_dt)
        if segments is None:
            return self._iterate(carry, None)
        while bool(self.running(carry)):
            tensors = checkpoint(self._segment, segments, *carry, use_reentrant=False)
            carry = Carry(*tensors)
        segments.forward_done = True
        return carry

    def _iterate(
        self, carry: Carry, most: int | None, started: Callable[[], None] | None = None
    ) -> Carry:
        """Up to ``most`` iterations (all, for None) while the loop runs; ``started`` is called
        as each begins."""
        done = 0
        while (most is None or done < most) and bool(self.running(carry)):
            if started is not None:
                started()
            carry = self.body(carry)
            done += 1
        return carry

    def _segment(self, segments: Segments, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # A rerun in the backward pass counts its iterations as they start: autograd stops it
        # as soon as it has recomputed what the gradient needs, inside the last iteration.
        started = segments.recomputed if segments.forward_done else None
        return tuple(self._iterate(Carry(*tensors), segments.every, started))


@dataclass
class Segments:
    """Checkpointed segments of ``every`` iterations; ``recomputed()`` is called for each
    iteration rerun in the backward pass."""

    every: int
    recomputed: Callable[[], None]
    forward_done: bool = False


@functools.cache
def _dense_weights(tableau: Tableau, device: torch.device) -> torch.Tensor:
    """The dense-output polynomials' coefficients, (powers, basis), float64 on ``device``."""
    return torch.as_tensor(tableau.dense.T, device=device)


def _combine(weights: tuple[float, ...], ks: list[torch.Tensor]) -> torch.Tensor:
    """Σ_s weights[s] ks[s] over the stages given, (R, N). Compiled: an unrolled sum that
    inductor fuses into one kernel; eager: one matrix product of the stacked stages."""
    if torch.compiler.is_compiling():
        terms = [w * k for w, k in zip(weights, ks, strict=False) if w != 0.0]
        return sum(terms[1:], terms[0]) if terms else torch.zeros_like(ks[0])
    row = torch.tensor(weights[: len(ks)], dtype=ks[0].dtype, device=ks[0].device)
    stacked = torch.stack(ks)
    return (row @ stacked.reshape(len(ks), -1)).view(stacked.shape[1:])
