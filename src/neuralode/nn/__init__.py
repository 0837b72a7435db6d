"""Modules: the NeuralODE block (with augmentation and conditioning), the solver configuration
modules share, time-conditioned layers for vector fields, continuous normalizing flows (with the
Jacobian traces they need and the discrete flows they are compared with), and the latent ODE."""

from .cnf import (
    CNF,
    ConcatSquashMLP,
    HyperNetField,
    Regularization,
    standard_normal_log_prob,
    standard_normal_samples,
)
from .flows import DiagonalGaussian, PlanarFlow, PlanarLayer
from .latent_ode import ELBO, GapRNN, LatentODE, gaussian_kl
from .layers import ConcatConv2d, ConcatLinear, MLPField
from .neural_ode import ConditionedField, NeuralODE
from .solve import ODEModule, SolverConfig
from .trace import exact_trace, hutchinson_trace, sample_noise

__all__ = [
    "CNF",
    "ELBO",
    "ConcatConv2d",
    "ConcatLinear",
    "ConcatSquashMLP",
    "ConditionedField",
    "DiagonalGaussian",
    "GapRNN",
    "HyperNetField",
    "LatentODE",
    "MLPField",
    "NeuralODE",
    "ODEModule",
    "PlanarFlow",
    "PlanarLayer",
    "Regularization",
    "SolverConfig",
    "exact_trace",
    "gaussian_kl",
    "hutchinson_trace",
    "sample_noise",
    "standard_normal_log_prob",
    "standard_normal_samples",
]
