"""torchdiffeq's API beyond the basics: complex states, the adjoint's norm, FFJORD-style
adjoint parameters, ``scipy_solver``, ``event_fn`` / ``odeint_dense`` and the ``dtype`` option."""

from __future__ import annotations

import copy
import math
import re
import warnings

import pytest
import torch

from neuralode import ODEInputError, odeint, odeint_adjoint, odeint_dense

# -- complex states ---------------------------------------------------------------------------


class Spin(torch.nn.Module):
    """dy/dt = (i w − d) y: y(t) = exp((i w − d) t) y0."""

    def __init__(self, w: float = 1.3, d: float = 0.1) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(w, dtype=torch.float64))
        self.d = d

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        assert y.is_complex() and not t.is_complex()
        return (1j * self.w - self.d) * y


@pytest.mark.parametrize(
    "dtype, tol, error", [(torch.complex64, 1e-6, 1e-4), (torch.complex128, 1e-10, 1e-8)]
)
def test_complex_state_matches_closed_form(dtype: torch.dtype, tol: float, error: float) -> None:
    real = dtype.to_real()
    y0 = torch.tensor([[1 + 0.5j, -0.3 + 2j], [0.0, 1j]], dtype=dtype)
    w = 2.0
    t = torch.linspace(0, 3, 7, dtype=real)
    ys = odeint(lambda t, y: 1j * w * y, y0, t, rtol=tol, atol=tol)
    assert ys.dtype == dtype and ys.shape == (7, 2, 2)
    exact = torch.exp(1j * w * t.to(torch.float64))[:, None, None] * y0.to(torch.complex128)
    assert (ys.to(torch.complex128) - exact).abs().max() < error


def test_complex_tuple_state() -> None:
    y0 = (
        torch.tensor([1 + 1j], dtype=torch.complex128),
        torch.tensor([[2j, 0.5]], dtype=torch.complex128),
    )
    t = torch.tensor([0.0, 0.7, 1.5], dtype=torch.float64)
    ys = odeint(lambda t, y: (1j * y[0], -2j * y[1]), y0, t, rtol=1e-10, atol=1e-10)
    assert isinstance(ys, tuple) and ys[0].dtype == ys[1].dtype == torch.complex128
    exact0 = torch.exp(1j * t)[:, None] * y0[0]
    exact1 = torch.exp(-2j * t)[:, None, None] * y0[1]
    assert (ys[0] - exact0).abs().max() < 1e-8
    assert (ys[1] - exact1).abs().max() < 1e-8


