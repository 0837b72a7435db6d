"""Discrete flows the CNF is compared with: planar flows (Rezende & Mohamed 2015) and a
diagonal Gaussian. Each offers ``log_prob(x)`` (maximum likelihood) and ``from_base(z)`` /
``sample_with_log_prob(n)`` (density matching), as :class:`~neuralode.nn.cnf.CNF` does."""

from __future__ import annotations

import math

import torch
from torch import nn

from .cnf import standard_normal_log_prob, standard_normal_samples


class PlanarLayer(nn.Module):
    """One planar layer f(z) = z + û tanh(wᵀz + b); z (batch, d).

    û = u + (m(wᵀu) − wᵀu) w / ‖w‖² with m(a) = −1 + softplus(a), so wᵀû = m(wᵀu) > −1 (≥ −1
    once softplus rounds to 0) and f is invertible. log|det ∂f/∂z| = log|1 + ûᵀ w tanh'(wᵀz + b)|,
    with ûᵀw taken in closed form.

    Initialisation: near the identity. w ~ N(0, I/d) and u = log(e − 1) w/‖w‖² + ``init_scale``
    · (a random vector ⟂ w), so that m(wᵀu) = 0 and û is that small perpendicular part. (Small
    random u and w instead give wᵀû ≈ m(0) ≈ −0.31: every layer then shrinks space along w by
    about 0.69, and a stack of 64 collapses the data to a point before training starts.)
    """

    def __init__(self, d: int, init_scale: float = 0.01) -> None:
        super().__init__()
        w = torch.randn(d) / math.sqrt(d)
        perpendicular = torch.randn(d)
        perpendicular -= (perpendicular @ w) / (w @ w) * w
        u = math.log(math.e - 1) * w / (w @ w) + init_scale * perpendicular
        self.u, self.w = nn.Parameter(u), nn.Parameter(w)
        self.b = nn.Parameter(torch.zeros(()))

    def w_dot_u_hat(self) -> torch.Tensor:
        """wᵀû = m(wᵀu) = softplus(wᵀu) − 1 ≥ −1, in closed form (0-d)."""
        return nn.functional.softplus(self.w @ self.u) - 1

    def u_hat(self) -> torch.Tensor:
        """The reparameterised û (d,)."""
        wu = self.w @ self.u
        return self.u + (self.w_dot_u_hat() - wu) * self.w / self.w.square().sum()

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """f(z) (batch, d) and log|det ∂f/∂z| (batch,)."""
        h = torch.tanh(z @ self.w + self.b)
        log_det = torch.log(torch.abs(1 + (1 - h.square()) * self.w_dot_u_hat()))
        return z + h[:, None] * self.u_hat(), log_det


class PlanarFlow(nn.Module):
    """K stacked planar layers (Rezende & Mohamed 2015), f = f_K ∘ … ∘ f_1 on R^d.

    Planar layers have no closed-form inverse, so the stack is used in one direction per task:

    - density matching, KL(q‖p): base → data, :meth:`sample_with_log_prob` gives x = f(z),
      z ~ N(0, I), with log q(x) = log N(z) − Σ_k log|det ∂f_k|;
    - maximum likelihood: data → base (the normalising direction), :meth:`log_prob` gives
      log p(x) = log N(f(x)) + Σ_k log|det ∂f_k|.

    The two describe different densities for the same parameters: train a model for one use.
    """

    def __init__(self, d: int, K: int) -> None:
        super().__init__()
        self.d = d
        self.layers = nn.ModuleList(PlanarLayer(d) for _ in range(K))

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """f(z) (batch, d) and Σ_k log|det ∂f_k| (batch,)."""
        log_det = z.new_zeros(z.shape[0])
        for layer in self.layers:
            z, layer_log_det = layer(z)
            log_det = log_det + layer_log_det
        return z, log_det

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) with the stack as the normalising map x ↦ z: (batch, d) → (batch,)."""
        z, log_det = self(x)
        return standard_normal_log_prob(z) + log_det

    def sample_with_log_prob(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """n samples x = f(z), z ~ N(0, I): (n, d), and log q(x) (n,)."""
        return self.from_base(standard_normal_samples(n, self.d, like=self.layers[0].u))

    def from_base(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Base points z (batch, d) carried forwards, x = f(z) (batch, d), with log q(x)
        (batch,)."""
        x, log_det = self(z)
        return x, standard_normal_log_prob(z) - log_det


class DiagonalGaussian(nn.Module):
    """N(μ, diag(σ²)) on R^d as the one-layer flow x = μ + σ ⊙ z: the simplest baseline."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.d = d
        self.mean = nn.Parameter(torch.zeros(d))
        self.log_std = nn.Parameter(torch.zeros(d))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log N(x; μ, diag(σ²)): (batch, d) → (batch,)."""
        z = (x - self.mean) * torch.exp(-self.log_std)
        return standard_normal_log_prob(z) - self.log_std.sum()

    def from_base(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x = μ + σ ⊙ z (batch, d) and log q(x) (batch,)."""
        return self.mean + torch.exp(self.log_std) * z, standard_normal_log_prob(z) - (
            self.log_std.sum()
        )

    def sample_with_log_prob(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """n samples (n, d) and their log-density (n,)."""
        return self.from_base(standard_normal_samples(n, self.d, like=self.mean))

    def sample(self, n: int) -> torch.Tensor:
        """n samples (n, d)."""
        return self.sample_with_log_prob(n)[0]
