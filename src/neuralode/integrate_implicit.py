"""The step loop for Rosenbrock methods: :class:`~neuralode.integrate.StepLoop` with a
linearly implicit step.

Each attempted step factorises W = I − h d J once (LU) and solves three linear systems. The
Jacobian J = ∂f/∂y and T = ∂f/∂t come from autograd (``torch.func.jacfwd``: N + 1
forward-mode products, batched by vmap) and are reused across steps, which a W-method allows
without losing order: a new one is computed after a rejected step (the old one may be what
failed) and otherwise every ``JACOBIAN_EVERY`` accepted steps. Autograd records the steps,
so backpropagation through the solve works as for the explicit methods.
"""

from __future__ import annotations

import torch

from .integrate import StepLoop
from .solvers.rosenbrock import RosenbrockMethod

JACOBIAN_EVERY = 1  # accepted steps a Jacobian serves (the retries of a rejected step reuse it)


class RosenbrockLoop(StepLoop):
    """A :class:`StepLoop` whose steps are Rosenbrock steps (``tableau`` a
    :class:`RosenbrockMethod`). Counts Jacobians in ``field.stats.n_jacobians``."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
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
        jacobian, time_derivative = self._current_jacobian(t, y)
        size = y.shape[1]
        identity = torch.eye(size, dtype=y.dtype, device=y.device)
        factors = torch.linalg.lu_factor(identity - (step * method.d) * jacobian)

        def solve(rhs: torch.Tensor) -> torch.Tensor:
            return torch.linalg.lu_solve(*factors, rhs.T).T

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
        if self._jacobian is None or self._uses > JACOBIAN_EVERY:
            self._jacobian = self._evaluate_jacobian(t, y)
            self._jacobian_t, self._uses = t, 1
        return self._jacobian

    def _evaluate_jacobian(self, t: float, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        field = self.field
        layout = field.layout

        def flat(time: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
            return layout.flatten(field.func(time, layout.unflatten(state)))

        time = torch.tensor(t, dtype=y.dtype, device=y.device)
        jacobian, time_derivative = torch.func.jacfwd(flat, argnums=(1, 0))(time, y.view(-1))
        field.stats.n_jacobians += 1
        return jacobian, time_derivative.view(1, -1)
