"""Higher derivatives and torch.func transforms through the solve (issue 20): closed forms on
y' = a·A y (float64) in every gradient mode, finite differences on a nonlinear field, and the
combinations that are refused with TransformError."""

import pytest
import torch
from test_stiff import ROBERTSON_T, robertson
from torch.autograd import forward_ad

from neuralode import Adjoint, ODEInputError, TransformError, odeint

MODES = ["backprop", "adjoint", "checkpoint"]
METHODS = ["dopri5", "rk4"]
TOL = {"rtol": 1e-11, "atol": 1e-12}
A = torch.tensor([[-0.5, 1.0], [-1.0, -0.3]], dtype=torch.float64)
T = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)


class Linear(torch.nn.Module):
    def __init__(self, a: float = 0.8) -> None:
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(a, dtype=torch.float64))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.a * (y @ A.T)


def options(method: str) -> dict | None:
    return {"step_size": 0.01} if method == "rk4" else None


def solve(func, y0, mode, method, t=T):
    return odeint(func, y0, t, method=method, options=options(method), gradient=mode, **TOL)


def close(x: torch.Tensor, y: torch.Tensor, method: str) -> None:
    # rk4 with h = 0.01 is exact to ~1e-9 on this problem; dopri5 to its tolerance
    tol = 1e-7 if method == "rk4" else 1e-8
    torch.testing.assert_close(x, y, rtol=tol, atol=tol)


Y0 = torch.tensor([1.0, -2.0], dtype=torch.float64)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("mode", MODES)
def test_jacobians_and_hessian_closed_form(mode: str, method: str) -> None:
    func = Linear()
    phi = torch.linalg.matrix_exp(func.a.detach() * A)  # y(1) = Φ y0

    def end(y0: torch.Tensor) -> torch.Tensor:
        return solve(func, y0, mode, method)[-1]

    close(torch.func.jacrev(end)(Y0), phi, method)
    close(torch.func.jacfwd(end)(Y0), phi, method)
    hessian = torch.func.hessian(lambda y0: end(y0).pow(2).sum())(Y0)
    close(hessian, 2 * phi.T @ phi, method)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("mode", MODES)
def test_double_backward_create_graph(mode: str, method: str) -> None:
    """d²/da² Σ y(1) = Σ A² Φ y0 and the mixed d/dy0 (d/da Σ y(1)) = (A Φ)ᵀ 1."""
    func = Linear()
    y0 = Y0.clone().requires_grad_(True)
    loss = solve(func, y0, mode, method)[-1].sum()
    (grad_a,) = torch.autograd.grad(loss, func.a, create_graph=True)
    second_a, mixed = torch.autograd.grad(grad_a, (func.a, y0))
    phi = torch.linalg.matrix_exp(func.a.detach() * A)
    close(grad_a.detach(), (A @ phi @ Y0).sum(), method)
    close(second_a, (A @ A @ phi @ Y0).sum(), method)
    close(mixed, (A @ phi).T @ torch.ones(2, dtype=torch.float64), method)


@pytest.mark.parametrize("mode", MODES)
def test_physics_informed_loss_trains_through_dy_dy0(mode: str) -> None:
    """A loss made of dy(1)/dy0 (create_graph) has the closed-form gradient in a."""
    func = Linear()
    y0 = Y0.clone().requires_grad_(True)
    end = solve(func, y0, mode, "dopri5")[-1]
    (sensitivity,) = torch.autograd.grad(end.sum(), y0, create_graph=True)  # Φᵀ 1
    sensitivity.pow(2).sum().backward()
    a = func.a.detach()
    phi = torch.linalg.matrix_exp(a * A)
    ones = torch.ones(2, dtype=torch.float64)
    expected = 2 * (phi.T @ ones) @ ((A @ phi).T @ ones)
    close(func.a.grad, expected, "dopri5")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("mode", MODES)