def test_complex_tolerances_and_norm_mean_what_torchdiffeq_means() -> None:
    """The error norm is torchdiffeq's on the complex tensor: the RMS over entries of
    |error / scale| (the modulus); with rtol = 0 the complex solve takes exactly the steps of
    the real-view solve under that norm. A user's norm gets the complex scaled error."""
    y0 = torch.tensor([1 + 0.5j, -0.3 + 2j, 0.2j], dtype=torch.complex128)
    t = torch.linspace(0, 2, 3, dtype=torch.float64)
    ys, stats = odeint(lambda t, y: 1j * y, y0, t, rtol=0.0, atol=1e-6, return_stats=True)

    def pairs(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # the same field on (3, 2)
        return torch.stack([-y[:, 1], y[:, 0]], dim=-1)

    def entry_rms(error: torch.Tensor) -> torch.Tensor:
        return error.square().sum(-1).mean().sqrt()

    real, real_stats = odeint(pairs, torch.view_as_real(y0).clone(), t, rtol=0.0, atol=1e-6,
                              options={"norm": entry_rms}, return_stats=True)  # fmt: skip
    assert stats.nfe == real_stats.nfe  # the same steps, to the rounding of the norm's sum:
    assert math.isclose(stats.last_dt, real_stats.last_dt, rel_tol=1e-12)
    torch.testing.assert_close(torch.view_as_real(ys), real, rtol=0, atol=1e-14)
    # Per-component RMS of the real view (no modulus) would take other steps:
    _, plain = odeint(pairs, torch.view_as_real(y0).clone(), t, rtol=0.0, atol=1e-6,
                      return_stats=True)  # fmt: skip
    assert not math.isclose(plain.last_dt, stats.last_dt, rel_tol=1e-6)

    seen = []

    def norm(error: torch.Tensor) -> torch.Tensor:
        seen.append((error.dtype, error.shape))
        return error.abs().max()

    odeint(lambda t, y: 1j * y, y0, t, options={"norm": norm})
    assert set(seen) == {(torch.complex128, (3,))}


def test_complex_agrees_with_torchdiffeq() -> None:
    torchdiffeq = pytest.importorskip("torchdiffeq")
    y0 = torch.randn(4, 3, dtype=torch.complex128)
    t = torch.linspace(0, 3, 5, dtype=torch.float64)
    ours = odeint(Spin(), y0, t, rtol=1e-9, atol=1e-9)
    theirs = torchdiffeq.odeint(Spin(), y0, t, rtol=1e-9, atol=1e-9)
    assert (ours - theirs).abs().max() < 1e-7


def _complex_loss(ys: torch.Tensor) -> torch.Tensor:
    last = ys[-1]
    return (last.real**2 + 3 * last.imag).sum() + ys[1].abs().sum()


@pytest.mark.parametrize("gradient", ["backprop", "adjoint"])
def test_complex_gradients_match_finite_differences(gradient: str) -> None:
    func = Spin()
    y0 = torch.tensor([1 + 0.5j, -0.2 + 0.1j], dtype=torch.complex128, requires_grad=True)
    t = torch.tensor([0.0, 0.8, 2.0], dtype=torch.float64, requires_grad=True)
    kwargs = {"rtol": 1e-11, "atol": 1e-12}
    loss = _complex_loss(odeint(func, y0, t, gradient=gradient, **kwargs))
    grad_y0, grad_w, grad_t = torch.autograd.grad(loss, (y0, func.w, t))

    def value() -> float:
        with torch.no_grad():
            return float(_complex_loss(odeint(func, y0, t, **kwargs)))

    eps = 1e-6

    def difference(tensor: torch.Tensor, index: int, step: complex) -> float:
        with torch.no_grad():
            tensor.view(-1)[index] += step
            up = value()
            tensor.view(-1)[index] -= 2 * step
            down = value()
            tensor.view(-1)[index] += step
        return (up - down) / (2 * eps)

    # PyTorch's convention for a real loss of complex z: grad = dL/dRe z + i dL/dIm z.
    for index in range(2):
        expected = complex(difference(y0, index, eps), difference(y0, index, 1j * eps))
        assert abs(complex(grad_y0[index]) - expected) < 1e-6
    assert abs(float(grad_w) - difference(func.w, 0, eps)) < 1e-6
    for index in range(3):
        assert abs(float(grad_t[index]) - difference(t, index, eps)) < 1e-6


def test_complex_input_checks() -> None:
    with pytest.raises(ODEInputError, match="complex64 or complex128"):
        odeint(lambda t, y: y, torch.ones(2, dtype=torch.int64), torch.tensor([0.0, 1.0]))
    y0 = torch.ones(2, dtype=torch.complex64)
    with pytest.raises(ODEInputError, match="dtype of y"):
        odeint(lambda t, y: y.real, y0, torch.tensor([0.0, 1.0]))


def test_complex_event_time_and_its_gradient() -> None:
    """y' = i w y from 1: Re y = cos(w t) first vanishes at t* = π / (2w), dt*/dw = −π/(2w²)."""
    from neuralode import odeint_event

    func = Spin(w=1.7, d=0.0)
    y0 = torch.tensor([1 + 0j], dtype=torch.complex128)
    t0 = torch.tensor(0.0, dtype=torch.float64)
    event_t, ys = odeint_event(func, y0, t0, event_fn=lambda t, y: y.real.sum(), rtol=1e-10,
                               atol=1e-12)  # fmt: skip
    assert abs(float(event_t.detach()) - torch.pi / (2 * 1.7)) < 1e-8
    assert ys.dtype == torch.complex128 and abs(float(ys[-1].real.detach())) < 1e-8
    (grad_w,) = torch.autograd.grad(event_t, func.w)
    assert abs(float(grad_w) + torch.pi / (2 * 1.7**2)) < 1e-6


# -- the adjoint's norm -----------------------------------------------------------------------


class Tanh(torch.nn.Module):
    def __init__(self, dim: int = 2) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(dim, dim).double()
        self.scale = torch.nn.Parameter(torch.ones(1, dtype=torch.float64))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.scale * torch.tanh(self.linear(y))


class TupleTanh(Tanh):
    def forward(self, t: torch.Tensor, y: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return super().forward(t, y[0]), -y[1] * self.scale


def _recording_norm(seen: list) -> object:
    def norm(error: tuple[torch.Tensor, ...]) -> torch.Tensor:
        seen.append(tuple(tuple(e.shape) for e in error))
        return torch.stack([e.abs().max() for e in error]).max()

    return norm


@pytest.mark.parametrize("tuple_state", [False, True])
def test_adjoint_norm_gets_torchdiffeqs_structure(tuple_state: bool) -> None:
    """A callable adjoint norm gets (t, y, adj_y, *adj_params) — (t, *y, *adj_y, *adj_params)
    for tuple states — shaped as torchdiffeq's odeint_adjoint passes them."""
    torchdiffeq = pytest.importorskip("torchdiffeq")
    func = TupleTanh() if tuple_state else Tanh()
    y0 = torch.randn(3, 2, dtype=torch.float64)
    state = (y0, torch.ones(4, dtype=torch.float64)) if tuple_state else y0
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    structures = []
    for solver in (odeint_adjoint, torchdiffeq.odeint_adjoint):
        seen: list = []
        ys = solver(func, state, t, adjoint_options={"norm": _recording_norm(seen)})
        loss = sum(y.sum() for y in ys) if tuple_state else ys.sum()
        loss.backward()
        structures.append(set(seen))
    ours, theirs = structures
    parts = ((3, 2), (4,)) if tuple_state else ((3, 2),)
    expected = ((), *parts, *parts, (1,), (2, 2), (2,))  # scale, weight, bias
    assert ours == theirs == {expected}


def test_adjoint_default_norm_and_seminorm_are_torchdiffeqs() -> None:
    """The default adjoint norm is torchdiffeq's default_adjoint_norm (the forward norm of y and
    of adj_y, the RMS of each parameter's gradient, their largest) and 'seminorm' its
    adjoint_seminorm: the same callables give the same backward steps; the seminorm takes fewer
    and the gradients agree."""

    def rms(x: torch.Tensor) -> torch.Tensor:
        return x.square().mean().sqrt()

    def default_norm(error: tuple[torch.Tensor, ...]) -> torch.Tensor:
        t, y, adj_y, *params = error
        return torch.stack([t.abs(), rms(y), rms(adj_y), *(rms(p) for p in params)]).max()

    def seminorm(error: tuple[torch.Tensor, ...]) -> torch.Tensor:
        t, y, adj_y, *_ = error
        return torch.stack([t.abs(), rms(y), rms(adj_y)]).max()

    func = Tanh()
    y0 = torch.randn(16, 2, dtype=torch.float64)
    t = torch.tensor([0.0, 2.0], dtype=torch.float64)
    results = {}
    for name, options in (("default", None), ("default_callable", {"norm": default_norm}),
                          ("seminorm", {"norm": "seminorm"}),
                          ("seminorm_callable", {"norm": seminorm})):  # fmt: skip
        ys, stats = odeint_adjoint(func, y0, t, rtol=1e-6, atol=1e-6, adjoint_options=options,
                                   return_stats=True)  # fmt: skip
        grads = torch.autograd.grad(ys[-1].square().sum(), tuple(func.parameters()))
        results[name] = (stats.backward_nfe, grads)
    assert results["default"][0] == results["default_callable"][0]
    assert results["seminorm"][0] == results["seminorm_callable"][0]
    assert results["seminorm"][0] < results["default"][0]
    for a, b in zip(results["default"][1], results["seminorm"][1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("state", ["tensor", "tuple", "complex"])
def test_default_adjoint_norm_is_the_largest_rms_of_each_part(state: str) -> None:
    """The default adjoint norm (one segmented sum of squares) equals the largest of the RMS of
    each part of y, each part of adj_y and each parameter's gradient (an empty parameter left
    out; a complex entry's two halves one entry); the seminorm leaves the gradients out."""
    from neuralode.core.config import make_problem
    from neuralode.gradients.adjoint import _augmented_norm

    y0: object = {
        "tensor": torch.ones(3, 2, dtype=torch.float64),
        "tuple": (torch.ones(3, 2, dtype=torch.float64), torch.ones(4, dtype=torch.float64)),
        "complex": torch.ones(5, dtype=torch.complex128),
    }[state]
    problem = make_problem(lambda t, y: y, y0, torch.tensor([0.0, 1.0]), 1e-6, 1e-6, None, None)
    params = [torch.ones(2, 3), torch.ones(0), torch.ones(4)]
    size = problem.layout.size
    parts = problem.layout.numels if problem.layout.is_tuple else [size]
    per_entry = 2 if state == "complex" else 1
    error = torch.randn(2 * size + 10, dtype=torch.float64) * torch.linspace(0.1, 3, 2 * size + 10)

    def rms(x: torch.Tensor, per: int = 1) -> torch.Tensor:
        return (x.square().sum() / (x.numel() / per)).sqrt()

    states = [rms(x, per_entry) for x in error[: 2 * size].split(parts * 2)]
    grads = [rms(g) for g in error[2 * size :].split([6, 0, 4]) if g.numel()]
    expected = torch.stack(states + grads).max()
    torch.testing.assert_close(_augmented_norm(None, problem, params)(error), expected)
    seminorm = _augmented_norm("seminorm", problem, params)(error)
    torch.testing.assert_close(seminorm, torch.stack(states).max())


# -- FFJORD-style adjoints --------------------------------------------------------------------


class _ConcatNet(torch.nn.Module):
    def __init__(self, dim: int = 2, hidden: int = 16) -> None:
        super().__init__()
        self.l1 = torch.nn.Linear(dim + 1, hidden).double()
        self.l2 = torch.nn.Linear(hidden + 1, dim).double()

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        tt = t.expand(z.shape[0], 1)
        return self.l2(torch.cat([torch.tanh(self.l1(torch.cat([z, tt], 1))), tt], 1))


class FFJORDFunc(torch.nn.Module):
    """FFJORD's ODEfunc: (z, log p) with the exact trace, marking z and t as requiring grad
    inside the call, and a captured tensor (a noise buffer) that is no parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.diffeq = _ConcatNet()
        self.noise = torch.randn(8, 2, dtype=torch.float64)  # captured, no grad
        self.nfe = 0

    def forward(
        self, t: torch.Tensor, states: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, ...]:
        z, _ = states
        self.nfe += 1
        with torch.set_grad_enabled(True):
            z.requires_grad_(True)
            t.requires_grad_(True)
            dz = self.diffeq(t, z) + 0.0 * self.noise
            div = sum(
                torch.autograd.grad(dz[:, i].sum(), z, create_graph=True)[0][:, i]
                for i in range(z.shape[1])
            )
        return dz, -div[:, None]


def test_ffjord_adjoint_costs_what_torchdiffeqs_costs_and_does_not_warn() -> None:
    """odeint_adjoint(adjoint_params=tuple(model.parameters())) on an FFJORD CNF: the same
    forward and backward evaluations as torchdiffeq's (no extra evaluation to check the
    parameters), the same gradients, and no warning (z, t marked inside func are ours)."""
    torchdiffeq = pytest.importorskip("torchdiffeq")
    func = FFJORDFunc()
    x = torch.randn(8, 2, dtype=torch.float64)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    results = []
    for solver in (odeint_adjoint, torchdiffeq.odeint_adjoint):
        func.nfe = 0
        z, logp = solver(func, (x, torch.zeros(8, 1, dtype=torch.float64)), t, method="rk4",
                         options={"step_size": 0.1},
                         adjoint_params=tuple(func.parameters()))  # fmt: skip
        forward = func.nfe
        loss = (0.5 * z[-1] ** 2).sum() + logp[-1].sum()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            grads = torch.autograd.grad(loss, tuple(func.parameters()))
        results.append((forward, func.nfe - forward, grads))
    (ours_f, ours_b, ours_g), (theirs_f, theirs_b, theirs_g) = results
    assert (ours_f, ours_b) == (theirs_f, theirs_b) == (40, 40)
    for a, b in zip(ours_g, theirs_g, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


class _SharedContext:
    """FFJORD's per-call context object: its regularisers read what the field computed."""


class RegularizedFFJORD(torch.nn.Module):
    """FFJORD's RegularizedODEfunc: state (z, log p, r1, r2) with 0-d regularisation parts
    (its --l1int and kinetic energy), built each call from a fresh context object."""

    def __init__(self) -> None:
        super().__init__()
        self.odefunc = FFJORDFunc()
        self.nfe = 0

    def forward(self, t: torch.Tensor, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        self.nfe += 1
        context = _SharedContext()
        context.dz, dlogp = self.odefunc(t, state[:2])
        return context.dz, dlogp, context.dz.abs().mean(), (context.dz**2).mean()


@pytest.mark.parametrize("method", ["rk4", "dopri5"])
def test_ffjord_with_regularisers_trains_as_with_torchdiffeq(method: str) -> None:
    """A few Adam steps through odeint_adjoint from the same start: the same losses; with fixed
    steps the same evaluations as torchdiffeq, forward and backward; with dopri5 never more
    (torchdiffeq's last forward step may overshoot t1 and cost a step more, ours ends on t1;
    its backward error control also covers a time-gradient channel, which ours computes
    apart)."""
    torchdiffeq = pytest.importorskip("torchdiffeq")
    torch.manual_seed(0)
    start = RegularizedFFJORD()
    x = torch.randn(8, 2, dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    runs = []
    for solver in (odeint_adjoint, torchdiffeq.odeint_adjoint):
        func = copy.deepcopy(start)
        optimizer = torch.optim.Adam(func.parameters(), lr=1e-2)
        record = []
        for _ in range(3):
            zero = torch.zeros((), dtype=torch.float64)
            state = (x, torch.zeros(8, 1, dtype=torch.float64), zero, zero.clone())
            func.nfe = 0
            options = {"step_size": 0.1} if method == "rk4" else None
            z, logp, l1, kinetic = solver(func, state, t, rtol=1e-5, atol=1e-5, method=method,
                                          options=options,
                                          adjoint_params=tuple(func.parameters()))  # fmt: skip
            forward = func.nfe
            regularisers = 0.01 * (l1[-1] + kinetic[-1])
            loss = (0.5 * z[-1] ** 2).sum(1).mean() - logp[-1].mean() + regularisers
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            record.append((forward, func.nfe - forward, loss.item()))
        runs.append(record)
    for (ours_f, ours_b, ours_loss), (theirs_f, theirs_b, theirs_loss) in zip(*runs, strict=True):
        if method == "rk4":
            assert (ours_f, ours_b) == (theirs_f, theirs_b), runs
        assert ours_b <= theirs_b and ours_f <= theirs_f, runs
        assert abs(ours_loss - theirs_loss) < 1e-5, runs


def test_adjoint_warns_once_of_a_captured_tensor_that_requires_grad() -> None:
    weight = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    shift = torch.randn(2, dtype=torch.float64, requires_grad=True)  # captured, unlisted
    y0 = torch.randn(3, 2, dtype=torch.float64)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    ys = odeint_adjoint(lambda t, y: torch.tanh(y @ weight + shift), y0, t,
                        adjoint_params=(weight,))  # fmt: skip
    with pytest.warns(RuntimeWarning, match=r"pass them in adjoint_params") as record:
        ys.sum().backward()
    assert len(record) == 1 and "shapes (2,)" in str(record[0].message)
    assert weight.grad is not None and shift.grad is None


# -- scipy_solver -----------------------------------------------------------------------------

SCIPY_SOLVERS = ["RK45", "RK23", "DOP853", "Radau", "BDF", "LSODA"]
DAMPED = torch.tensor([[-0.1, -1.0], [1.0, -0.1]], dtype=torch.float64)


class Damped(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Parameter(DAMPED.clone())

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y @ self.a.T


@pytest.mark.parametrize("solver", SCIPY_SOLVERS)
def test_scipy_solver_is_solve_ivp(solver: str) -> None:
    integrate = pytest.importorskip("scipy.integrate")
    y0 = torch.tensor([1.0, 0.5], dtype=torch.float64)
    t = torch.linspace(0, 5, 6, dtype=torch.float64)
    ys, stats = odeint(lambda t, y: DAMPED @ y, y0, t, rtol=1e-6, atol=1e-8, method="scipy_solver",
                       options={"solver": solver}, return_stats=True)  # fmt: skip
    reference = integrate.solve_ivp(
        lambda t, y: DAMPED.numpy() @ y, (0.0, 5.0), y0.numpy(), method=solver,
        t_eval=t.numpy(), rtol=1e-6, atol=1e-8,
    )  # fmt: skip
    assert ys.dtype == torch.float64 and ys.shape == (6, 2)
    torch.testing.assert_close(ys, torch.from_numpy(reference.y.T), rtol=0, atol=1e-12)
    # Every call of func counts, the finite-difference Jacobians' too (which Radau and BDF leave
    # out of nfev).
    if solver in ("Radau", "BDF"):
        assert stats.nfe >= reference.nfev + 2 * reference.njev
    else:
        assert stats.nfe == reference.nfev


@pytest.mark.filterwarnings("ignore:The following arguments have no effect")  # (torchdiffeq's)
def test_scipy_solver_options_and_defaults_are_torchdiffeqs() -> None:
    """Default solver LSODA; max_step and min_step reach solve_ivp; backwards time, tuple
    states and float32 as torchdiffeq gives them."""
    torchdiffeq = pytest.importorskip("torchdiffeq")
    integrate = pytest.importorskip("scipy.integrate")
    y0 = torch.tensor([1.0, 0.5], dtype=torch.float64)
    t = torch.linspace(0, 5, 6, dtype=torch.float64)
    field = Damped().requires_grad_(False)  # (no warning that no gradient flows)
    for options in ({}, {"solver": "RK45", "max_step": 0.05}, {"solver": "LSODA", "min_step": 1e-3},
                    {"solver": "RK23"}):  # fmt: skip
        for times in (t, t.flip(0)):
            ours = odeint(field, y0, times, method="scipy_solver", options=options)
            theirs = torchdiffeq.odeint(field, y0, times, method="scipy_solver", options=options)
            torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-13)
    _, fine = odeint(field, y0, t, method="scipy_solver", options={"solver": "RK45",
                     "max_step": 0.05}, return_stats=True)  # fmt: skip
    _, coarse = odeint(field, y0, t, method="scipy_solver", options={"solver": "RK45"},
                       return_stats=True)  # fmt: skip
    assert fine.nfe > 6 * 100 > coarse.nfe  # at least 100 steps of 6 evaluations
    default = integrate.solve_ivp(
        lambda t, y: DAMPED.numpy() @ y, (0.0, 5.0), y0.numpy(), method="LSODA",
        t_eval=t.numpy(), rtol=1e-7, atol=1e-9,
    )  # fmt: skip
    ys = odeint(field, y0, t, method="scipy_solver")
    torch.testing.assert_close(ys, torch.from_numpy(default.y.T), rtol=0, atol=1e-13)
    pair = odeint(lambda t, y: (-y[0], 2 * y[1]), (y0[:1].float(), y0.float()), t,
                  method="scipy_solver", options={"solver": "DOP853"})  # fmt: skip
    assert pair[0].dtype == torch.float32 and pair[1].shape == (6, 2)
    torch.testing.assert_close(pair[0][:, 0], torch.exp(-t).float(), rtol=1e-5, atol=1e-6)


def test_scipy_solver_gradients() -> None:
    """As in torchdiffeq: odeint's solution carries no gradient (here with a warning saying
    so); odeint_adjoint's does, its backward solve by scipy too."""
    pytest.importorskip("scipy")
    field = Damped()
    y0 = torch.tensor([1.0, 0.5], dtype=torch.float64, requires_grad=True)
    t = torch.linspace(0, 2, 3, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="carries no gradient"):
        ys = odeint(field, y0, t, method="scipy_solver")
    assert not ys.requires_grad
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ys = odeint_adjoint(field, y0, t, rtol=1e-10, atol=1e-10, method="scipy_solver",
                            options={"solver": "DOP853"})  # fmt: skip
        grads = torch.autograd.grad(ys[-1].sum(), (y0, field.a))
    exact = odeint(field, y0, t, rtol=1e-11, atol=1e-11)
    for a, b in zip(grads, torch.autograd.grad(exact[-1].sum(), (y0, field.a)), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)


def test_scipy_solver_option_checks() -> None:
    y0, t = torch.ones(2, dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64)
    with pytest.raises(
        ODEInputError, match=r"must be one of RK45, RK23, DOP853, Radau, BDF, LSODA"
    ):
        odeint(lambda t, y: -y, y0, t, method="scipy_solver", options={"solver": "rk4"})
    with pytest.raises(ODEInputError, match=r"unknown option\(s\) \['step_size'\]"):
        odeint(lambda t, y: -y, y0, t, method="scipy_solver", options={"step_size": 0.1})
    with pytest.raises(ODEInputError, match="option 'max_step' must be positive"):
        odeint(lambda t, y: -y, y0, t, method="scipy_solver", options={"max_step": 0})


# -- odeint(event_fn=...), odeint_dense -------------------------------------------------------


def _rotation(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.stack([-y[1], y[0]])


@pytest.mark.parametrize("backwards", [False, True])
def test_odeint_event_fn_is_torchdiffeqs(backwards: bool) -> None:
    """(event_t, solution at [t0, event_t]) as torchdiffeq returns them; t[1] only gives the
    direction; a multi-entry event_fn stops at its first entry's crossing."""
    torchdiffeq = pytest.importorskip("torchdiffeq")
    y0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    t = torch.tensor([0.0, -0.1 if backwards else 0.1], dtype=torch.float64)
    sign = -1.0 if backwards else 1.0
    for event_fn, expected in (
        (lambda t, y: y[0], sign * torch.pi / 2),
        (lambda t, y: torch.stack([y[0] - 0.5, sign * y[1] - 0.3]), sign * math.asin(0.3)),
    ):
        event_t, ys = odeint(_rotation, y0, t, rtol=1e-10, atol=1e-10, event_fn=event_fn)
        their_t, theirs = torchdiffeq.odeint(_rotation, y0, t, rtol=1e-10, atol=1e-10,
                                             event_fn=event_fn)  # fmt: skip
        assert event_t.shape == () and event_t.dtype == torch.float64
        assert abs(float(event_t) - expected) < 1e-9
        assert abs(float(event_t) - float(their_t)) < 1e-8
        assert ys.shape == (2, 2)
        torch.testing.assert_close(ys, theirs, rtol=0, atol=1e-8)
        exact = torch.tensor([math.cos(expected), math.sin(expected)], dtype=torch.float64)
        torch.testing.assert_close(ys[1], exact, rtol=0, atol=1e-8)


@pytest.mark.parametrize("adjoint", [False, True])
def test_odeint_event_fn_gradients_are_those_of_a_solve_to_event_t(adjoint: bool) -> None:
    """As in torchdiffeq, event_t has no gradient here and the solution is differentiated as a
    solve to the fixed time event_t: d y(t*)/d y0 = R(t*) for the rotation (t* = π/2)."""
    y0 = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    if adjoint:
        event_t, ys = odeint_adjoint(_rotation, y0, t, rtol=1e-10, atol=1e-10,
                                     event_fn=lambda t, y: y[0], adjoint_params=())  # fmt: skip
    else:
        event_t, ys = odeint(_rotation, y0, t, rtol=1e-10, atol=1e-10, event_fn=lambda t, y: y[0])
    assert not event_t.requires_grad
    (grad,) = torch.autograd.grad(ys[-1] @ torch.tensor([1.0, 2.0], dtype=torch.float64), y0)
    # y(t*) = R y0 with R = [[0, -1], [1, 0]] at t* = π/2: grad = Rᵀ [1, 2] = [2, -1]
    torch.testing.assert_close(grad, torch.tensor([2.0, -1.0], dtype=torch.float64), rtol=0,
                               atol=1e-7)  # fmt: skip


def test_odeint_dense_is_torchdiffeqs() -> None:
    torchdiffeq = pytest.importorskip("torchdiffeq")
    y0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    t0, t1 = torch.tensor(0.0, dtype=torch.float64), torch.tensor(3.0, dtype=torch.float64)
    ours = odeint_dense(_rotation, y0, t0, t1, rtol=1e-9, atol=1e-9)
    theirs = torchdiffeq.odeint_dense(_rotation, y0, t0, t1, rtol=1e-9, atol=1e-9)
    for time in (0.3, 1.0, 2.5, 2.99):
        at = torch.tensor(time, dtype=torch.float64)
        assert ours(at).shape == (2,)
        exact = torch.tensor([math.cos(time), math.sin(time)], dtype=torch.float64)
        torch.testing.assert_close(ours(at), exact, rtol=0, atol=1e-8)
        torch.testing.assert_close(ours(at), theirs(at), rtol=0, atol=1e-8)
    times = torch.linspace(0, 3, 7, dtype=torch.float64)
    torch.testing.assert_close(ours(times), torch.stack([times.cos(), times.sin()], -1),
                               rtol=0, atol=1e-8)  # fmt: skip
    # any method, tuple states and t1 < t0 too
    pair = odeint_dense(lambda t, y: (-y[0], y[1]), (y0, y0[:1]), 0.0, -1.0, method="tsit5",
                        rtol=1e-9, atol=1e-9)  # fmt: skip
    first, second = pair(torch.tensor(-0.5, dtype=torch.float64))
    torch.testing.assert_close(first, y0 * math.exp(0.5), rtol=1e-7, atol=0)
    torch.testing.assert_close(second, y0[:1] * math.exp(-0.5), rtol=1e-7, atol=0)


# -- option dtype -----------------------------------------------------------------------------


def test_dtype_option_is_accepted_and_checked() -> None:
    """torchdiffeq's options={'dtype': ...} (its time dtype) is accepted for any method and
    changes nothing (time is float64 here); anything but a floating dtype is refused."""
    y0 = torch.tensor([1.0, 2.0], dtype=torch.float32)
    t = torch.linspace(0, 1, 3)
    plain, plain_stats = odeint(lambda t, y: -y, y0, t, return_stats=True)
    for dtype in (torch.float32, torch.float64):
        ys, stats = odeint(lambda t, y: -y, y0, t, options={"dtype": dtype}, return_stats=True)
        assert torch.equal(ys, plain) and stats.nfe == plain_stats.nfe
        fixed = odeint(lambda t, y: -y, y0, t, method="rk4", options={"dtype": dtype})
        assert fixed.dtype == torch.float32
    message = (
        "option 'dtype' must be a floating-point torch.dtype such as torch.float64 (the dtype of "
        "time and step sizes, which neuralode keeps in float64), got "
    )
    for bad in (torch.int64, "float64", torch.complex64):
        with pytest.raises(ODEInputError, match=f"^{re.escape(message + repr(bad))}$"):
            odeint(lambda t, y: -y, y0, t, options={"dtype": bad})
