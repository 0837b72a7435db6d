"""The Adams stepper: a history of past derivatives moved on after each accepted step.

See :mod:`neuralode.core.adams_method` for what the methods compute. The step from t of size h
with the history f(t), f(t₋₁), … at times t, t₋₁, …: with nodes τⱼ = (tⱼ − t)/h the
Adams–Bashforth weights are βⱼ = ∫₀¹ Lⱼ(s) ds (Lⱼ the Lagrange basis on the nodes) and the
Adams–Moulton ones the same on the nodes (1, τ₀, τ₁, …); each integral by Gauss–Legendre
quadrature, exact for these degrees, of the basis in product form (no Vandermonde system).
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import torch

from .adams_method import MIN_ORDER, AdamsMethod
from .arith import Arith
from .controllers import Tolerance
from .steppers import ExplicitRK, Field, Stepper
from .transforms import truth

_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(8)  # exact to degree 15 ≥ 12 − 1
_POINTS, _QUADRATURE = (_NODES + 1.0) / 2.0, _WEIGHTS / 2.0  # on [0, 1]

History = tuple[tuple[float, torch.Tensor], ...]
"""(time, f (1, N)) pairs, newest first."""


@functools.lru_cache(maxsize=512)
def integrated_lagrange(nodes: tuple[float, ...]) -> np.ndarray:
    """∫₀¹ Lⱼ(s) ds for the Lagrange basis polynomials Lⱼ on ``nodes`` (distinct), float64."""
    tau = np.asarray(nodes, dtype=np.float64)
    own = np.eye(len(tau), dtype=bool)
    denominators = np.where(own, 1.0, tau[:, None] - tau[None, :]).prod(axis=1)
    factors = _POINTS[:, None, None] - tau[None, None, :]  # (points, 1, k)
    numerators = np.where(own[None], 1.0, factors).prod(axis=2)  # (points, k)
    return _QUADRATURE @ (numerators / denominators)


class Adams(Stepper):
    """Adams–Bashforth(–Moulton) steps on one row with a history of past derivatives.

    The history moves on only in :meth:`accepted`; :meth:`snapshot` / :meth:`restore` let a
    checkpointed segment rerun from the history it started with.

    Args:
        method: the Adams method (corrector, max_order, max_iters).
        tolerance: rtol and atol of the corrector's convergence test.
        bootstrap: the rk4 stepper of the first steps.
    """

    failure = None  # (a corrector that does not converge warns, as torchdiffeq's)

    def __init__(self, method: AdamsMethod, tolerance: Tolerance, bootstrap: ExplicitRK) -> None:
        self.tableau = method
        self.rtol, self.atol = tolerance.rtol, tolerance.atol
        self.bootstrap = bootstrap
        self._history: History = ()
        self._pending: History = ()
        self._warned = False

    def accepted(self, accept: bool) -> None:
        self._history = self._pending

    def snapshot(self) -> History:
        return self._history

    def restore(self, snapshot: History) -> None:
        self._history = self._pending = snapshot

    def step(
        self, field: Field, arith: Arith, t: float, y: torch.Tensor, f: torch.Tensor, step: float
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """k = [f(t, y), (y1 − y)/h] of one step of size ``step`` from (t, y), and y1."""
        method = self.tableau
        history = ((t, f), *self._history)[: max(method.max_order - 1, 0)]
        if len(history) < MIN_ORDER - 1:
            _, y1 = self.bootstrap.step(field, arith, t, y, f, step)
        else:
            nodes = tuple((time - t) / step for time, _ in history)
            derivatives = torch.cat([value for _, value in history])  # (k, N)
            dy = self._combine(integrated_lagrange(nodes), derivatives, step)
            if method.corrector:
                dy, converged = self._correct(field, t, y, step, dy, nodes, derivatives)
                if not converged:
                    history = history[:-1]  # torchdiffeq drops the oldest derivative
            y1 = y + dy
        self._pending = history
        return [f, (y1 - y) / step], y1

    def _combine(self, weights: np.ndarray, derivatives: torch.Tensor, step: float) -> torch.Tensor:
        """step · Σⱼ weights[j] derivatives[j], (1, N)."""
        row = torch.as_tensor(weights[None], dtype=derivatives.dtype, device=derivatives.device)
        return step * (row @ derivatives)

    def _correct(
        self,
        field: Field,
        t: float,
        y: torch.Tensor,
        step: float,
        dy: torch.Tensor,
        nodes: tuple[float, ...],
        derivatives: torch.Tensor,
    ) -> tuple[torch.Tensor, bool]:
        """The Adams–Moulton increment by functional iteration from the prediction ``dy``, and
        whether two iterates agreed within rtol/atol before ``max_iters`` iterations (under
        torch.func.vmap, in every instance: they iterate until all have converged)."""
        weights = integrated_lagrange((1.0, *nodes))
        history_part = self._combine(weights[1:], derivatives, step)
        new_weight = step * float(weights[0])
        t1 = t + step
        converged = False
        for _ in range(self.tableau.max_iters):
            previous = dy
            dy = new_weight * field(t1, y + dy) + history_part
            with torch.no_grad():
                scale = self.atol + self.rtol * torch.maximum(previous.abs(), dy.abs())
                # (under torch.func.vmap: once every instance has; NaN never converges)
                converged = not truth(~(((dy - previous).abs() / scale).max() < 1))
            if converged:
                break
        if not converged:
            self._warn(t, t1)
        return dy, converged

    def _warn(self, t: float, t1: float) -> None:
        if self._warned:
            return
        self._warned = True
        method = self.tableau
        warnings.warn(
            f"{method.name}: the Adams–Moulton corrector did not converge in max_iters="
            f"{method.max_iters} functional iterations in the step from t={t:.6g} to "
            f"t={t1:.6g} (warned once per solve); as in torchdiffeq the step keeps the last "
            "iterate, so the solution may be inaccurate: raise options['max_iters'], take "
            "smaller steps (options['step_size']), or loosen rtol/atol, which the iterates' "
            "increments are tested against",
            RuntimeWarning,
            stacklevel=2,
        )
