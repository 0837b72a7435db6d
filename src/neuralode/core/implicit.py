"""The implicit Runge–Kutta stepper: stage equations solved by simplified Newton iterations.

For the stages K of one block (all stages of a fully implicit method, or one stage of a
diagonally implicit one, after the stages before it):

    r(K)_i = K_i − f(t + c_i h, base_i + h Σ_{j in block} A_ij K_j)
    (I − h A_block ⊗ J) ΔK = r(K),    K ← K − ΔK

with J = ∂f/∂y at (t, y) (autograd, :func:`~neuralode.core.steppers.jacobian_blocks`) and the
matrix inverted once per step and block matrix. (An explicit inverse, not ``lu_factor`` and
``lu_solve``: torch 2.13's ``lu_solve`` returns wrong values for factors with a size-1 batch
dimension laid out with another stride, such as ``LU[:, None]``, which torch.func.vmap makes of
them when the factors are batched at an outer level and the residual at an inner one, as in
``vmap(jacrev(...))``: silently wrong per-instance Jacobians on nonlinear fields. Simplified
Newton iterations converge to the same stages with any close iteration matrix.) The iterations
start from K_i = f(t, y), as torchdiffeq's do. They have converged when the change of the
stage values is small,

    RMS( h ΔK / (1 + |y|) ) ≤ tol,    tol = 1e-10 (float64 states), 1e-6 (otherwise),

a fixed mixed absolute/relative test (torchdiffeq also ignores rtol and atol for these
methods and tests ‖r‖₂ < 1e-8 / 1e-6). A linear field converges in one iteration (confirmed by
a second). At most ``max_iters`` iterations per block: if they do not converge (or the
iterates are NaN/Inf), :attr:`ImplicitRK.failure` says so and the loop ends the solve there
with :class:`~neuralode.errors.ConvergenceError` (torchdiffeq warns and goes on with the
unconverged stages).

Gradients: backpropagation goes through the iterations (J and its inverse are constants,
whose effect on the converged stages vanishes with the residual). With the matrix held fixed,
each order of derivative needs one iteration after the values have converged: the iteration
that confirms convergence makes first derivatives exact to the Newton tolerance, and when the
stages carry derivatives (autograd records them, or a forward-mode tangent) one more makes
second derivatives exact too (Hessians, double backward).
"""

from __future__ import annotations

import math

import torch
from torch.autograd import forward_ad

from .arith import Arith
from .implicit_methods import ImplicitMethod
from .state import FlatField
from .steppers import Field, Stepper, jacobian_blocks
from .transforms import is_wrapped

DEFAULT_MAX_ITERS = 100


def newton_tolerance(dtype: torch.dtype) -> float:
    """The convergence threshold of the stage iterations for a working dtype."""
    return 1e-10 if dtype == torch.float64 else 1e-6


