"""odeint_event: event times against closed forms and finite differences, gradients by the
implicit function theorem in both gradient modes, backwards time, and no event."""

from __future__ import annotations

import json
import math

import pytest
import torch

from neuralode import EventNotFoundError, odeint, odeint_adjoint, odeint_event

T0 = torch.tensor(0.0, dtype=torch.float64)


class FreeFall(torch.nn.Module):
    """State (height, velocity); gravity g is a parameter."""

    def __init__(self, g: float = 9.81) -> None:
        super().__init__()
        self.g = torch.nn.Parameter(torch.tensor(g, dtype=torch.float64))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.stack([y[1], -self.g])


def height(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return y[0]


@pytest.mark.parametrize("interface", [odeint, odeint_adjoint], ids=["backprop", "adjoint"])
def test_free_fall_hits_the_ground_at_the_closed_form_time_with_its_gradient(interface) -> None:
    """t* = sqrt(2 h / g): dt*/dh = 1 / sqrt(2 h g), dt*/dg = -t* / (2 g); the impact speed
    v = -sqrt(2 g h) moves with t*: dv/dh = -sqrt(g / (2 h))."""
    field = FreeFall()
    h0 = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    y0 = torch.stack([h0, torch.zeros((), dtype=torch.float64)])
    event_t, ys = odeint_event(field, y0, T0, event_fn=height, odeint_interface=interface,
                               rtol=1e-8, atol=1e-10)  # fmt: skip
    g = 9.81
    exact = math.sqrt(2 * 2.0 / g)
    assert ys.shape == (2, 2)
    assert abs(event_t.item() - exact) < 1e-12
    assert abs(ys[-1, 0].item()) < 1e-12
    dt_dh, dt_dg = torch.autograd.grad(event_t, (h0, field.g), retain_graph=True)
    assert float(dt_dh) == pytest.approx(1 / math.sqrt(2 * 2.0 * g), rel=1e-9)
    assert float(dt_dg) == pytest.approx(-exact / (2 * g), rel=1e-9)
    (dv_dh,) = torch.autograd.grad(ys[-1, 1], h0)
    assert float(dv_dh) == pytest.approx(-math.sqrt(g / (2 * 2.0)), rel=1e-9)


def test_event_time_gradient_matches_finite_differences() -> None:
    """A damped pendulum released from angle a: the time its angle first reaches a/2, and
    its derivative with respect to the damping and to a, by central differences."""

    class Pendulum(torch.nn.Module):
        def __init__(self, damping: float) -> None:
            super().__init__()
            self.damping = torch.nn.Parameter(torch.tensor(damping, dtype=torch.float64))

        def forward(self, t, y):
            return torch.stack([y[1], -torch.sin(y[0]) - self.damping * y[1]])

    def event_time(damping: float, angle: torch.Tensor) -> tuple[torch.Tensor, Pendulum]:
        field = Pendulum(damping)
        y0 = torch.stack([angle, torch.zeros((), dtype=torch.float64)])
        event_t, _ = odeint_event(field, y0, T0, event_fn=lambda t, y: y[0] - angle.detach() / 2,
                                  rtol=1e-10, atol=1e-12)  # fmt: skip
        return event_t, field

    angle = torch.tensor(1.2, dtype=torch.float64, requires_grad=True)
    event_t, field = event_time(0.3, angle)
    d_damping, d_angle = torch.autograd.grad(event_t, (field.damping, angle))
    eps = 1e-5
    fd_damping = (event_time(0.3 + eps, angle.detach())[0].item()
                  - event_time(0.3 - eps, angle.detach())[0].item()) / (2 * eps)  # fmt: skip
    assert float(d_damping) == pytest.approx(fd_damping, rel=1e-6)

    # With the threshold a/2 held fixed, only the start moves with a.
    def time_from(a: float) -> float:
        field = Pendulum(0.3)
        y0 = torch.tensor([a, 0.0], dtype=torch.float64)
        return odeint_event(field, y0, T0, event_fn=lambda t, y: y[0] - 0.6,
                                  rtol=1e-10, atol=1e-12)[0].item()  # fmt: skip

    fd_angle = (time_from(1.2 + eps) - time_from(1.2 - eps)) / (2 * eps)
    assert float(d_angle) == pytest.approx(fd_angle, rel=1e-6)


def test_events_in_backwards_time() -> None:
    """From the impact at t = 1 + sqrt(2 h / g) back to the apex, where the velocity is 0: t = 1
    (a time-dependent field would not care; this one checks the clock runs backwards)."""
    g, h = 9.81, 2.0
    impact = 1.0 + math.sqrt(2 * h / g)
    y_impact = torch.tensor([0.0, -g * (impact - 1.0)], dtype=torch.float64)
    event_t, ys = odeint_event(FreeFall(g), y_impact, torch.tensor(impact, dtype=torch.float64),
                               event_fn=lambda t, y: y[1], reverse_time=True,
                               rtol=1e-8, atol=1e-10)  # fmt: skip
    assert abs(event_t.item() - 1.0) < 1e-12
    assert ys[-1, 0].item() == pytest.approx(h, abs=1e-12)


def test_tuple_state_and_event_fn_parameters() -> None:
    """The threshold of the event is a parameter: dt*/dc for height = c is 1 / v(t*)."""
    threshold = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)

    def field(t, state):
        x, v = state
        return v, -9.81 * torch.ones_like(x)

    state = (torch.tensor([2.0], dtype=torch.float64), torch.zeros(1, dtype=torch.float64))
    event_t, (_, vs) = odeint_event(field, state, T0, event_fn=lambda t, s: s[0][0] - threshold,
                                     rtol=1e-8, atol=1e-10)  # fmt: skip
    assert event_t.item() == pytest.approx(math.sqrt(2 * 1.5 / 9.81), abs=1e-12)
    (d_threshold,) = torch.autograd.grad(event_t, threshold)
    assert d_threshold.item() == pytest.approx(1 / vs[-1, 0].item(), rel=1e-9)


