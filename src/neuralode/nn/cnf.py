"""Continuous normalizing flows (Chen et al. 2018, section 4; FFJORD, Grathwohl et al. 2019).

Sign convention (FFJORD's). Along a trajectory of dz/dt = f(t, z) the density obeys the
instantaneous change of variables d log p_t(z(t))/dt = −tr(∂f/∂z). A CNF solves the augmented
state (z, logp) with d(logp)/dt = −tr(∂f/∂z), so the logp channel follows log p_t(z(t)) up to
its start value. Data live at t = 0 and the base density N(0, I) at t = t1:

- density: from (x, 0) at t = 0 to (z, Δ) at t = t1, Δ = −∫_0^t1 tr(∂f/∂z) dt, and
  log p(x) = log N(z; 0, I) − Δ;
- sampling: from (z, log N(z; 0, I)) at t = t1, z ~ N(0, I), back to (x, log q(x)) at t = 0.

For a linear field f(z) = A z: z(t1) = exp(A t1) x and log p(x) = log N(z(t1); 0, I) + t1 tr(A).
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import NamedTuple

import torch
from torch import nn

from .solve import ODEModule, SolverConfig, State
from .trace import NOISES, basis_vectors, sample_noise, vector_jacobian_products

TRACES = ("exact", "hutchinson")


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) per sample: (batch, d) → (batch,)."""
    return -0.5 * (z.square().sum(-1) + z.shape[-1] * math.log(2 * math.pi))


def standard_normal_samples(n: int, d: int, like: torch.Tensor) -> torch.Tensor:
    """n draws (n, d) from N(0, I), with the dtype and device of ``like``."""
    return torch.randn(n, d, dtype=like.dtype, device=like.device)


class Regularization(NamedTuple):
    """Regularisers of Finlay et al. (2020), integrated over [0, t1] per sample, each (batch,).

    Attributes:
        kinetic: ∫ ‖f(t, z)‖² dt.
        jacobian: ∫ ‖∂f/∂z‖_F² dt: exact with the exact trace, else the Hutchinson estimate
            ∫ ‖εᵀ ∂f/∂z‖² dt with the solve's noise ε.
    """

    kinetic: torch.Tensor
    jacobian: torch.Tensor