def test_vmap_over_y0_equals_a_loop(mode: str, method: str) -> None:
    """Instances of very different scales: each keeps its own steps, as solved alone."""
    func = Linear()
    batch = torch.tensor([[1.0, -2.0], [1e-3, 4.0], [300.0, 0.5], [0.0, 1e-6]], dtype=torch.float64)
    vmapped = torch.func.vmap(lambda y0: solve(func, y0, mode, method))(batch)
    loop = torch.stack([solve(func, y0, mode, method) for y0 in batch])
    torch.testing.assert_close(vmapped, loop, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_vmap_over_parameters_equals_a_loop(mode: str) -> None:
    func = Linear()
    values = torch.tensor([0.3, 0.8, 2.5], dtype=torch.float64)
    gradient = Adjoint(params=()) if mode == "adjoint" else mode

    def with_a(a: torch.Tensor) -> torch.Tensor:
        field = lambda t, y: torch.func.functional_call(func, {"a": a}, (t, y))  # noqa: E731
        return odeint(field, Y0, T, gradient=gradient, **TOL)

    vmapped = torch.func.vmap(with_a)(values)
    loop = torch.stack([with_a(a) for a in values])
    torch.testing.assert_close(vmapped, loop, rtol=1e-9, atol=1e-12)
    for a, ys in zip(values, vmapped, strict=True):
        close(ys[-1], torch.linalg.matrix_exp(a * A) @ Y0, "dopri5")


@pytest.mark.parametrize("mode", MODES)
def test_per_example_gradients_vmap_of_grad(mode: str) -> None:
    func = Linear()
    batch = torch.tensor([[1.0, -2.0], [0.5, 3.0], [-4.0, 0.1]], dtype=torch.float64)
    per_example = torch.func.vmap(
        torch.func.grad(lambda y0: solve(func, y0, mode, "dopri5")[-1].pow(2).sum())
    )(batch)
    phi = torch.linalg.matrix_exp(func.a.detach() * A)
    close(per_example, 2 * batch @ phi.T @ phi, "dopri5")


@pytest.mark.parametrize("mode", MODES)
def test_forward_mode_jvp_and_dual_tensors(mode: str) -> None:
    func = Linear()
    tangent = torch.tensor([0.3, 1.0], dtype=torch.float64)
    phi = torch.linalg.matrix_exp(func.a.detach() * A)
    _, out_tangent = torch.func.jvp(
        lambda y0: solve(func, y0, mode, "dopri5")[-1], (Y0,), (tangent,)
    )
    close(out_tangent, phi @ tangent, "dopri5")
    with forward_ad.dual_level():
        dual = forward_ad.make_dual(Y0, tangent)
        close(
            forward_ad.unpack_dual(solve(func, dual, mode, "dopri5")[-1]).tangent,
            phi @ tangent,
            "dopri5",
        )


class Model(torch.nn.Module):
    """The solve as a module, so that functional_call rebinds func's parameters."""

    def __init__(self, mode: str, method: str = "dopri5", options: dict | None = None) -> None:
        super().__init__()
        self.field, self.mode, self.method, self.options = Linear(), mode, method, options

    def forward(self, y0: torch.Tensor) -> torch.Tensor:
        return odeint(self.field, y0, T, method=self.method, options=self.options,
                      gradient=self.mode, **TOL)[-1]  # fmt: skip


@pytest.mark.parametrize("mode", MODES)
def test_jacobians_in_parameters_functional_call(mode: str) -> None:
    model = Model(mode)
    sets = {"field.a": torch.tensor([0.3, 0.8, 2.5], dtype=torch.float64)}
    batched = torch.func.vmap(lambda p: torch.func.functional_call(model, p, (Y0,)))(sets)
    expected = torch.stack([torch.linalg.matrix_exp(a * A) @ Y0 for a in sets["field.a"]])
    close(batched, expected, "dopri5")
    params = {"field.a": model.field.a.detach()}
    end = lambda p: torch.func.functional_call(model, p, (Y0,))  # noqa: E731
    expected = A @ torch.linalg.matrix_exp(params["field.a"] * A) @ Y0
    close(torch.func.jacfwd(end)(params)["field.a"], expected, "dopri5")
    close(torch.func.jacrev(end)(params)["field.a"], expected, "dopri5")
    tangent = {"field.a": torch.tensor(1.0, dtype=torch.float64)}
    close(torch.func.jvp(end, (params,), (tangent,))[1], expected, "dopri5")


class MLPField(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)
        ).double()

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(y)


class MLPModel(torch.nn.Module):
    def __init__(self, mode: str, method: str = "dopri5", options: dict | None = None) -> None:
        super().__init__()
        self.field, self.mode, self.method, self.options = MLPField(), mode, method, options

    def forward(self, y0: torch.Tensor) -> torch.Tensor:
        return odeint(self.field, y0, T, method=self.method, options=self.options,
                      gradient=self.mode, **TOL)[-1]  # fmt: skip


@pytest.mark.parametrize("mode", ["adjoint", "checkpoint"])
def test_transforms_in_parameters_of_a_nonlinear_field_match_backprop(mode: str) -> None:
    """grad, jvp, a Hessian-vector product (jvp of grad), per-example gradients (vmap of grad)
    and forward_ad dual tensors in func's parameters by functional_call agree with backprop
    through the steps."""
    torch.manual_seed(0)
    batch = torch.randn(3, 2, dtype=torch.float64)
    reference = MLPModel("backprop")
    model = MLPModel(mode)
    params = {name: p.detach() for name, p in reference.named_parameters()}
    v = {name: torch.randn_like(p) for name, p in params.items()}
    u = torch.randn_like(batch)

    def dual_tangent(m: torch.nn.Module) -> torch.Tensor:
        """The tangent of torch.autograd.forward_ad's dual tensors in parameters and y0."""
        with forward_ad.dual_level():
            duals = {name: forward_ad.make_dual(p, v[name]) for name, p in params.items()}
            out = torch.func.functional_call(m, duals, (forward_ad.make_dual(batch, u),))
            return forward_ad.unpack_dual(out).tangent

    def transforms(m: torch.nn.Module) -> list[torch.Tensor]:
        loss = lambda p: torch.func.functional_call(m, p, (batch,)).pow(2).sum()  # noqa: E731
        each = lambda p, y: torch.func.functional_call(m, p, (y[None],)).pow(2).sum()  # noqa: E731
        results = [
            torch.func.grad(loss)(params),
            torch.func.jvp(lambda p: torch.func.functional_call(m, p, (batch,)), (params,), (v,))[
                1
            ],
            torch.func.jvp(torch.func.grad(loss), (params,), (v,))[1],
            torch.func.vmap(torch.func.grad(each), in_dims=(None, 0))(params, batch),
            dual_tangent(m),
        ]
        return [torch.cat([x.reshape(-1) for x in r.values()]) if isinstance(r, dict) else r
                for r in results]  # fmt: skip

    for ours, theirs in zip(transforms(model), transforms(reference), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-7, atol=1e-8)


