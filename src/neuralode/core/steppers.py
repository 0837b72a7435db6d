"""Steppers: what one step is.

A stepper takes the step from (t, y) with f = f(t, y) and returns its stages k and the solution
y1 at its end. Everything else about a step (its error estimate, its dense output, whether the
last stage is f(t1, y1)) comes from its :class:`~neuralode.core.tableau.Tableau`, so the loop
treats every stepper alike.

- :class:`ExplicitRK`: any explicit Runge–Kutta tableau, on a single row (shared steps, one
  matrix product per stage) or on rows (per-sample and compiled solves).
- :class:`Rosenbrock`: a linearly implicit Rosenbrock W-method (``rosenbrock23``), which
  factorises W = I − h d J once per step, on one row (shared steps) or on one row of the
  row loop (under torch.func.vmap, each instance its own steps and its own Jacobian reuse).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any

import torch

from .arith import Arith
from .rosenbrock_method import RosenbrockMethod
from .state import FlatField
from .tableau import Tableau
from .transforms import truth, under_transform

Field = Callable[[Any, torch.Tensor], torch.Tensor]
"""field(t, y): t a float (one row) or an (R,) float64 tensor, y (R, N) → dy/dt, (R, N)."""


class _GradOff:
    """no_grad for a block entered where autograd records (it restores recording on exit), with
    no state of its own: one instance serves every thread, and costs two calls, not torch.no_grad's
    construction, enter and exit (the loop enters it every step)."""

    def __enter__(self) -> None:
        torch.set_grad_enabled(False)

    def __exit__(self, *exc: object) -> None:
        torch.set_grad_enabled(True)


_GRAD_OFF, _NOTHING = _GradOff(), contextlib.nullcontext()


def untracked() -> contextlib.AbstractContextManager[Any]:
    """no_grad for the error estimate and the step-size control where autograd records, else
    nothing to enter (traced by torch.compile: torch.no_grad, the one that dynamo knows)."""
    if not torch.is_grad_enabled():
        return _NOTHING
    return torch.no_grad() if torch.compiler.is_compiling() else _GRAD_OFF


class Stepper:
    """What the loop asks of a stepper; the defaults are those of a stepper without memory
    across steps whose error estimate is its tableau's Σ b_err[s] k[s].

    Attributes:
        tableau: the method's structure: stages' nodes, error weights and order, FSAL, dense
            output.
        failure: why the last step could not be taken (one row), else None.
    """

    tableau: Tableau
    failure: str | None = None

    def step(
        self, field: Field, arith: Arith, t: Any, y: torch.Tensor, f: torch.Tensor, step: Any
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The stages (each (R, N)) of one step of size ``step`` from (t, y) with f = f(t, y),
        and the solution y1 at its end."""
        raise NotImplementedError

    def error(self, arith: Arith, ks: list[torch.Tensor]) -> torch.Tensor:
        """The error estimate per unit step of the step just taken, whose stages are ``ks``:
        Σ_s b_err[s] ks[s], (R, N)."""
        if arith.rows:
            return combine(self.tableau.b_err, ks)
        return torch.mm(self.tableau.tensors(ks[0].dtype, ks[0].device).b_err, torch.cat(ks))

    def accepted(self, accept: Any) -> None:
        """Called after each accepted step of one row (``accept`` True; an attempt not followed
        by this call was rejected), and on rows after every attempt with the (R,) mask of the
        rows that accepted it: a stepper with memory across steps (a Jacobian, a multistep
        history) moves it on."""

    def snapshot(self) -> Any:
        """The memory across steps (immutable; None if none), for :meth:`restore`."""
        return None

    def restore(self, snapshot: Any) -> None:
        """Back to the memory of a :meth:`snapshot` (a checkpointed segment's rerun starts from
        the memory its first run started from)."""


def combine(weights: tuple[float, ...], ks: list[torch.Tensor]) -> torch.Tensor:
    """Σ_s weights[s] ks[s] over the stages given, (R, N). Compiled: an unrolled sum that
    inductor fuses into one kernel; eager: one matrix product of the stacked stages."""
    if torch.compiler.is_compiling():
        terms = [w * k for w, k in zip(weights, ks, strict=False) if w != 0.0]
        return sum(terms[1:], terms[0]) if terms else torch.zeros_like(ks[0])
    row = torch.tensor(weights[: len(ks)], dtype=ks[0].dtype, device=ks[0].device)
    stacked = torch.stack(ks)
    return (row @ stacked.reshape(len(ks), -1)).view(stacked.shape[1:])