class CNFDynamics(nn.Module):
    """The augmented dynamics of one solve: (z, logp[, kinetic, jacobian]) ↦
    (f, −tr(∂f/∂z)[, ‖f‖², ‖∂f/∂z‖_F²]), z of shape (batch, d), the others (batch,).

    Its parameters are the field's, as the adjoint method needs. The products with the basis
    vectors (exact trace) or the probes (Hutchinson) come from
    :func:`~neuralode.nn.trace.vector_jacobian_products`: computed under ``torch.no_grad()``
    too, differentiable when autograd records.

    Args:
        field: the vector field ``field(t, z) -> dz/dt``, acting on each row of z separately.
        noise: Hutchinson probes ε (batch, d) held fixed during the solve, or None for the exact
            trace.
        regularize: also integrate the two regularisers.
    """

    def __init__(self, field: nn.Module, noise: torch.Tensor | None, regularize: bool) -> None:
        super().__init__()
        self.field = field
        self.noise = noise
        self.regularize = regularize

    def forward(self, t: torch.Tensor, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        z = state[0]
        vectors = basis_vectors(z) if self.noise is None else self.noise[None]
        dz, products = vector_jacobian_products(functools.partial(self.field, t), z, vectors)
        # products[k] = v_kᵀ J: with the basis, J's rows, so tr J = Σ_i products[i, :, i].
        trace = (products * vectors).sum((0, -1))
        if not self.regularize:
            return dz, -trace
        return dz, -trace, dz.square().sum(-1), products.square().sum((0, -1))


class CNF(ODEModule):
    """A continuous normalizing flow on R^d with base density N(0, I) at t = t1 (see the module
    docstring for the sign convention).

    Args:
        field: the vector field, an ``nn.Module`` called as ``field(t, z)`` with t a 0-d tensor
            and z (batch, d), returning dz/dt (batch, d); rows must not interact.
        dim: d, the dimension of the data.
        t1: end of the integration interval [0, t1].
        train_t1: learn t1, parameterised as t1 = s², s the parameter ``sqrt_t1`` (FFJORD's
            ``sqrt_end_time``; None when t1 is fixed).
        trace: ``"exact"`` (d vector-Jacobian products, batched) or ``"hutchinson"`` (one, with
            probes drawn once per solve).
        noise: Hutchinson probes, ``"gaussian"`` or ``"rademacher"``.
        solver: method, tolerances, options and gradient mode (default: dopri5 at
            rtol = atol = 1e-5, FFJORD's setting, backpropagation).

    Samples take the dtype and device of the field's first parameter.

    Attributes:
        stats: the :class:`SolverStats` of the last solve (backward fields fill in after the
            backward pass).
    """

    def __init__(
        self,
        field: nn.Module,
        dim: int,
        *,
        t1: float = 1.0,
        train_t1: bool = False,
        trace: str = "exact",
        noise: str = "gaussian",
        solver: SolverConfig | None = None,
    ) -> None:
        super().__init__(solver if solver is not None else SolverConfig(rtol=1e-5, atol=1e-5))
        if trace not in TRACES:
            raise ValueError(f"unknown trace {trace!r}; valid traces are: {', '.join(TRACES)}")
        if noise not in NOISES:
            raise ValueError(f"unknown noise {noise!r}; valid noises are: {', '.join(NOISES)}")
        self.field = field
        self.dim = dim
        self.fixed_t1 = t1
        self.register_parameter(
            "sqrt_t1", nn.Parameter(torch.tensor(math.sqrt(t1))) if train_t1 else None
        )
        self.trace, self.noise = trace, noise

    @property
    def t1(self) -> torch.Tensor:
        """End of the integration interval, a 0-d tensor (float64 unless learnt)."""
        if self.sqrt_t1 is None:
            return torch.tensor(self.fixed_t1, dtype=torch.float64)
        return self.sqrt_t1.square()

    def transform(
        self, z: torch.Tensor, logp: torch.Tensor, *, reverse: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Carry (z (batch, d), logp (batch,)) from t = 0 to t1, or from t1 to 0 if ``reverse``;
        logp changes by −∫ tr(∂f/∂z) dt along the way. Returns the end values."""
        z_end, logp_end = self._augmented_solve(z, logp, reverse, regularize=False)
        return z_end, logp_end

    def log_prob(
        self, x: torch.Tensor, return_regularization: bool = False, t: float = 0.0
    ) -> torch.Tensor | tuple[torch.Tensor, Regularization]:
        """log p(x) = log N(z(t1); 0, I) − Δ: x (batch, d) → (batch,), and the
        :class:`Regularization` of this solve if ``return_regularization``.

        With ``t`` in (0, t1), the log-density of the flow's marginal at time t instead (x at t
        carried to t1): how the density morphs from the data's to the base's."""
        z, delta, *regularizers = self._augmented_solve(
            x, x.new_zeros(x.shape[0]), reverse=False, regularize=return_regularization, start=t
        )
        log_prob = standard_normal_log_prob(z) - delta
        return (log_prob, Regularization(*regularizers)) if return_regularization else log_prob

    def sample(self, n: int) -> torch.Tensor:
        """n samples (n, d): z ~ N(0, I) carried from t1 to 0 by the field alone (no trace)."""
        return self._integrate(self.field, self._base_samples(n), reverse=True)

    def sample_with_log_prob(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """n samples x (n, d) with their log-density log q(x) (n,), for density matching."""
        return self.from_base(self._base_samples(n))

    def from_base(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Base points z (batch, d) carried to the data space: x (batch, d) and log q(x)
        (batch,)."""
        return self.transform(z, standard_normal_log_prob(z), reverse=True)

    def trajectory(self, z: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        """The points z (batch, d), given at ``times[0]``, at every time of ``times`` (in
        [0, t1], monotonic): (len(times), batch, d). The field alone, no trace."""
        return self.solve(self.field, z, times.to(z))

    def _base_samples(self, n: int) -> torch.Tensor:
        return standard_normal_samples(n, self.dim, like=next(self.field.parameters()))

    def _augmented_solve(
        self,
        z: torch.Tensor,
        logp: torch.Tensor,
        reverse: bool,
        regularize: bool,
        start: float = 0.0,
    ) -> tuple[torch.Tensor, ...]:
        """(z, logp[, kinetic, jacobian]) at the end of the augmented solve, with fresh probes."""
        if torch.is_grad_enabled() and not z.requires_grad:
            # Every z the dynamics sees then requires grad, so the products are taken by autograd
            # (the torch.func path refuses the saved-tensor hooks of checkpointed segments).
            z = z.detach().requires_grad_(True)
        noise = sample_noise(z, self.noise) if self.trace == "hutchinson" else None
        regularizers = (z.new_zeros(z.shape[0]),) * 2 if regularize else ()
        dynamics = CNFDynamics(self.field, noise, regularize)
        return self._integrate(dynamics, (z, logp, *regularizers), reverse, start)

    def _integrate(self, func: nn.Module, state: State, reverse: bool, start: float = 0.0) -> State:
        """The state at the end of one solve of d(state)/dt = func over [start, t1] (from t1 to
        start if ``reverse``); records the solve's statistics in ``stats``."""
        like = state[0] if isinstance(state, tuple) else state
        end = self.t1.to(dtype=like.dtype, device=like.device)
        begin = torch.full_like(end, start)
        times = torch.stack((end, begin) if reverse else (begin, end))
        solution = self.solve(func, state, times)
        return tuple(part[-1] for part in solution) if isinstance(state, tuple) else solution[-1]


class HyperNetField(nn.Module):
    """The paper's CNF vector field: ``width`` planar units whose parameters are functions of t,
    dz/dt = (1/width) Σ_n σ_n(t) u_n(t) tanh(w_n(t)ᵀ z + b_n(t)); z (batch, d) → (batch, d).

    A network of t (1 → hidden → hidden → width·(2d + 2), tanh) outputs u_n, w_n ∈ R^d, b_n ∈ R
    and the gate's logit, σ_n(t) ∈ (0, 1). The trace of its Jacobian is cheap to take exactly.
    """

    def __init__(self, d: int, width: int = 64, hidden: int = 32) -> None:
        super().__init__()
        self.d, self.width = d, width
        self.hypernet = nn.Sequential(
            nn.Linear(1, hidden),
            nn.Tanh(),
            nn.Linear(hidden, hidden),
            nn.Tanh(),
            nn.Linear(hidden, width * (2 * d + 2)),
        )

    def planar_units(
        self, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """u (width, d), w (width, d), b (width,) and the gate σ (width,) at time t (0-d)."""
        params = self.hypernet(t.reshape(1, 1)).view(self.width, 2 * self.d + 2)
        u, w, b, gate = params.split([self.d, self.d, 1, 1], dim=-1)
        return u, w, b.squeeze(-1), torch.sigmoid(gate.squeeze(-1))

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        u, w, b, gate = self.planar_units(t)
        return (torch.tanh(z @ w.T + b) * gate) @ u / self.width


class ConcatSquashLinear(nn.Module):
    """FFJORD's time-conditioned linear layer: y = Linear(h) · sigmoid(Linear_gate(t)) +
    Linear_bias(t); h (batch, in_features) → (batch, out_features), t a 0-d tensor."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.hyper_gate = nn.Linear(1, out_features)
        self.hyper_bias = nn.Linear(1, out_features, bias=False)

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        time = t.to(h.dtype).reshape(1, 1)
        return self.linear(h) * torch.sigmoid(self.hyper_gate(time)) + self.hyper_bias(time)


class ConcatSquashMLP(nn.Module):
    """FFJORD's toy vector field: concat-squash layers d → hidden… → d with tanh between them;
    z (batch, d) → dz/dt (batch, d)."""

    def __init__(self, d: int, hidden: tuple[int, ...] = (64, 64, 64)) -> None:
        super().__init__()
        sizes = (d, *hidden, d)
        self.layers = nn.ModuleList(ConcatSquashLinear(a, b) for a, b in itertools.pairwise(sizes))

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        h = z
        for index, layer in enumerate(self.layers):
            h = layer(t, h)
            if index < len(self.layers) - 1:
                h = torch.tanh(h)
        return h