def test_adjoint_under_grad_with_a_plain_function_and_no_parameters() -> None:
    """A field that is no nn.Module, with adjoint_params=(): torch.func.grad in y0 through the
    adjoint (its backward solve's products by torch.func.vjp) against the closed form; with
    parameters it names the fix."""
    a = torch.tensor(0.8, dtype=torch.float64)
    field = lambda t, y: a * (y @ A.T)  # noqa: E731

    def end(y0: torch.Tensor, params: tuple) -> torch.Tensor:
        return odeint(field, y0, T, gradient=Adjoint(params=params), **TOL)[-1].sum()

    phi = torch.linalg.matrix_exp(a * A)
    close(torch.func.grad(lambda y0: end(y0, ()))(Y0), phi.T @ torch.ones(2, dtype=torch.float64),
          "dopri5")  # fmt: skip
    listed = a.clone().requires_grad_(True)
    with pytest.raises(TransformError, match=r"or no adjoint_params at all"):
        torch.func.grad(lambda y0: end(y0, (listed,)))(Y0)


@pytest.mark.parametrize("mode", MODES)
def test_time_derivatives_reverse_and_forward_mode(mode: str) -> None:
    """dy(t1)/dt1 = f(t1, y(t1)) and dy(t1)/dt0 = −Φ(t1, t0) f(t0, y0) by autograd, and the
    whole Jacobian in t by torch.func's vjp, jacrev and jacfwd, against the closed form of a
    time-dependent field."""
    func = TimeDependent()
    t = torch.tensor([0.1, 0.5, 1.2], dtype=torch.float64)
    ys = lambda t: solve(func, Y0, mode, "dopri5", t)  # noqa: E731
    expected = torch.zeros(3, 2, 3, dtype=torch.float64)  # d y(t_i) / d t_j
    for i in range(1, 3):
        phi = func.flow(t[i], t[0])
        expected[i, :, i] = func(t[i], phi @ Y0)
        expected[i, :, 0] = -phi @ func(t[0], Y0)
    times = t.clone().requires_grad_(True)
    close(torch.autograd.grad(ys(times)[-1].sum(), times)[0], expected[-1].sum(0), "dopri5")
    close(torch.func.vjp(ys, t)[1](torch.ones(3, 2, dtype=torch.float64))[0],
          expected.sum((0, 1)), "dopri5")  # fmt: skip
    close(torch.func.jacrev(ys)(t), expected, "dopri5")
    close(torch.func.jacfwd(ys)(t), expected, "dopri5")


