"""The latent ODE for irregularly sampled time series (Chen et al. 2018, section 5) and the RNN
baseline it is compared with.

Every model here takes a batch of trajectories on a common time grid with a mask of which points
each trajectory observes: values (batch, T, D), mask (batch, T) bool, times (T,). A trajectory
observes a subset of the grid, so the union of the batch's times is the grid itself, and a
single ODE solve over the grid serves the whole batch.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from .layers import mlp
from .solve import ODEModule, SolverConfig


class AutonomousField(nn.Module):
    """dz/dt = net(z), ignoring t: (batch, d) → (batch, d)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class BackwardEncoder(ODEModule):
    """A GRU run backwards in time over the observed points, fed (x_i, gap to the later
    observation); its last state gives the mean and log-variance of q(z0 | x).

    With ``ode_rnn`` (Rubanova et al. 2019), the hidden state also evolves by an ODE between
    grid points (dh/dt = MLP(h)), so that it changes over gaps without observations; the solver
    is ``solver`` (default: one rk4 step per grid interval).

    Shapes: values (batch, T, D), mask (batch, T), times (T,) → mean, logvar (batch, latent).
    """

    def __init__(
        self,
        data_dim: int,
        latent_dim: int,
        hidden: int = 25,
        ode_rnn: bool = False,
        solver: SolverConfig | None = None,
    ) -> None:
        # Observation times fall between grid points: the cubic Hermite interpolant there.
        default = SolverConfig("rk4", options={"step_size": 0.01, "interp": "cubic"})
        super().__init__(solver or default)
        self.cell = nn.GRUCell(data_dim + 1, hidden)
        self.to_posterior = nn.Linear(hidden, 2 * latent_dim)
        self.evolve = AutonomousField(mlp((hidden, hidden, hidden))) if ode_rnn else None

    def forward(
        self, values: torch.Tensor, mask: torch.Tensor, times: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch = values.shape[0]
        h = values.new_zeros(batch, self.cell.hidden_size)
        later = times[-1].expand(batch)  # time of the previously read (later) observation
        nfe = 0
        for i in range(len(times) - 1, -1, -1):
            if self.evolve is not None and i < len(times) - 1:
                h = self.solve(self.evolve, h, times[i : i + 2].flip(0))[-1]
                nfe += self.stats.nfe
            observed = mask[:, i, None]
            gap = (later - times[i])[:, None]
            h = torch.where(observed, self.cell(torch.cat((values[:, i], gap), -1), h), h)
            later = torch.where(mask[:, i], times[i], later)
        self.stats.nfe = nfe
        mean, logvar = self.to_posterior(h).chunk(2, dim=-1)
        return mean, logvar


class ELBO(NamedTuple):
    """Terms of the evidence lower bound, each averaged over the batch's trajectories.

    Attributes:
        loss: (β·KL − log-likelihood) per observed point, the quantity minimised (−ELBO per
            point when β = ``kl_weight`` = 1).
        log_likelihood: Σ over observed points of log N(x_i; decoded z(t_i), σ²) per trajectory.
        kl: KL(q(z0 | x) ‖ N(0, I)) per trajectory, in closed form.
    """

    loss: torch.Tensor
    log_likelihood: torch.Tensor
    kl: torch.Tensor


def gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, diag(exp(logvar))) ‖ N(0, I)) per row: (batch, d) → (batch,)."""
    return 0.5 * (mean.square() + logvar.exp() - 1 - logvar).sum(-1)


class LatentODE(nn.Module):
    """Encoder → z0 ~ q(z0 | x) → one ODE solve over the grid → decoder, trained as a VAE.

    Defaults are the paper's sizes: GRU encoder with 25 hidden units, latent dimension 4, a field
    and a decoder with one hidden layer of 20 units each.

    Args:
        data_dim: D, the dimension of an observation.
        latent_dim: dimension of z.
        obs_std: σ of the Gaussian likelihood.
        kl_weight: β, the weight of the KL term in the training loss (1: the ELBO; above 1 a
            β-VAE, whose posterior stays closer to the prior).
        ode_rnn: use the ODE-RNN encoder.
        solver: the latent solve (default dopri5 at rtol = atol = 1e-5, backprop).
    """

    def __init__(
        self,
        data_dim: int = 2,
        latent_dim: int = 4,
        *,
        encoder_hidden: int = 25,
        field_hidden: tuple[int, ...] = (20,),
        decoder_hidden: int = 20,
        obs_std: float = 0.1,
        kl_weight: float = 1.0,
        ode_rnn: bool = False,
        solver: SolverConfig | None = None,
    ) -> None:
        super().__init__()
        self.encoder = BackwardEncoder(data_dim, latent_dim, encoder_hidden, ode_rnn)
        field = AutonomousField(mlp((latent_dim, *field_hidden, latent_dim), nn.ELU))
        self.dynamics = _LatentDynamics(field, solver or SolverConfig(rtol=1e-5, atol=1e-5))
        self.decoder = mlp((latent_dim, decoder_hidden, data_dim), nn.ReLU)
        self.obs_std = obs_std
        self.kl_weight = kl_weight

    def latent_path(self, z0: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        """z at every time of ``times`` (from times[0]): (batch, len(times), latent)."""
        return self.dynamics(z0, times).transpose(0, 1)

    def forward(
        self,
        values: torch.Tensor,
        mask: torch.Tensor,
        times: torch.Tensor,
        predict_times: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predictions (batch, len(predict_times), D) from the posterior mean of z0; the
        prediction times start at times[0] and default to ``times``."""
        mean, _ = self.encoder(values, mask, times)
        return self.decoder(
            self.latent_path(mean, times if predict_times is None else predict_times)
        )

    def elbo(
        self,
        values: torch.Tensor,
        mask: torch.Tensor,
        times: torch.Tensor,
        seen: torch.Tensor | None = None,
    ) -> ELBO:
        """The ELBO with one reparameterised sample of z0 per trajectory: q(z0 | the points of
        ``seen``, by default all of ``mask``), scored on every point of ``mask``. Shapes:
        values (batch, T, D), mask and seen (batch, T) bool, times (T,)."""
        mean, logvar = self.encoder(values, mask if seen is None else seen, times)
        z0 = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
        decoded = self.decoder(self.latent_path(z0, times))
        squared = (values - decoded).square().sum(-1) / self.obs_std**2
        dims = values.shape[-1]
        log_norm = dims * (math.log(self.obs_std) + 0.5 * math.log(2 * math.pi))
        log_likelihood = ((-0.5 * squared - log_norm) * mask).sum(-1)
        kl = gaussian_kl(mean, logvar)
        loss = (self.kl_weight * kl - log_likelihood).sum() / mask.sum()
        return ELBO(loss, log_likelihood.mean(), kl.mean())


