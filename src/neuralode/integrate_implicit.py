"""The step loop for Rosenbrock methods: :class:`~neuralode.integrate.StepLoop` with a
linearly implicit step.

Each attempted step factorises W = I − h d J once (LU) and solves three linear systems. The
Jacobian J = ∂f/∂y and T = ∂f/∂t come from autograd (``torch.func.jacfwd``: N + 1
forward-mode products, batched by vmap) and are reused across steps, which a W-method allows
without losing order, though its error estimate suffers: by default a new J is computed every
accepted step and reused only by the retries of a rejected one (same point);
``options={"jacobian_every": k}`` lets one serve up to k accepted steps (a rejection still
brings a fresh one). Which is faster depends on the problem (results/stiff.md). With
``options={"jacobian": "per_sample"}`` a (B, ...) state is B independent systems: J is B
diagonal blocks, costing n + 1 products (n features per sample) instead of B·n + 1, and W is
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
        jacobian, time_derivative = self._current_jacobian(t, y)  # (blocks, n, n), (1, N)
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

    def _current_jacobian(self, t: float, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(J, T) at (t, y), or the last ones while they may serve."""
        retry = self._last_attempt == t  # the previous attempt from here was rejected
        self._last_attempt = t
        if retry and self._jacobian_t != t:
            self._jacobian = None
        if not retry:
            self._uses += 1
        if self._jacobian is None or self._uses > self.jacobian_every:
            self._jacobian = self._evaluate_jacobian(t, y)
            self._jacobian_t, self._uses = t, 1
        return self._jacobian

    def _evaluate_jacobian(self, t: float, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """J as (blocks, n, n) diagonal blocks and T = ∂f/∂t as (1, N), by n + 1 forward-mode
        products: the j-th product's tangent is 1 at feature j of every block, which gives
        column j of every block when the blocks are independent."""
        field = self.field
        layout = field.layout
        time = torch.tensor(t, dtype=y.dtype, device=y.device)
        state = y.reshape(-1)
        blocks = self.blocks
        n = state.numel() // blocks

        def flat(at: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            return layout.flatten(field.func(at, layout.unflatten(x)))

        def column(tangent: torch.Tensor) -> torch.Tensor:
            return torch.func.jvp(lambda x: flat(time, x), (state,), (tangent,))[1]

        tangents = torch.eye(n, dtype=y.dtype, device=y.device)[:, None, :].expand(n, blocks, n)
        columns = torch.func.vmap(column)(tangents.reshape(n, -1))  # (n, N)
        jacobian = columns.view(n, blocks, n).permute(1, 2, 0)
        _, time_derivative = torch.func.jvp(
            lambda at: flat(at, state), (time,), (torch.ones_like(time),)
        )
        field.stats.n_jacobians += 1
        return jacobian, time_derivative.view(1, -1)
