"""Data for the flow experiments: the toy densities, the density-matching targets, dequantised
images, and the sampled batch source."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from neuralode.paper.data.dequantize import bits_per_dim, dequantize_logit, downscale
from neuralode.paper.data.toy2d import TARGETS, TOY_DATASETS, reference_log_prob, sample_toy
from neuralode.paper.experiments.cnf import target_log_normalizer
from neuralode.paper.training import SampledBatches


@pytest.mark.parametrize("name", sorted(TOY_DATASETS))
def test_toy_samples_are_seeded_finite_and_in_view(name: str) -> None:
    a = sample_toy(name, 1001, np.random.default_rng(0))
    b = sample_toy(name, 1001, np.random.default_rng(0))
    c = sample_toy(name, 1001, np.random.default_rng(1))
    assert a.shape == (1001, 2) and a.dtype == np.float64 and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.abs(a).max() < 4.5  # the plotted square
    assert np.abs(a.mean(0)).max() < 0.5 and (a.std(0) > 0.9).all()


def test_toy_recipes() -> None:
    rng = np.random.default_rng(0)
    board = sample_toy("checkerboard", 10000, rng)
    assert ((np.floor(board[:, 0] / 2) + np.floor(board[:, 1] / 2)) % 2 == 0).all()
    assert np.abs(board).max() <= 4
    gaussians = sample_toy("8gaussians", 20000, rng) * 1.414
    radius = np.linalg.norm(gaussians, axis=1)
    assert abs(np.median(radius) - 4) < 0.05
    rings = np.linalg.norm(sample_toy("rings", 20000, rng), axis=1)
    for ring in (0.75, 1.5, 2.25, 3.0):
        share = np.mean(np.abs(rings - ring) < 0.3)
        assert abs(share - 0.25) < 0.02
    with pytest.raises(
        ValueError, match="unknown dataset 'spiral'; valid datasets are: 8gaussians"
    ):
        sample_toy("spiral", 10, rng)


def test_ring_target_normalizer_matches_the_closed_form() -> None:
    """∫ exp(−(r − 2)²/(2σ²)) r dr dθ = 2π · 2 · σ√(2π) up to a term of order e^{−12.5}."""
    sigma = 0.4
    expected = math.log(2 * math.pi * 2 * sigma * math.sqrt(2 * math.pi))
    assert target_log_normalizer("ring") == pytest.approx(expected, abs=1e-6)
    for name in TARGETS:
        assert math.isfinite(target_log_normalizer(name))


def test_dequantisation_log_det_and_bits_per_dim() -> None:
    pixels = torch.tensor([[0.0, 17.0, 128.0, 255.0]])
    generator = torch.Generator().manual_seed(0)
    s, log_det = dequantize_logit(pixels, alpha=0.05, generator=generator)
    generator = torch.Generator().manual_seed(0)
    y = ((pixels + torch.rand(pixels.shape, generator=generator)) / 256).requires_grad_(True)
    v = 0.05 + 0.9 * y
    s_again = torch.log(v / (1 - v))
    torch.testing.assert_close(s, s_again.detach())
    (slopes,) = torch.autograd.grad(s_again.sum(), y)  # the Jacobian is diagonal
    torch.testing.assert_close(log_det, slopes.log().sum(-1))
    # The uniform density on [0, 1)^D (log p(y) = 0) costs exactly 8 bits per dimension.
    assert bits_per_dim(torch.zeros(3), 196).tolist() == pytest.approx([8.0] * 3)


def test_downscale_averages_blocks() -> None:
    images = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4)
    small = downscale(images, 2)
    assert small.shape == (2, 2, 2) and small.dtype == np.uint8
    assert small[0, 0, 0] == np.rint(np.mean([0, 1, 4, 5]))


def test_sampled_batches_can_be_made_again_one_by_one() -> None:
    source = SampledBatches(lambda n, rng: rng.standard_normal((n, 2)), 5, 4, seed=3)
    assert len(source) == 4
    epoch = [batch[0] for batch in source.batches(1)]
    tail = [batch[0] for batch in source.batches(1, start=2)]
    assert all(b.shape == (5, 2) and b.dtype == torch.float32 for b in epoch)
    torch.testing.assert_close(tail, epoch[2:])
    assert not torch.equal(epoch[0], next(source.batches(0))[0])


@pytest.mark.parametrize("name", ["8gaussians", "moons", "circles", "rings", "checkerboard"])
def test_reference_densities_are_normalised_and_fit_their_samples(name: str) -> None:
    """Each reference density integrates to 1 on a grid, and on its own samples scores better
    than a Gaussian fitted to them (the best Gaussian cannot beat the true density on average)."""
    axis = np.arange(-6, 6, 0.1) + 0.05  # cell centres; cells tile the checkerboard exactly
    grid = np.stack(np.meshgrid(axis, axis), -1).reshape(-1, 2)
    mass = np.exp(reference_log_prob(name, grid)).sum() * 0.1**2
    assert mass == pytest.approx(1.0, abs=1e-3)
    x = sample_toy(name, 3000, np.random.default_rng(4))
    mean, cov = x.mean(0), np.cov(x.T)
    centred = x - mean
    gaussian = -0.5 * (np.einsum("ni,ij,nj->n", centred, np.linalg.inv(cov), centred))
    gaussian -= 0.5 * np.log(np.linalg.det(2 * np.pi * cov))
    assert reference_log_prob(name, x).mean() > gaussian.mean() + 0.2
    assert reference_log_prob("pinwheel", x) is None
