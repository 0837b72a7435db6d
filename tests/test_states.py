"""Shapes, dtypes, batches, tuples, time direction, statistics and the torchdiffeq contract."""

from __future__ import annotations

import math

import pytest
import torch

from neuralode import SolverStats, odeint

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def rotation(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """dy/dt = J y on the last dimension (size 2): circles."""
    return torch.stack([-y[..., 1], y[..., 0]], dim=-1)


def circle(t: torch.Tensor, y0: torch.Tensor) -> torch.Tensor:
    """Exact solution of ``rotation`` at times t: shape (len(t), *y0.shape)."""
    c, s = torch.cos(t), torch.sin(t)
    c = c.reshape(-1, *([1] * (y0.dim() - 1)))
    s = s.reshape(-1, *([1] * (y0.dim() - 1)))
    return torch.stack([c * y0[..., 0] - s * y0[..., 1], s * y0[..., 0] + c * y0[..., 1]], -1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "dtype, tol, error", [(torch.float32, 1e-5, 1e-4), (torch.float64, 1e-9, 1e-7)]
)
def test_batched_state_any_shape(device: str, dtype: torch.dtype, tol: float, error: float) -> None:
    y0 = torch.randn(4, 3, 2, dtype=dtype, device=device)
    t = torch.linspace(0, 3, 7, dtype=dtype, device=device)
    ys = odeint(rotation, y0, t, rtol=tol, atol=tol)
    assert ys.shape == (7, 4, 3, 2) and ys.dtype == dtype and ys.device.type == device
    torch.testing.assert_close(ys, circle(t, y0), rtol=0, atol=error)


def test_tuple_state_returns_tuple_of_trajectories() -> None:
    x0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    v0 = torch.zeros(3, 1, dtype=torch.float64)
    t = torch.linspace(0, 1, 5, dtype=torch.float64)
    xs, vs = odeint(
        lambda t, s: (-s[0], torch.ones_like(s[1])), (x0, v0), t, rtol=1e-10, atol=1e-10
    )
    assert xs.shape == (5, 2) and vs.shape == (5, 3, 1)
    torch.testing.assert_close(xs, torch.exp(-t)[:, None] * x0)
    torch.testing.assert_close(vs, t[:, None, None].expand(5, 3, 1))


def test_backwards_in_time_returns_to_start() -> None:
    y0 = torch.randn(5, 2, dtype=torch.float64)
    forward = odeint(
        rotation, y0, torch.tensor([0.0, 2.0], dtype=torch.float64), rtol=1e-10, atol=1e-10
    )
    back = odeint(
        rotation, forward[-1], torch.tensor([2.0, 0.0], dtype=torch.float64), rtol=1e-10, atol=1e-10
    )
    torch.testing.assert_close(back[-1], y0, rtol=0, atol=1e-8)


def test_tensor_tolerances_broadcast_per_component() -> None:
    """Loosening atol on the hard component (a fast oscillation) saves steps; a tensor equal
    to the scalar changes nothing."""

    def field(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.stack([-y[0], torch.cos(10 * t) * torch.ones_like(y[1])])

    y0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    t = torch.tensor([0.0, 10.0], dtype=torch.float64)
    ys, tight = odeint(field, y0, t, rtol=0.0, atol=1e-8, return_stats=True)
    same, same_stats = odeint(
        field, y0, t, rtol=0.0, atol=torch.full((2,), 1e-8, dtype=torch.float64), return_stats=True
    )
    _, mixed = odeint(field, y0, t, rtol=0.0, atol=torch.tensor([1e-8, 1e-3]), return_stats=True)
    assert torch.equal(ys, same) and same_stats.nfe == tight.nfe
    assert mixed.nfe < tight.nfe / 2


def test_single_output_time_returns_y0() -> None:
    y0 = torch.randn(3)
    ys, stats = odeint(
        rotation, y0[None].expand(2, 3)[..., :2], torch.tensor([0.5]), return_stats=True
    )
    assert ys.shape == (1, 2, 2) and stats.n_steps == 0


def test_stats_count_evaluations() -> None:
    calls = 0

    def counted(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        nonlocal calls
        calls += 1
        return rotation(t, y)

    _, stats = odeint(counted, torch.tensor([1.0, 0.0]), torch.linspace(0, 5, 4), rtol=1e-6,
                      atol=1e-6, return_stats=True)  # fmt: skip
    assert isinstance(stats, SolverStats)
    assert stats.nfe == calls
    # dopri5 is FSAL: 6 evaluations per step, plus f(t0, y0) and one for the initial step.
    assert stats.nfe == 6 * stats.n_steps + 2
    assert stats.n_accepted > 0 and 0 < stats.last_dt < 5


def test_fixed_steps_count_evaluations() -> None:
    _, stats = odeint(rotation, torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), method="rk4",
                      options={"step_size": 0.1}, return_stats=True)  # fmt: skip
    assert (stats.n_accepted, stats.n_rejected, stats.nfe) == (10, 0, 40)
    assert math.isclose(stats.last_dt, 0.1, rel_tol=1e-9)


def test_pi_controller_converges_too() -> None:
    y0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    t = torch.linspace(0, 6, 4, dtype=torch.float64)
    ys = odeint(rotation, y0, t, rtol=1e-9, atol=1e-9, options={"controller": "PI"})
    torch.testing.assert_close(ys, circle(t, y0), rtol=0, atol=1e-7)


def test_same_numbers_as_torchdiffeq_on_fixed_grid() -> None:
    """The drop-in contract: rk4 (3/8 rule) on the same grid gives the same values."""
    torchdiffeq = pytest.importorskip("torchdiffeq")
    net = torch.nn.Sequential(
        torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2)
    ).double()
    y0 = torch.randn(8, 2, dtype=torch.float64)
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    func = lambda t, y: net(y)  # noqa: E731
    ours = odeint(func, y0, t, method="rk4")
    theirs = torchdiffeq.odeint(func, y0, t, method="rk4")
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


def test_adaptive_agrees_with_torchdiffeq() -> None:
    torchdiffeq = pytest.importorskip("torchdiffeq")
    y0 = torch.randn(8, 2, dtype=torch.float64)
    t = torch.linspace(0, 4, 9, dtype=torch.float64)
    ours = odeint(rotation, y0, t, rtol=1e-9, atol=1e-9)
    theirs = torchdiffeq.odeint(rotation, y0, t, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-7)


def test_norm_sees_the_state_structure_as_torchdiffeq_passes_it() -> None:
    """A user's norm gets the scaled error shaped like y0 (a tuple for tuple states), and the
    default norm of a tuple state is torchdiffeq's: the largest RMS of its parts."""
    seen = []

    def norm(error: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
        seen.append(tuple(e.shape for e in error) if isinstance(error, tuple) else error.shape)
        parts = error if isinstance(error, tuple) else (error,)
        return torch.stack([p.abs().max() for p in parts]).max()

    y0 = torch.randn(4, 3, 2, dtype=torch.float64)
    t = torch.linspace(0, 2, 3, dtype=torch.float64)
    odeint(rotation, y0, t, options={"norm": norm})
    odeint(lambda t, y: (rotation(t, y[0]), -y[1]), (y0, y0[0, 0]), t, options={"norm": norm})
    assert set(seen) == {(4, 3, 2), ((4, 3, 2), (2,))}

    def field(t: torch.Tensor, y: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return rotation(t, y[0]), -3 * y[1]

    def largest_rms(error: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return torch.stack([e.square().mean().sqrt() for e in error]).max()

    def flat_rms(error: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return torch.cat([e.reshape(-1) for e in error]).square().mean().sqrt()

    state = (torch.tensor([1.0, 0.0], dtype=torch.float64), torch.ones(5, dtype=torch.float64))
    steps = {}
    for name, option in (("default", {}), ("largest", {"norm": largest_rms}),
                         ("flat", {"norm": flat_rms})):  # fmt: skip
        _, stats = odeint(field, state, t, rtol=1e-6, atol=1e-8, options=option,
                          return_stats=True)  # fmt: skip
        steps[name] = (stats.n_accepted, stats.n_rejected, stats.nfe)
    assert steps["default"] == steps["largest"] != steps["flat"]