class ImplicitRK(Stepper):
    """One step of an implicit Runge–Kutta method (one row, scalar clock).

    Args:
        method: the method (its stage matrix, nodes and weights).
        field: the flat field (for the Jacobian's evaluations).
        blocks: independent diagonal blocks of J (1: the full Jacobian).
        jacobian_every: steps a Jacobian serves at most (1: a new one each step).
        max_iters: Newton iterations per block of stages at most.
    """

    def __init__(
        self,
        method: ImplicitMethod,
        field: FlatField,
        blocks: int = 1,
        jacobian_every: int = 1,
        max_iters: int = DEFAULT_MAX_ITERS,
    ) -> None:
        self.tableau = method
        self.flat_field = field
        self.blocks, self.jacobian_every, self.max_iters = blocks, jacobian_every, max_iters
        self.failure: str | None = None
        self._jacobian: torch.Tensor | None = None
        self._uses = 0

    def accepted(self, accept: bool) -> None:
        self._uses += 1

    def snapshot(self) -> tuple[torch.Tensor | None, int]:
        return self._jacobian, self._uses

    def restore(self, snapshot: tuple[torch.Tensor | None, int]) -> None:
        self._jacobian, self._uses = snapshot

    def step(
        self, field: Field, arith: Arith, t: float, y: torch.Tensor, f: torch.Tensor, step: float
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """[f, K_1, …, K_s] of one step of size ``step`` from (t, y), and y1."""
        method = self.tableau
        a, c = method.stage_a, method.stage_c
        self.failure = None
        jacobian = self._current_jacobian(t, y)
        inverses: dict[tuple[tuple[float, ...], ...], torch.Tensor] = {}
        ks: list[torch.Tensor] = []
        for block in method.blocks:
            bases = []
            for i in block:
                earlier = [(a[i][j], ks[j]) for j in range(block[0]) if a[i][j] != 0.0]
                base = y
                for weight, k in earlier:
                    base = base + (step * weight) * k
                bases.append(base)
            sub = tuple(tuple(a[i][j] for j in block) for i in block)
            if all(value == 0.0 for row in sub for value in row):  # explicit stages
                ks.extend(
                    f if c[i] == 0.0 and base is y else field(t + c[i] * step, base)
                    for i, base in zip(block, bases, strict=True)
                )
                continue
            if sub not in inverses:
                inverses[sub] = self._invert(sub, jacobian, step)
            ks.extend(
                self._solve_block(field, arith, t, y, f, step, block, bases, sub, inverses[sub])
            )
            if self.failure is not None:
                ks.extend([f] * (len(c) - len(ks)))  # (the loop ends the solve here)
                break
        y1 = y
        for weight, k in zip(method.stage_b, ks, strict=True):
            if weight != 0.0:
                y1 = y1 + (step * weight) * k
        return [f, *ks], y1

    def _solve_block(
        self,
        field: Field,
        arith: Arith,
        t: float,
        y: torch.Tensor,
        f: torch.Tensor,
        step: float,
        block: tuple[int, ...],
        bases: list[torch.Tensor],
        sub: tuple[tuple[float, ...], ...],
        inverse: torch.Tensor,
    ) -> list[torch.Tensor]:
        """The stages of one block by simplified Newton iterations from K = f. The change is
        read by ``arith.clock``: under torch.func.vmap, the largest of all instances' (they
        iterate until every one has converged)."""
        c = self.tableau.stage_c
        m = len(block)
        blocks = inverse.shape[0]
        tol = newton_tolerance(y.dtype)
        with torch.no_grad():
            scale = 1.0 / (tol * (1.0 + y.abs()))  # (1, N)
        ks = [f] * m
        converged = False
        for _ in range(self.max_iters):
            residual = []
            for p, i in enumerate(block):
                stage = bases[p]
                for q in range(m):
                    if sub[p][q] != 0.0:
                        stage = stage + (step * sub[p][q]) * ks[q]
                residual.append(ks[p] - field(t + c[i] * step, stage))
            r = torch.cat(residual)  # (m, N)
            rhs = r.view(m, blocks, -1).transpose(0, 1).reshape(blocks, -1, 1)
            delta = (inverse @ rhs).view(blocks, m, -1).transpose(0, 1)
            delta = delta.reshape(m, -1)
            ks = [k - d[None] for k, d in zip(ks, delta, strict=True)]
            with torch.no_grad():
                change = torch.linalg.vector_norm(step * delta * scale) / math.sqrt(r.numel())
                size = arith.clock(change)
            if not math.isfinite(size):
                self.failure = (
                    f"the stage equations of method {self.tableau.name!r} gave NaN or Inf iterates"
                )
                return ks
            if size <= 1.0:
                if converged or not _carries_derivatives(ks[0]):
                    return ks
                converged = True  # one more iteration, for exact second derivatives
        if converged:  # (the extra iteration was the last allowed)
            return ks
        self.failure = (
            f"the stage equations of method {self.tableau.name!r} did not converge in "
            f"max_iters={self.max_iters} Newton iterations (last change {size * tol:.3g} of "
            f"the state's scale, tolerance {tol:.0e})"
        )
        return ks

    def _invert(
        self, sub: tuple[tuple[float, ...], ...], jacobian: torch.Tensor, step: float
    ) -> torch.Tensor:
        """(I − h (A_block ⊗ J_b))⁻¹ for each diagonal block b of J."""
        blocks, n = jacobian.shape[:2]
        m = len(sub)
        a = torch.tensor(sub, dtype=jacobian.dtype, device=jacobian.device)
        kron = torch.einsum("ij,bpq->bipjq", a, jacobian).reshape(blocks, m * n, m * n)
        identity = torch.eye(m * n, dtype=jacobian.dtype, device=jacobian.device)
        return torch.linalg.inv(identity - step * kron)

    def _current_jacobian(self, t: float, y: torch.Tensor) -> torch.Tensor:
        """J at (t, y), or the last one while it may serve (``jacobian_every`` steps)."""
        if self._jacobian is None or self._uses >= self.jacobian_every:
            self._jacobian = jacobian_blocks(self.flat_field, t, y, self.blocks)
            self._uses = 0
        return self._jacobian


def _carries_derivatives(k: torch.Tensor) -> bool:
    """Derivatives may flow through the stage ``k``: autograd records it, a torch.func
    transform wraps it, or a forward_ad dual level is open (asking a batched tensor for its
    tangent is refused, so a transform's wrapper counts as carrying one)."""
    return k.requires_grad or is_wrapped(k) or forward_ad._current_level >= 0