@pytest.mark.parametrize("mode", MODES)
def test_hessian_vector_product_nonlinear_matches_finite_differences(mode: str) -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)
    ).double()

    class Field(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self.net(y)

    field = Field()
    y0 = torch.randn(4, 2, dtype=torch.float64)
    params = list(field.parameters())
    v = [torch.randn_like(p) for p in params]

    def grads() -> list[torch.Tensor]:
        loss = odeint(field, y0, T, gradient=mode, **TOL)[-1].pow(2).sum()
        return list(torch.autograd.grad(loss, params, create_graph=True))

    g = grads()
    hvp = torch.autograd.grad(g, params, v)
    eps = 1e-5
    shifted = []
    for sign in (1, -1):
        with torch.no_grad():
            for p, d in zip(params, v, strict=True):
                p.add_(sign * eps * d)
        shifted.append([x.detach() for x in grads()])
        with torch.no_grad():
            for p, d in zip(params, v, strict=True):
                p.sub_(sign * eps * d)
    for h, plus, minus in zip(hvp, *shifted, strict=True):
        torch.testing.assert_close(h, (plus - minus) / (2 * eps), rtol=1e-5, atol=1e-6)


class TimeDependent(torch.nn.Module):
    """y' = a (1 + t) A y: y(t) = exp(a A (s(t) − s(t0))) y0 with s(t) = t + t²/2."""

    a = 0.8

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.a * (1 + t) * (y @ A.T)

    def flow(self, t1: torch.Tensor, t0: torch.Tensor) -> torch.Tensor:
        s = lambda t: t + t**2 / 2  # noqa: E731
        return torch.linalg.matrix_exp(self.a * (s(t1) - s(t0)) * A)


# Instances with their own start, end and spacing (so their own steps), one direction.
TIMES = torch.tensor([[0.0, 0.5, 1.0], [0.2, 0.9, 2.5], [-1.0, -0.1, 0.3]], dtype=torch.float64)
BATCH = torch.tensor([[1.0, -2.0], [1e-3, 4.0], [300.0, 0.5]], dtype=torch.float64)


@pytest.mark.parametrize("method", [*METHODS, "euler"])
@pytest.mark.parametrize("mode", MODES)
def test_vmap_over_times_equals_a_loop(mode: str, method: str) -> None:
    """Each instance's own times (and adaptive steps, or grid from step_size or its times):
    vmap over t alone and with y0 equals a loop of single solves, and the closed form of a
    time-dependent field."""
    func = TimeDependent()
    end = lambda y0, t: solve(func, y0, mode, method, t)  # noqa: E731
    over_t = torch.func.vmap(end, in_dims=(None, 0))(Y0, TIMES)
    both = torch.func.vmap(end)(BATCH, TIMES)
    torch.testing.assert_close(
        over_t, torch.stack([end(Y0, t) for t in TIMES]), rtol=1e-9, atol=1e-12
    )
    loop = torch.stack([end(y0, t) for y0, t in zip(BATCH, TIMES, strict=True)])
    torch.testing.assert_close(both, loop, rtol=1e-9, atol=1e-12)
    if method == "euler":  # (its grid: the output times themselves)
        return
    for y0, t, ys in zip(BATCH, TIMES, both, strict=True):
        expected = torch.stack([func.flow(time, t[0]) @ y0 for time in t])
        torch.testing.assert_close(ys, expected, rtol=1e-8, atol=1e-8 * float(y0.abs().max()))


@pytest.mark.parametrize("mode", ["backprop", "checkpoint"])
def test_vmap_over_times_inside_a_dual_level(mode: str) -> None:
    """vmap over t while a forward_ad dual level is open, y0 a dual tensor closed over: each
    instance's values and tangents equal a loop of single solves, and the tangent is the
    closed form Φ(t, t0) ẏ0 (the solver asked the batched times for a tangent and was refused
    with a raw RuntimeError)."""
    func, direction = TimeDependent(), torch.tensor([0.3, -1.0], dtype=torch.float64)
    with forward_ad.dual_level():
        y0 = forward_ad.make_dual(Y0, direction)
        end = lambda t: solve(func, y0, mode, "dopri5", t)  # noqa: E731
        batched = forward_ad.unpack_dual(torch.func.vmap(end)(TIMES))
        looped = [forward_ad.unpack_dual(end(t)) for t in TIMES]
    torch.testing.assert_close(batched.primal, torch.stack([x.primal for x in looped]),
                               rtol=1e-9, atol=1e-12)  # fmt: skip
    torch.testing.assert_close(batched.tangent, torch.stack([x.tangent for x in looped]),
                               rtol=1e-9, atol=1e-12)  # fmt: skip
    for t, tangents in zip(TIMES, batched.tangent, strict=True):
        expected = torch.stack([func.flow(time, t[0]) @ direction for time in t])
        close(tangents, expected, "dopri5")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("mode", MODES)
def test_vmap_of_gradients_over_times(mode: str, method: str) -> None:
    """Per-instance dL/dy0 and dL/dt of L = Σ y(t_last): Φᵀ1, and dL/dt_last = 1ᵀ f(t_last,
    y_last), dL/dt0 = −1ᵀ Φ f(t0, y0), 0 at the time in between."""
    func = TimeDependent()
    loss = lambda y0, t: solve(func, y0, mode, method, t)[-1].sum()  # noqa: E731
    grad_y0, grad_t = torch.func.vmap(torch.func.grad(loss, argnums=(0, 1)))(BATCH, TIMES)
    ones = torch.ones(2, dtype=torch.float64)
    for y0, t, g_y0, g_t in zip(BATCH, TIMES, grad_y0, grad_t, strict=True):
        phi = func.flow(t[-1], t[0])
        f0, f1 = func(t[0], y0), func(t[-1], phi @ y0)
        close(g_y0, phi.T @ ones, method)
        expected = torch.stack([-ones @ phi @ f0, torch.zeros((), dtype=torch.float64), f1.sum()])
        tol = 1e-7 if method == "rk4" else 1e-8
        torch.testing.assert_close(g_t, expected, rtol=tol, atol=tol * float(y0.abs().max()))


@pytest.mark.parametrize("method", ["explicit_adams", "implicit_adams", "tsit5"])
@pytest.mark.parametrize("mode", MODES)
def test_other_method_families_under_transforms(mode: str, method: str) -> None:
    """Adams methods (multistep; implicit_adams iterates its corrector) and tsit5: jacrev and
    jacfwd give Φ = exp(aA) to the method's accuracy and agree with each other (to rounding
    under backprop and checkpointing; the adjoint's jacrev is the backward solve's); vmap over
    y0 equals a loop of single solves (implicit_adams raised a RuntimeError under vmap: its
    corrector's convergence test asked for one value)."""
    func = Linear()
    # (explicit_adams, orders up to 12, is accurate from h = 2⁻⁸: 1.5e-4 off at 2⁻⁷, as torchdiffeq)
    fixed = {"step_size": 2.0**-8} if "adams" in method else None
    phi = torch.linalg.matrix_exp(func.a.detach() * A)

    def end(y0: torch.Tensor) -> torch.Tensor:
        return odeint(func, y0, T, method=method, options=fixed, gradient=mode, **TOL)[-1]

    accurate = {"rtol": 1e-9, "atol": 1e-9}
    jacobian = torch.func.jacrev(end)(Y0)
    torch.testing.assert_close(jacobian, phi, **accurate)
    forward = torch.func.jacfwd(end)(Y0)
    torch.testing.assert_close(forward, phi, **accurate)
    if mode != "adjoint":
        torch.testing.assert_close(forward, jacobian, rtol=1e-12, atol=1e-12)
    vmapped = torch.func.vmap(end)(BATCH)
    torch.testing.assert_close(vmapped, torch.stack([end(y0) for y0 in BATCH]), rtol=1e-12,
                               atol=1e-12)  # fmt: skip


def test_refused_vmap_over_times() -> None:
    """One clock or grid for all instances (implicit and Adams methods, perturb, a given
    grid), or instances in opposite directions, cannot be each instance's own solve; a
    non-monotonic instance is a bad input."""
    func = TimeDependent()

    def over_times(**kwargs: object) -> object:
        return torch.func.vmap(lambda t: odeint(func, Y0, t, **kwargs))

    for kwargs in [
        {"method": "trapezoid"},
        {"method": "explicit_adams"},
        {"method": "rk4", "options": {"perturb": True}},
    ]:
        with pytest.raises(TransformError, match="implicit Runge-Kutta and Adams methods, perturb"):
            over_times(**kwargs)(TIMES)
    with pytest.raises(TransformError, match="give one grid for all"):
        over_times(method="rk4", options={"grid": torch.linspace(0, 1, 5)})(TIMES)
    with pytest.raises(TransformError, match="same direction"):
        over_times()(torch.stack([T, T.flip(0)]))
    with pytest.raises(ODEInputError, match="every instance"):
        over_times()(torch.stack([T, T[[0, 2, 1]]]))


def test_refused_dual_tensors_under_vmap_through_the_adjoint() -> None:
    """forward_ad's dual tensors under vmap (over y0 or t) through the adjoint are refused by
    name, with the way that works: torch.func.jvp inside the vmap, which equals backprop's."""
    func, direction = TimeDependent(), torch.tensor([0.3, -1.0], dtype=torch.float64)
    with forward_ad.dual_level():
        duals = forward_ad.make_dual(BATCH, direction.expand_as(BATCH))
        with pytest.raises(TransformError, match=r"jvp or torch\.func\.jacfwd inside the vmap"):
            torch.func.vmap(lambda y: solve(func, y, "adjoint", "dopri5"))(duals)
        y0 = forward_ad.make_dual(Y0, direction)
        with pytest.raises(TransformError, match=r"jvp or torch\.func\.jacfwd inside the vmap"):
            torch.func.vmap(lambda t: solve(func, y0, "adjoint", "dopri5", t))(TIMES)

    def tangents(mode: str) -> torch.Tensor:
        end = lambda y, t: solve(func, y, mode, "dopri5", t)  # noqa: E731
        jvp = lambda t: torch.func.jvp(lambda y: end(y, t), (Y0,), (direction,))[1]  # noqa: E731
        return torch.func.vmap(jvp)(TIMES)

    torch.testing.assert_close(tangents("adjoint"), tangents("backprop"), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_refused_second_derivative_in_times(mode: str) -> None:
    func = Linear()
    with pytest.raises(
        TransformError, match=r"(second derivatives|forward mode).* the output times t"
    ):
        torch.func.hessian(lambda t: solve(func, Y0, mode, "dopri5", t)[-1].sum())(T)


def test_refused_adjoint_double_backward_without_module() -> None:
    a = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    gradient = Adjoint(params=(a,))
    loss = odeint(lambda t, y: a * (y @ A.T), Y0, T, gradient=gradient, **TOL)[-1].sum()
    with pytest.raises(TransformError, match=r"needs func to be an nn\.Module"):
        torch.autograd.grad(loss, a, create_graph=True)


ROSENBROCK = {"method": "rosenbrock23", "rtol": 1e-5, "atol": 1e-7}


def rosenbrock(mode: str, jacobian_every: int = 1):
    """odeint with rosenbrock23 in a gradient mode (the adjoint's backward solve by dopri5: it
    refuses an implicit method)."""
    gradient = Adjoint(method="dopri5") if mode == "adjoint" else mode
    options = {"jacobian_every": jacobian_every}
    return lambda func, y0, t=T: odeint(func, y0, t, gradient=gradient, options=options,
                                        **ROSENBROCK)  # fmt: skip


@pytest.mark.parametrize("mode", MODES)
def test_rosenbrock_jacobians_and_hessian(mode: str) -> None:
    """jacrev (one row), jacfwd and hessian (forward mode over vmapped tangents: the row loop)
    give the closed forms Φ and 2ΦᵀΦ to the method's tolerance (measured 5.2e-5 and 1.6e-4);
    through backprop and checkpoint, jacfwd and hessian are the derivatives of the same
    discrete solve as jacrev and jacrev(jacrev) (measured 3e-14 and 6e-14): same steps, same
    Jacobians.
    (The adjoint's reverse mode is its backward solve's, not the discrete solve's.)"""
    func = Linear()
    solve = rosenbrock(mode)
    end = lambda y0: solve(func, y0)[-1]  # noqa: E731
    loss = lambda y0: end(y0).pow(2).sum()  # noqa: E731
    phi = torch.linalg.matrix_exp(func.a.detach() * A)
    jacrev, jacfwd = torch.func.jacrev(end)(Y0), torch.func.jacfwd(end)(Y0)
    hessian = torch.func.hessian(loss)(Y0)
    method = {"rtol": 1e-3, "atol": 1e-3}
    torch.testing.assert_close(jacrev, phi, **method)
    torch.testing.assert_close(jacfwd, phi, **method)
    torch.testing.assert_close(hessian, 2 * phi.T @ phi, **method)
    if mode != "adjoint":
        exact = {"rtol": 1e-12, "atol": 1e-12}
        torch.testing.assert_close(jacfwd, jacrev, **exact)
        torch.testing.assert_close(hessian, torch.func.jacrev(torch.func.jacrev(loss))(Y0), **exact)


@pytest.mark.parametrize("mode", MODES)
def test_rosenbrock_vmap_equals_a_loop(mode: str) -> None:
    """vmap over y0 (instances of scales 1e-6 to 300: their own steps, rejections and Jacobian
    refreshes, a Jacobian serving up to 3 steps), and over y0 and t with a time-dependent field
    (each instance its own clock and its own T = ∂f/∂t), equal a loop of single solves
    (measured: bit for bit; the loop by backprop, whose forward solve every mode shares), and
    the closed forms to the method's tolerance."""
    solve, alone = rosenbrock(mode, 3), rosenbrock("backprop", 3)
    batch = torch.cat([BATCH, torch.tensor([[0.0, 1e-6]], dtype=torch.float64)])
    func = Linear()
    vmapped = torch.func.vmap(lambda y0: solve(func, y0))(batch)
    torch.testing.assert_close(vmapped, torch.stack([alone(func, y0) for y0 in batch]),
                               rtol=1e-9, atol=1e-12)  # fmt: skip
    phi = torch.linalg.matrix_exp(func.a.detach() * A)
    for y0, ys in zip(batch, vmapped, strict=True):  # (to the solve's atol near 0)
        atol = 1e-3 * float(y0.abs().max()) + ROSENBROCK["atol"]
        torch.testing.assert_close(ys[-1], phi @ y0, rtol=0, atol=atol)
    func = TimeDependent()
    both = torch.func.vmap(lambda y0, t: solve(func, y0, t))(BATCH, TIMES)
    loop = torch.stack([alone(func, y0, t) for y0, t in zip(BATCH, TIMES, strict=True)])
    torch.testing.assert_close(both, loop, rtol=1e-9, atol=1e-12)
    for y0, t, ys in zip(BATCH, TIMES, both, strict=True):
        expected = func.flow(t[-1], t[0]) @ y0
        torch.testing.assert_close(ys[-1], expected, rtol=0, atol=1e-3 * float(y0.abs().max()))


@pytest.mark.parametrize("jacobian_every", [1, 3])
def test_rosenbrock_vmap_of_a_stiff_problem_equals_a_loop(jacobian_every: int) -> None:
    """Robertson's kinetics (rates 0.04 to 3e7) from three initial states under vmap: each
    instance its own steps (measured 117, 45, 76 with jacobian_every=1) and its own Jacobian
    reuse, equal to a loop of single solves (measured: bit for bit); mass is conserved."""
    y0s = torch.tensor([[1.0, 0.0, 0.0], [0.5, 1e-5, 0.5], [0.9, 0.0, 0.1]], dtype=torch.float64)
    t = ROBERTSON_T[:3]
    options = {"jacobian_every": jacobian_every}

    def solve(y0: torch.Tensor) -> torch.Tensor:
        return odeint(robertson, y0, t, method="rosenbrock23", rtol=1e-6, atol=1e-10,
                      options=options)  # fmt: skip

    vmapped = torch.func.vmap(solve)(y0s)
    torch.testing.assert_close(vmapped, torch.stack([solve(y0) for y0 in y0s]), rtol=1e-9,
                               atol=1e-15)  # fmt: skip
    torch.testing.assert_close(vmapped.sum(-1), y0s.sum(-1)[:, None].expand(-1, 3), rtol=0,
                               atol=1e-12)  # fmt: skip


@pytest.mark.parametrize("mode", ["backprop", "checkpoint"])
def test_implicit_runge_kutta_under_transforms_closed_form(mode: str) -> None:
    """The trapezoid rule on y' = M y steps by R = (I − hM/2)⁻¹ (I + hM/2): y(1) = R²⁰ y0 on
    h = 0.05, so jacrev and jacfwd give R²⁰, the Hessian of |y(1)|² 2 (R²⁰)ᵀ R²⁰, vmap R²⁰ y0
    per instance (equal to a loop); the Jacobian in a by functional_call matches finite
    differences of the discrete solve."""
    func = Linear()
    options = {"step_size": 0.05}
    matrix = func.a.detach() * A
    eye = torch.eye(2, dtype=torch.float64)
    r = torch.linalg.solve(eye - 0.025 * matrix, eye + 0.025 * matrix)
    power = torch.linalg.matrix_power(r, 20)

    def end(y0: torch.Tensor) -> torch.Tensor:
        return odeint(func, y0, T, method="trapezoid", options=options, gradient=mode)[-1]

    exact = {"rtol": 1e-12, "atol": 1e-12}
    torch.testing.assert_close(torch.func.jacrev(end)(Y0), power, **exact)
    torch.testing.assert_close(torch.func.jacfwd(end)(Y0), power, **exact)
    hessian = torch.func.hessian(lambda y0: end(y0).pow(2).sum())(Y0)
    torch.testing.assert_close(hessian, 2 * power.T @ power, **exact)
    vmapped = torch.func.vmap(end)(BATCH)
    torch.testing.assert_close(vmapped, torch.stack([end(y0) for y0 in BATCH]), rtol=1e-9, atol=0)
    torch.testing.assert_close(vmapped, BATCH @ power.T, rtol=1e-12, atol=1e-12)

    def with_a(a: torch.Tensor) -> torch.Tensor:
        field = lambda t, y: torch.func.functional_call(func, {"a": a}, (t, y))  # noqa: E731
        return odeint(field, Y0, T, method="trapezoid", options=options, gradient=mode)[-1]

    a, eps = func.a.detach(), 1e-6
    difference = (with_a(a + eps) - with_a(a - eps)).detach() / (2 * eps)
    torch.testing.assert_close(torch.func.jacrev(with_a)(a), difference, rtol=1e-7, atol=1e-9)


def _stability_power(method: str, a: torch.Tensor, steps: int = 20) -> torch.Tensor:
    """R(h a A)^steps: the trapezoid rule's (I − Z/2)⁻¹ (I + Z/2), gl4's Padé (2, 2)
    (I − Z/2 + Z²/12)⁻¹ (I + Z/2 + Z²/12), Z = h a A with h = 1/steps; differentiable in a."""
    z = a * A / steps
    eye = torch.eye(2, dtype=torch.float64)
    square = z @ z / 12 if method == "gl4" else torch.zeros_like(z)
    r = torch.linalg.solve(eye - z / 2 + square, eye + z / 2 + square)
    return torch.linalg.matrix_power(r, steps)


@pytest.mark.parametrize("method", ["trapezoid", "gl4"])
@pytest.mark.parametrize("mode", ["backprop", "checkpoint"])
def test_implicit_runge_kutta_second_derivatives_in_the_parameters(mode: str, method: str) -> None:
    """d²|y(1)|²/da² of the discrete solve y(1) = R(h a A)²⁰ y0, by double backward and by
    forward-over-reverse, to 1e-10: the Newton iterations' held matrix needs one iteration per
    order of derivative after convergence (before the stepper took that second one: 2.6e-5
    relative off on the trapezoid rule, 4e-6 on gl4)."""
    func = Linear()
    options = {"step_size": 0.05}

    def loss() -> torch.Tensor:
        y1 = odeint(func, Y0, T, method=method, options=options, gradient=mode)[-1]
        return y1.pow(2).sum()

    a = func.a.detach().clone().requires_grad_(True)
    (slope,) = torch.autograd.grad((_stability_power(method, a) @ Y0).pow(2).sum(), a,
                                   create_graph=True)  # fmt: skip
    (curvature,) = torch.autograd.grad(slope, a)
    (grad_a,) = torch.autograd.grad(loss(), func.a, create_graph=True)
    (second,) = torch.autograd.grad(grad_a, func.a)
    exact = {"rtol": 1e-10, "atol": 1e-12}
    torch.testing.assert_close(grad_a.detach(), slope.detach(), **exact)
    torch.testing.assert_close(second, curvature, **exact)

    def loss_in(a: torch.Tensor) -> torch.Tensor:
        field = lambda t, y: torch.func.functional_call(func, {"a": a}, (t, y))  # noqa: E731
        y1 = odeint(field, Y0, T, method=method, options=options, gradient=mode)[-1]
        return y1.pow(2).sum()

    one = torch.ones((), dtype=torch.float64)
    _, forward_over_reverse = torch.func.jvp(torch.func.grad(loss_in), (func.a.detach(),), (one,))
    torch.testing.assert_close(forward_over_reverse, curvature, **exact)


def test_implicit_runge_kutta_through_the_adjoint_under_transforms_closed_form() -> None:
    """The trapezoid rule is symmetric, and on y' = M y its backward step of the adjoint
    a' = −Mᵀ a is Rᵀ: the backward solve retraces the forward steps exactly and its
    derivatives in y0 are the discrete solve's, R²⁰ (jacrev, vmap of jacrev, per-example grad,
    hessian), as are forward mode's (jacfwd, in y0 and in a) and vmap's values. In a, the
    backward solve integrates aᵀ ∂f/∂a = aᵀ A y by the trapezoid rule on the grid:
    Σ_k w_k R^(20−k) A R^k y0 (w = h/2 at the ends, h inside), which differs from backprop's
    exact d(R²⁰ y0)/da by the quadrature's O(h²) error (8e-4 here, below h² = 2.5e-3)."""
    h, n = 0.05, 20
    end = Model("adjoint", "trapezoid", {"step_size": h})  # y0 ↦ y(1)
    eye = torch.eye(2, dtype=torch.float64)

    def discrete(a: torch.Tensor) -> torch.Tensor:  # R(a)²⁰ y0
        r = torch.linalg.solve(eye - h / 2 * a * A, eye + h / 2 * a * A)
        return torch.linalg.matrix_power(r, n) @ Y0

    a = end.field.a.detach()
    r = torch.linalg.solve(eye - h / 2 * a * A, eye + h / 2 * a * A)
    powers = [torch.linalg.matrix_power(r, k) for k in range(n + 1)]
    power = powers[n]
    exact = {"rtol": 1e-12, "atol": 1e-12}
    torch.testing.assert_close(torch.func.jacrev(end)(Y0), power, **exact)
    torch.testing.assert_close(torch.func.jacfwd(end)(Y0), power, **exact)
    hessian = torch.func.hessian(lambda y0: end(y0).pow(2).sum())(Y0)
    torch.testing.assert_close(hessian, 2 * power.T @ power, **exact)
    torch.testing.assert_close(torch.func.vmap(end)(BATCH), BATCH @ power.T, **exact)
    jacobians = torch.func.vmap(torch.func.jacrev(end))(BATCH)
    torch.testing.assert_close(jacobians, power.expand(len(BATCH), 2, 2), **exact)
    per_example = torch.func.vmap(torch.func.grad(lambda y0: end(y0).pow(2).sum()))(BATCH)
    torch.testing.assert_close(per_example, 2 * BATCH @ (power.T @ power).T, **exact)

    in_a = lambda a: torch.func.functional_call(end, {"field.a": a}, (Y0,))  # noqa: E731
    weights = [h / 2] + [h] * (n - 1) + [h / 2]
    quadrature = sum(w * powers[n - k] @ A @ powers[k] @ Y0 for k, w in enumerate(weights))
    adjoint = torch.func.jacrev(in_a)(a)
    torch.testing.assert_close(adjoint, quadrature, **exact)
    backprop = torch.func.jacrev(discrete)(a)
    torch.testing.assert_close(torch.func.jacfwd(in_a)(a), backprop, **exact)
    torch.testing.assert_close(adjoint, backprop, rtol=0, atol=h**2)


@pytest.mark.parametrize("method", ["gl4", "trapezoid"])
def test_implicit_runge_kutta_through_the_adjoint_nonlinear_matches_backprop(method: str) -> None:
    """An MLP field: grad in its parameters by functional_call (and jacrev in y0) through the
    adjoint against backprop. Gauss methods (gl4) are their own discrete adjoints: the two agree
    to the Newton tolerance. The trapezoid rule's backward solve is the continuous adjoint's
    discretisation: the two differ by its O(h²) error (1e-4 of gradients of size 5 at h = 0.05),
    which falls fourfold when h halves."""
    torch.manual_seed(0)
    batch = torch.randn(3, 2, dtype=torch.float64)

    def gradient(model: torch.nn.Module) -> torch.Tensor:
        params = {name: p.detach() for name, p in model.named_parameters()}
        loss = lambda p: torch.func.functional_call(model, p, (batch,)).pow(2).sum()  # noqa: E731
        return torch.cat([g.reshape(-1) for g in torch.func.grad(loss)(params).values()])

    def gap(h: float) -> float:
        torch.manual_seed(1)
        models = [MLPModel(mode, method, {"step_size": h}) for mode in ("adjoint", "backprop")]
        models[0].load_state_dict(models[1].state_dict())
        grads = [gradient(model) for model in models]
        if method == "gl4":
            jacobians = [torch.func.jacrev(model)(batch[0]) for model in models]
            torch.testing.assert_close(*jacobians, rtol=1e-9, atol=1e-10)
            torch.testing.assert_close(*grads, rtol=1e-9, atol=1e-10)
        return float((grads[0] - grads[1]).abs().max())

    if method == "trapezoid":
        coarse, fine = gap(0.05), gap(0.025)
        assert coarse < 0.05**2 and 3.5 < coarse / fine < 4.5
    else:
        gap(0.05)


@pytest.mark.parametrize("mode", ["backprop", "adjoint"])
def test_implicit_runge_kutta_vmap_of_jacobians_equals_a_loop(mode: str) -> None:
    """Per-instance Jacobians of an implicit solve on a nonlinear field (the stage matrix's
    inverse batched at the outer vmap level, the residual at the inner one) equal a loop."""
    torch.manual_seed(0)
    model = MLPModel(mode, "trapezoid", {"step_size": 0.05})
    for jacobian in (torch.func.jacrev, torch.func.jacfwd):
        vmapped = torch.func.vmap(jacobian(model))(BATCH)
        loop = torch.stack([jacobian(model)(y0) for y0 in BATCH])
        torch.testing.assert_close(vmapped, loop, rtol=1e-9, atol=1e-12)