class ExplicitRK(Stepper):
    """An explicit Runge–Kutta method given by its tableau (on one row or on rows).

    With ``estimates_error`` (adaptive steps; the tableau has error weights) a step on one row
    also forms its error estimate from the stages it stacks anyway, and :meth:`error` hands it
    over; no stack of stages outlives the product it is made for (none is held while the field
    runs, nor from one step to the next).
    """

    def __init__(self, tableau: Tableau, estimates_error: bool = False) -> None:
        self.tableau = tableau
        self.estimates_error = estimates_error and tableau.b_err is not None
        self._error: torch.Tensor | None = None  # one row: the last step's, until error() takes it

    def step(
        self, field: Field, arith: Arith, t: Any, y: torch.Tensor, f: torch.Tensor, step: Any
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The stages [k_0 .. k_{S-1}] (each (R, N)) of one step of size ``step`` from (t, y),
        and y1."""
        tableau = self.tableau
        ks = [f]
        y1 = y
        if not arith.rows:  # one row: each combination is one (1, i) × (i, N) product
            rows = tableau.tensors(y.dtype, y.device)
            head = None  # FSAL: the error's share of every stage but f(t1, y1)
            for i in range(1, tableau.stages):
                stacked = torch.cat(ks)
                y1 = torch.addmm(y, rows.a[i], stacked, alpha=step)
                if self.estimates_error and tableau.fsal and i == tableau.stages - 1:
                    with untracked():
                        head = torch.mm(rows.b_err_head, stacked)
                del stacked  # (not held while the field runs)
                ks.append(field(t + tableau.c[i] * step, y1))
            if not tableau.fsal:
                stacked = torch.cat(ks)
                y1 = torch.addmm(y, rows.b, stacked, alpha=step)
                if self.estimates_error:
                    with untracked():
                        self._error = torch.mm(rows.b_err, stacked)
            elif head is not None:
                with untracked():
                    self._error = torch.add(head, ks[-1], alpha=rows.b_err_last)
            return ks, y1
        h = arith.step_factor(step, y)
        for i in range(1, tableau.stages):
            y1 = y + h * combine(tableau.a[i], ks)
            ks.append(field(t + tableau.c[i] * step, y1))
        if not tableau.fsal:
            y1 = y + h * combine(tableau.b, ks)
        return ks, y1

    def error(self, arith: Arith, ks: list[torch.Tensor]) -> torch.Tensor:
        """Σ_s b_err[s] ks[s], (R, N): on one row the estimate the step formed (see the class)."""
        if self._error is None:
            return super().error(arith, ks)
        error, self._error = self._error, None
        return error


class Rosenbrock(Stepper):
    """A Rosenbrock W-method step (see :mod:`neuralode.core.rosenbrock_method`), on one row
    with a float clock, or on one row of the row loop (``ROWS``: the clock and the memory are
    (1,) tensors; under torch.func.vmap each instance is that row, with its own steps).

    The Jacobian J = ∂f/∂y comes from autograd (N reverse-mode products, differentiable when f
    depends on parameters) and T = ∂f/∂t from a forward difference, as in ode23s. A J serves
    the retries of a rejected step and up to ``jacobian_every`` accepted steps. On rows this is
    decided per row, by masks: when some row that moves needs a new (J, T), it is evaluated for
    every row and each row takes it or keeps its own, so that each uses the (J, T) it uses when
    solved alone. With ``blocks`` = B > 1 the state is B independent systems: J is B diagonal
    blocks, costing n products (n features per system) instead of B·n. Counts Jacobians in
    ``field.stats.n_jacobians``.

    Args:
        method: the Rosenbrock method.
        field: the flat field (for the Jacobian's evaluations).
        blocks: independent diagonal blocks of J (1: the full Jacobian).
        jacobian_every: accepted steps a Jacobian serves at most.
    """

    def __init__(
        self, method: RosenbrockMethod, field: FlatField, blocks: int, jacobian_every: int
    ) -> None:
        self.tableau = method
        self.flat_field = field
        self.blocks, self.jacobian_every = blocks, jacobian_every
        self._jacobian: tuple[torch.Tensor, torch.Tensor] | None = None
        self._jacobian_t: Any = None  # where it was evaluated (a float, or (1,) on rows)
        self._uses: Any = 0  # accepted steps the current Jacobian has served
        self._retry: Any = False  # the last attempt was rejected

    def accepted(self, accept: Any) -> None:
        self._uses = self._uses + accept  # (one row: True, 1; rows: 1 where accepted)
        self._retry = ~accept if torch.is_tensor(accept) else False

    def snapshot(self) -> tuple[Any, ...]:
        return self._jacobian, self._jacobian_t, self._uses, self._retry

    def restore(self, snapshot: tuple[Any, ...]) -> None:
        self._jacobian, self._jacobian_t, self._uses, self._retry = snapshot

    def step(
        self, field: Field, arith: Arith, t: Any, y: torch.Tensor, f: torch.Tensor, step: Any
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """k = [k1, k2, k3, F2] of one step of size ``step`` from (t, y), and y1."""
        method = self.tableau
        jacobian, time_derivative = self._current_jacobian(arith, t, y, f, step)
        blocks, n = jacobian.shape[:2]  # (blocks, n, n), (1, N)
        h = arith.step_factor(step, y)  # (rows: (1, 1), broadcast over J's blocks)
        identity = torch.eye(n, dtype=y.dtype, device=y.device)
        factors = torch.linalg.lu_factor(identity - (h * method.d) * jacobian)

        def solve(rhs: torch.Tensor) -> torch.Tensor:
            return torch.linalg.lu_solve(*factors, rhs.view(blocks, n, 1)).view(1, -1)

        hdt = (h * method.d) * time_derivative
        k1 = solve(f + hdt)
        f_mid = field(t + 0.5 * step, y + (0.5 * h) * k1)
        k2 = solve(f_mid - k1) + k1
        y1 = y + h * k2
        f1 = field(t + step, y1)
        k3 = solve(f1 - method.e32 * (k2 - f_mid) - 2.0 * (k1 - f) + hdt)
        return [k1, k2, k3, f1], y1

    def _current_jacobian(
        self, arith: Arith, t: Any, y: torch.Tensor, f: torch.Tensor, step: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(J, T) at (t, y), or the last ones while they may serve: a retry from the point where
        they were computed reuses them, and so do up to ``jacobian_every`` accepted steps (rows:
        each row as it would alone; a row that does not move keeps its own)."""
        if self._jacobian is None:
            self._jacobian = self._evaluate_jacobian(arith, t, y, f)
            self._jacobian_t, self._uses = t, 0
        else:
            stale = self._retry & (self._jacobian_t != t)
            refresh = stale | (self._uses >= self.jacobian_every)
            if arith.rows:
                refresh = refresh & (step != 0)  # (a row that does not move keeps its own)
            if truth(refresh.any()) if arith.rows else refresh:
                jacobian, time_derivative = self._evaluate_jacobian(arith, t, y, f)
                # (rows: one row, so its (1,) mask broadcasts over J and T alike)
                self._jacobian = (
                    arith.where(refresh, jacobian, self._jacobian[0]),
                    arith.where(refresh, time_derivative, self._jacobian[1]),
                )
                self._jacobian_t = arith.where(refresh, t, self._jacobian_t)
                self._uses = arith.where(refresh, 0, self._uses)
        self._retry = True  # until the loop says the step was accepted
        return self._jacobian

    def _evaluate_jacobian(
        self, arith: Arith, t: Any, y: torch.Tensor, f: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """J as (blocks, n, n) diagonal blocks (:func:`jacobian_blocks`, differentiable when f
        depends on parameters, so gradients see J's dependence on them) and T = ∂f/∂t as
        (1, N), by a forward difference (one more evaluation; 0 for autonomous fields)."""
        field = self.flat_field
        differentiable = torch.is_grad_enabled() and f.requires_grad  # f depends on parameters
        jacobian = jacobian_blocks(field, t, y, self.blocks, differentiable)
        scale = 1e-7 if y.dtype == torch.float64 else 1e-3
        delta = scale * arith.clamp_min(arith.absolute(t), 1.0)
        shifted = field.evaluate(_time(t + delta, y), y.reshape(-1))
        time_derivative = (shifted.view(1, -1) - f) / arith.step_factor(delta, y)
        return jacobian, time_derivative


def _time(t: Any, like: torch.Tensor) -> torch.Tensor:
    """The 0-d time tensor, in ``like``'s dtype, of a float time or of a one-row (1,) clock."""
    return torch.as_tensor(t, dtype=like.dtype, device=like.device).reshape(())


def jacobian_blocks(
    field: FlatField, t: Any, y: torch.Tensor, blocks: int, differentiable: bool = False
) -> torch.Tensor:
    """J = ∂f/∂y at (t, y) (t a float, or a one-row (1,) clock) as (blocks, n, n) diagonal
    blocks, by n reverse-mode products (counted in ``field.stats.n_jacobians``).

    The i-th cotangent is 1 at feature i of every block, which gives row i of every block when
    the blocks are independent. ``differentiable``: the products keep their graph (J depends
    on the parameters for autograd); otherwise J is detached. A field whose output does not
    depend on y has J = 0."""
    state = y.reshape(-1)
    n = state.numel() // blocks
    time = _time(t, y)
    cotangents = torch.eye(n, dtype=y.dtype, device=y.device)[:, None, :]
    if under_transform():  # (autograd.grad is refused inside torch.func's transforms; its vjp
        # composes with them, its result a constant of the step unless ``differentiable``)
        x = state if differentiable else state.detach()
        _, pull_back = torch.func.vjp(lambda x: field.evaluate(time, x), x)
        (rows,) = torch.func.vmap(pull_back)(cotangents.expand(n, blocks, n).reshape(n, -1))
        field.stats.n_jacobians += 1
        jacobian = rows.view(n, blocks, n).permute(1, 0, 2)
        return jacobian if differentiable else jacobian.detach()
    with torch.enable_grad(), _kept_in_memory():
        x = state if state.requires_grad and differentiable else state.detach().requires_grad_()
        out = field.evaluate(time, x)
        rows = []
        for cotangent in cotangents.expand(n, blocks, n).reshape(n, -1):
            (row,) = torch.autograd.grad(
                out, x, cotangent, retain_graph=True, create_graph=differentiable,
                allow_unused=True,
            ) if out.requires_grad else (None,)  # fmt: skip
            rows.append(torch.zeros_like(state) if row is None else row)
    field.stats.n_jacobians += 1
    jacobian = torch.stack(rows).view(n, blocks, n).permute(1, 0, 2)
    return jacobian if differentiable else jacobian.detach()


def _kept_in_memory() -> contextlib.AbstractContextManager:
    """Within an enclosing checkpointed segment (whose saved-tensor hooks are active), identity
    hooks: the tensors saved for a Jacobian's products stay in memory, where the segment's
    hooks would have each ``autograd.grad`` rerun the segment so far to recover them. Outside
    one, nothing (torch.func's transforms refuse any saved-tensor hooks)."""
    if torch._C._autograd._top_saved_tensors_default_hooks(False) is None:
        return contextlib.nullcontext()
    return torch.autograd.graph.saved_tensors_hooks(_kept, _kept)


def _kept(x: torch.Tensor) -> torch.Tensor:
    return x


@functools.cache
def dense_weights(tableau: Tableau, device: torch.device) -> torch.Tensor:
    """The dense-output polynomials' coefficients, (powers, basis), float64 on ``device``."""
    return torch.as_tensor(tableau.dense.T, device=device)


def interpolate(
    dense: torch.Tensor,
    y: torch.Tensor,
    h: Any,
    basis: list[torch.Tensor],
    theta: torch.Tensor,
) -> torch.Tensor:
    """The dense output of a step from rows y (R, N) of size h (a float, or (R, 1)) with the
    vectors ``basis`` (the stages, then f1 unless FSAL) at fractions ``theta`` (T, R) float64
    of the step: (T, R, N). ``dense``: the method's :func:`dense_weights`."""
    n_powers, n_basis = dense.shape
    powers = torch.stack([theta ** (p + 1) for p in range(n_powers)], dim=-1)
    weights = (powers @ dense).to(y.dtype)  # (T, R, basis)
    stacked = torch.stack(basis[:n_basis])  # (basis, R, N)
    return y + h * torch.einsum("trs,srn->trn", weights, stacked)


def hermite(
    y: torch.Tensor,
    y1: torch.Tensor,
    f0: torch.Tensor,
    f1: torch.Tensor,
    h: float,
    theta: torch.Tensor,
) -> torch.Tensor:
    """The cubic Hermite interpolant of a step of size h from rows y (slope f0) to y1 (slope f1)
    at fractions ``theta`` (T, R) of the step: (T, R, N)."""
    s = theta[..., None].to(y.dtype)
    s2, s3 = s * s, s * s * s
    slopes = (s - 2 * s2 + s3) * f0 + (s3 - s2) * f1
    return y + h * slopes + (3 * s2 - 2 * s3) * (y1 - y)