def test_no_event_is_a_clear_error() -> None:
    y0 = torch.tensor([2.0, 0.0], dtype=torch.float64)
    with pytest.raises(EventNotFoundError, match=r"no zero crossing of event_fn between "
                       r"t0=0 and t_max=0\.5 \(event_fn went from 2 to 0\.77"):  # fmt: skip
        odeint_event(FreeFall(), y0, T0, event_fn=height, t_max=0.5)
    with pytest.raises(EventNotFoundError, match=r"no zero crossing of event_fn up to t="):
        odeint_event(lambda t, y: -y, torch.ones(1, dtype=torch.float64), T0,
                     event_fn=lambda t, y: y[0], options={"max_num_steps": 50})  # fmt: skip
    with pytest.raises(ValueError, match=r"t_max=-1 is not after t0=0"):
        odeint_event(FreeFall(), y0, T0, event_fn=height, t_max=-1.0)


def test_bounce_times_differentiate_through_a_chain_of_events() -> None:
    """Each bounce starts where the last ended: the gradient of the third bounce time with
    respect to g and e (through two earlier event times and impact velocities) matches central
    differences."""
    from neuralode.paper.experiments.bouncing_ball import BouncingBall

    ball = BouncingBall(9.81, 0.8)
    third = ball.bounce_times(3)[-1]
    d_log_g, d_logit_e = torch.autograd.grad(third, (ball.log_g, ball.logit_e))
    eps = 1e-6
    for parameter, derivative in ((ball.log_g, d_log_g), (ball.logit_e, d_logit_e)):
        with torch.no_grad():
            parameter += eps
            up = ball.bounce_times(3)[-1].item()
            parameter -= 2 * eps
            down = ball.bounce_times(3)[-1].item()
            parameter += eps
        assert derivative.item() == pytest.approx((up - down) / (2 * eps), rel=1e-6)


@pytest.mark.slow  # (33 s: the whole command; the physics is tested above)
def test_bouncing_ball_command_recovers_gravity_and_restitution(tmp_path) -> None:
    from neuralode.paper.cli import main

    main(["bouncing-ball", "--epochs", "300", "--out", str(tmp_path / "run"),
          "--results", str(tmp_path), "--threads", "1"])  # fmt: skip
    fitted = json.loads((tmp_path / "bouncing_ball.json").read_text())["fitted"]
    assert fitted["g"] == pytest.approx(9.81, rel=0.02)
    assert fitted["restitution"] == pytest.approx(0.8, rel=0.01)
    assert (tmp_path / "bouncing_ball.png").stat().st_size > 10_000


def test_torchdiffeq_shapes_chain_of_events() -> None:
    """torchdiffeq's bouncing-ball pattern: t0 of shape (1,), an event function returning a
    (1,) tensor, each call starting from the previous event time and state. event_t is 0-d;
    the gradient of the second impact time to the first height is the closed form
    d/dh [sqrt(2h/g) + 2 e sqrt(2gh)/g] = (1 + 2e) / sqrt(2 g h)."""
    field, g, e = FreeFall(), 9.81, 0.5
    h0 = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    state = torch.stack([h0, torch.zeros((), dtype=torch.float64)])
    t0 = torch.zeros(1, dtype=torch.float64)

    def ground(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y[:1]

    for _ in range(2):
        t0, ys = odeint_event(field, state, t0, event_fn=ground, rtol=1e-9, atol=1e-11)
        assert t0.shape == ()
        state = torch.stack([ys[-1, 0] * 0.0, -e * ys[-1, 1]])
    exact = math.sqrt(2 * 2.0 / g) * (1 + 2 * e)
    assert float(t0.detach()) == pytest.approx(exact, rel=1e-9)
    (dt_dh,) = torch.autograd.grad(t0, h0)
    assert float(dt_dh) == pytest.approx((1 + 2 * e) / math.sqrt(2 * g * 2.0), rel=1e-7)


def test_learnable_event_function_that_returns_zeros_after_a_horizon() -> None:
    """torchdiffeq's learn_physics pattern: g(t, y) = y0 - c before a horizon, zeros after. An
    event at the threshold has dt*/dc = 1/v (v < 0, falling); one at the horizon, where g stops
    depending on t and y, has no gradient from g (zero, not an error)."""
    field = FreeFall()
    c = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)

    def event(horizon: float):
        def g(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return torch.where(t < horizon, y[0] - c, torch.zeros_like(t))

        return g

    y0 = torch.tensor([2.0, 0.0], dtype=torch.float64)
    event_t, ys = odeint_event(field, y0, T0, event_fn=event(10.0), rtol=1e-9, atol=1e-11)
    (dt_dc,) = torch.autograd.grad(event_t, c)
    assert float(dt_dc) == pytest.approx(1 / float(ys[-1, 1].detach()), rel=1e-7)
    event_t, _ = odeint_event(field, y0, T0, event_fn=event(0.25), rtol=1e-9, atol=1e-11)
    assert float(event_t.detach()) == pytest.approx(0.25, abs=1e-9)
    (dt_dc,) = torch.autograd.grad(event_t, c, allow_unused=True)
    assert dt_dc is None or float(dt_dc) == 0.0
