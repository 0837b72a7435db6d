"""The step loop for Rosenbrock methods: :class:`~neuralode.integrate.StepLoop` with a
linearly implicit step.

Each attempted step factorises W = I − h d J once (LU) and solves three linear systems. The
Jacobian J = ∂f/∂y comes from autograd (N reverse-mode products, cheaper on small fields than
vmapped forward-mode ones) and T = ∂f/∂t from a forward difference, as in ode23s. J may be
reused across steps, which a W-method allows without losing order, though its error estimate
suffers: by default a new J is computed every
accepted step and reused only by the retries of a rejected one (same point);
``options={"jacobian_every": k}`` lets one serve up to k accepted steps (a rejection still
brings a fresh one). Which is faster depends on the problem (results/stiff.md). With
``options={"jacobian": "per_sample"}`` a (B, ...) state is B independent systems: J is B
diagonal blocks, costing n products (n features per sample) instead of B·n, and W is
factorised block by block. Autograd records the steps, so backpropagation through the solve
works as for the explicit methods.
"""

from __future__ import annotations

import torch

from .integrate import StepLoop
from .solvers.rosenbrock import RosenbrockMethod


class RosenbrockLoop(StepLoop):
    """A :class:`StepLoop` whose steps are Rosenbrock steps (``tableau`` a
    :class:`RosenbrockMethod`). Counts Jacobians in ``field.stats.n_jacobians``."""

    def __init__(
        self, *args: object, blocks: int = 1, jacobian_every: int = 1, **kwargs: object
    ) -> None:
        super().__init__(*args, **kwargs)
        self.blocks = blocks  # independent diagonal blocks of J (1: the full Jacobian)
        self.jacobian_every = jacobian_every  # accepted steps a Jacobian serves at most
        self._jacobian: tuple[torch.Tensor, torch.Tensor] | None = None
        self._jacobian_t: float | None = None
        self._uses = 0
        self._last_attempt: float | None = None

    def _stages(
        self, t: float, y: torch.Tensor, f: torch.Tensor, step: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """k = (k1, k2, k3, F2), (4, N), of one step of size ``step`` from (t, y), and y1."""
        method = self.tableau
        assert isinstance(method, RosenbrockMethod)
        jacobian, time_derivative = self._current_jacobian(t, y, f)  # (blocks, n, n), (1, N)
        blocks, n = jacobian.shape[:2]
        identity = torch.eye(n, dtype=y.dtype, device=y.device)
        factors = torch.linalg.lu_factor(identity - (step * method.d) * jacobian)

        def solve(rhs: torch.Tensor) -> torch.Tensor:
            return torch.linalg.lu_solve(*factors, rhs.view(blocks, n, 1)).view(1, -1)

        hdt = (step * method.d) * time_derivative
        k1 = solve(f + hdt)
        f_mid = self.field(t + 0.5 * step, y + (0.5 * step) * k1)
        k2 = solve(f_mid - k1) + k1
        y1 = y + step * k2
        f1 = self.field(t + step, y1)
        k3 = solve(f1 - method.e32 * (k2 - f_mid) - 2.0 * (k1 - f) + hdt)
        return torch.cat([k1, k2, k3, f1]), y1

    def _current_jacobian(
        self, t: float, y: torch.Tensor, f: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(J, T) at (t, y), or the last ones while they may serve."""
        retry = self._last_attempt == t  # the previous attempt from here was rejected
        self._last_attempt = t
        if retry and self._jacobian_t != t:
            self._jacobian = None
        if not retry:
            self._uses += 1
        if self._jacobian is None or self._uses > self.jacobian_every:
            self._jacobian = self._evaluate_jacobian(t, y, f)
            self._jacobian_t, self._uses = t, 1
        return self._jacobian

    def _evaluate_jacobian(
        self, t: float, y: torch.Tensor, f: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """J as (blocks, n, n) diagonal blocks and T = ∂f/∂t as (1, N).

        J by n reverse-mode products: the i-th cotangent is 1 at feature i of every block,
        which gives row i of every block when the blocks are independent (under autograd the
        products are differentiable, so gradients see J's dependence on the parameters). T by
        a forward difference, as ode23s does (one more evaluation; 0 for autonomous fields)."""
        field = self.field
        state = y.reshape(-1)
        blocks = self.blocks
        n = state.numel() // blocks

        def flat(at: float, x: torch.Tensor) -> torch.Tensor:
            return field.evaluate(torch.tensor(at, dtype=y.dtype, device=y.device), x)

        differentiable = torch.is_grad_enabled() and f.requires_grad  # f depends on parameters
        with torch.enable_grad():
            x = state if state.requires_grad else state.detach().requires_grad_(True)
            out = flat(t, x)
            cotangents = torch.eye(n, dtype=y.dtype, device=y.device)[:, None, :]
            rows = []
            for cotangent in cotangents.expand(n, blocks, n).reshape(n, -1):
                (row,) = torch.autograd.grad(
                    out, x, cotangent, retain_graph=True, create_graph=differentiable,
                    allow_unused=True,
                )  # fmt: skip
                rows.append(torch.zeros_like(state) if row is None else row)
        jacobian = torch.stack(rows).view(n, blocks, n).permute(1, 0, 2)
        delta = (1e-7 if y.dtype == torch.float64 else 1e-3) * max(abs(t), 1.0)
        time_derivative = (flat(t + delta, state) - f.view(-1)) / delta
        field.stats.n_jacobians += 1
        return jacobian, time_derivative.view(1, -1)