class _LatentDynamics(ODEModule):
    """The latent solve: z0 (batch, latent), times (T,) → z (T, batch, latent)."""

    def __init__(self, field: nn.Module, solver: SolverConfig) -> None:
        super().__init__(solver)
        self.field = field

    def forward(self, z0: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        return self.solve(self.field, z0, times.to(z0))


class GapRNN(nn.Module):
    """The RNN baseline: a GRU reads the observations forwards, fed (x_i, gap since the previous
    observation); a head predicts x at any later time from the state and the gap to it.

    Inside the observation window it predicts every grid point from the last observation before
    it; after the window it rolls out on the grid, feeding back its own predictions.

    Shapes: values (batch, T, D), mask (batch, T) bool, times (T,) → (batch, T, D) predictions;
    ``window`` grid points may be observed, the rest are extrapolated.
    """

    def __init__(self, data_dim: int = 2, hidden: int = 25, head_hidden: int = 20) -> None:
        super().__init__()
        self.cell = nn.GRUCell(data_dim + 1, hidden)
        self.head = mlp((hidden + 1, head_hidden, data_dim), nn.ReLU)

    def forward(
        self, values: torch.Tensor, mask: torch.Tensor, times: torch.Tensor, window: int
    ) -> torch.Tensor:
        batch = values.shape[0]
        h = values.new_zeros(batch, self.cell.hidden_size)
        last = times[0].expand(batch)  # time of the last observation read (t0 before any)
        predictions = []
        for i in range(len(times)):
            gap = (times[i] - last)[:, None]
            prediction = self.head(torch.cat((h, gap), -1))
            predictions.append(prediction)
            if i < window:
                observed = mask[:, i]
                x = values[:, i]
            else:
                observed = torch.ones_like(mask[:, i])
                x = prediction
            h = torch.where(observed[:, None], self.cell(torch.cat((x, gap), -1), h), h)
            last = torch.where(observed, times[i], last)
        return torch.stack(predictions, dim=1)

    def loss(self, values: torch.Tensor, mask: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        """Mean squared error of the predictions at the observed points (before reading them)."""
        predictions = self(values, mask, times, window=len(times))
        squared = (predictions - values).square().sum(-1)
        return (squared * mask).sum() / mask.sum()
