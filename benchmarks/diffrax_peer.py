"""The diffrax (JAX) peer shared by ``bench_speed.py`` and ``bench_func.py``: whether it is
installed, JAX's threads and precision, the torch fields written in JAX, the conversion of a
module's weights, and one diffrax solve (Dopri5 + PID controller) built from them.

Imports only torch here; jax and diffrax are imported where used, so that the benchmarks run
(without their diffrax rows) where the ``bench-jax`` extra is not installed.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from torch import nn


def diffrax_available() -> bool:
    try:
        import diffrax  # noqa: F401
        import jax  # noqa: F401
    except ImportError:
        return False
    return True


def configure_jax(threads: int, x64: bool = False) -> dict[str, str] | None:
    """XLA on the CPU, with one thread when ``threads`` is 1 (call before JAX's first
    computation), and float64 arrays when ``x64``; the versions, or None when jax or diffrax is
    not installed."""
    if threads == 1:
        os.environ.setdefault(
            "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        )
    if not diffrax_available():
        return None
    import diffrax
    import jax

    jax.config.update("jax_platform_name", "cpu")
    if x64:
        jax.config.update("jax_enable_x64", True)
    return {"jax": jax.__version__, "diffrax": diffrax.__version__}


def jax_params(module: nn.Module) -> dict:
    """The module's state dict as JAX arrays of the same dtype (float64 needs ``x64``)."""
    import jax.numpy as jnp

    return {k: jnp.asarray(v.detach().numpy()) for k, v in module.state_dict().items()}


def diffrax_solver(
    field: str,
    ts: object,
    *,
    rtol: float = 1e-6,
    atol: float = 1e-6,
    solver: object = None,
    controller: object = None,
    saveat: object = None,
    adjoint: object = None,
    max_steps: int = 100_000,
) -> Callable[[dict, object], object]:
    """``solve(params, y0)`` → the ``diffrax.Solution`` of dy/dt = ``JAX_FIELDS[field]`` from
    ``ts[0]`` to ``ts[-1]``; by default Dopri5, ``PIDController(rtol=rtol, atol=atol)`` (I
    control: default coefficients), the first step chosen by diffrax, outputs at ``ts``, and
    diffrax's default adjoint (``RecursiveCheckpointAdjoint``)."""
    import diffrax

    vector_field = JAX_FIELDS[field]
    term = diffrax.ODETerm(lambda t, y, args: vector_field(args, t, y))
    solver = diffrax.Dopri5() if solver is None else solver
    if controller is None:
        controller = diffrax.PIDController(rtol=rtol, atol=atol)
    saveat = diffrax.SaveAt(ts=ts) if saveat is None else saveat
    adjoint = diffrax.RecursiveCheckpointAdjoint() if adjoint is None else adjoint

    def solve(p: dict, y: object) -> diffrax.Solution:
        return diffrax.diffeqsolve(term, solver, ts[0], ts[-1], None, y, args=p,
                                   stepsize_controller=controller, saveat=saveat,
                                   adjoint=adjoint, max_steps=max_steps)  # fmt: skip

    return solve


def _jax_mlp(p: dict, t: object, y: object) -> object:
    import jax.numpy as jnp

    hidden = jnp.tanh(y @ p["net.0.weight"].T + p["net.0.bias"])
    return hidden @ p["net.2.weight"].T + p["net.2.bias"]


def _jax_conv(p: dict, t: object, y: object) -> object:
    import jax
    import jax.numpy as jnp

    def conv(x: object, name: str) -> object:
        out = jax.lax.conv_general_dilated(x, p[f"{name}.weight"], (1, 1), "SAME")
        return out + p[f"{name}.bias"][None, :, None, None]

    return conv(jnp.tanh(conv(y, "conv1")), "conv2")


def _jax_vdp(p: dict, t: object, y: object) -> object:
    import jax.numpy as jnp

    x, v = y[:, :1], y[:, 1:]
    return jnp.concatenate([v, p["mu"] * (1 - x * x) * v - x], axis=1)


JAX_FIELDS = {"mlp": _jax_mlp, "conv": _jax_conv, "vdp": _jax_vdp}
