"""The public door's checks: turn odeint's arguments into a validated, flat :class:`Problem`.

Every input check lives here, once, with a message that names the argument, the value and the fix.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from .errors import ODEInputError
from .integrate import StepLoop, Tolerance, initial_step_size, integrate
from .integrate_implicit import RosenbrockLoop
from .row_solve import solve_rows
from .solvers.controller import CONTROLLERS, FixedGrid, IController
from .solvers.methods import DEFAULT_METHOD, METHODS
from .solvers.rosenbrock import RosenbrockMethod
from .solvers.tableau import Tableau
from .state import FlatVectorField, State, StateLayout, VectorFieldFn
from .stats import SolverStats

GRID_OPTIONS = {"step_size", "grid"}
ADAPTIVE_OPTIONS = {
    "first_step",
    "safety",
    "ifactor",
    "dfactor",
    "max_num_steps",
    "norm",
    "controller",
    "per_sample",
    "compile",
    "jacobian",
    "jacobian_every",
}
DEFAULT_MAX_NUM_STEPS = 100_000


def _describe(x: torch.Tensor) -> str:
    return f"shape {tuple(x.shape)}, dtype {x.dtype}, device {x.device}"


def _check_finite(x: torch.Tensor, name: str) -> None:
    # One reduction in the common case; the exact count only when something is off.
    if math.isfinite(float(x.detach().sum())):
        return
    bad = int((~torch.isfinite(x)).sum())
    if bad:
        raise ODEInputError(f"{name} contains NaN or Inf ({bad} of {x.numel()} entries)")


def _validate_y0(y0: Any) -> tuple[torch.Tensor, ...]:
    parts = y0 if isinstance(y0, tuple) else (y0,)
    if not parts or not all(torch.is_tensor(p) for p in parts):
        raise ODEInputError(
            f"y0 must be a torch.Tensor or a non-empty tuple of tensors, got {type(y0).__name__}"
        )
    for index, part in enumerate(parts):
        name = f"y0[{index}]" if isinstance(y0, tuple) else "y0"
        if not part.dtype.is_floating_point:
            raise ODEInputError(
                f"{name} must have a floating-point dtype (float32 or float64), got {part.dtype}"
            )
        if part.dtype != parts[0].dtype or part.device != parts[0].device:
            raise ODEInputError(
                f"all parts of y0 must share dtype and device: y0[0] is {_describe(parts[0])}, "
                f"{name} is {_describe(part)}"
            )
        _check_finite(part, name)
    return parts


def _validate_t(t: Any, like: torch.Tensor) -> list[float]:
    if not torch.is_tensor(t):
        raise ODEInputError(f"t must be a 1-D torch.Tensor of times, got {type(t).__name__}")
    if t.dim() != 1 or t.numel() < 1:
        raise ODEInputError(
            f"t must be a non-empty 1-D tensor of times, got shape {tuple(t.shape)}"
        )
    if not t.dtype.is_floating_point:
        raise ODEInputError(f"t must have a floating-point dtype, got {t.dtype}")
    if t.device != like.device:
        raise ODEInputError(
            f"t is on {t.device} but y0 is on {like.device}; put both on the same device"
        )
    times = t.detach().double().tolist()
    if not all(math.isfinite(time) for time in times):
        _check_finite(t, "t")
    if len(times) > 1:
        direction = 1.0 if times[1] > times[0] else -1.0
        for i in range(1, len(times)):
            if direction * (times[i] - times[i - 1]) <= 0:
                raise ODEInputError(
                    "t must be strictly increasing or strictly decreasing; "
                    f"t[{i}]={times[i]:.6g} does not follow t[{i - 1}]={times[i - 1]:.6g}"
                )
    return times


def _validate_tolerance(value: Any, name: str) -> None:
    values = value if isinstance(value, (tuple, list)) else (value,)
    for v in values:
        if isinstance(v, (int, float)):
            valid = math.isfinite(v) and v >= 0
        else:
            tensor = torch.as_tensor(v)
            valid = bool((tensor >= 0).all()) and bool(torch.isfinite(tensor).all())
        if not valid:
            raise ODEInputError(f"{name} must be finite and non-negative, got {v}")


def _check_derivative(f0: State, layout: StateLayout, like: torch.Tensor) -> None:
    outputs = f0 if isinstance(f0, tuple) else (f0,)
    kind = f"a tuple of {len(layout.shapes)} tensors" if layout.is_tuple else "a tensor"
    if isinstance(f0, tuple) != layout.is_tuple or len(outputs) != len(layout.shapes):
        raise ODEInputError(
            f"func(t, y) must return a state like y ({kind}), got {type(f0).__name__}"
        )
    for index, (out, shape) in enumerate(zip(outputs, layout.shapes, strict=True)):
        suffix = f"[{index}]" if layout.is_tuple else ""
        if not torch.is_tensor(out):
            raise ODEInputError(f"func(t, y){suffix} must be a tensor, got {type(out).__name__}")
        if out.shape != shape:
            raise ODEInputError(
                f"func(t, y){suffix} returned shape {tuple(out.shape)} but y{suffix} has shape "
                f"{tuple(shape)}: dy/dt must have the shape of y"
            )
        if out.dtype != like.dtype:
            raise ODEInputError(
                f"func(t, y){suffix} returned dtype {out.dtype} but y{suffix} has dtype "
                f"{like.dtype}: dy/dt must have the dtype of y"
            )
        if out.device != like.device:
            raise ODEInputError(
                f"func(t, y){suffix} returned a tensor on {out.device} but y{suffix} is on "
                f"{like.device}"
            )


def _resolve_method(method: str | None) -> Tableau:
    name = DEFAULT_METHOD if method is None else method
    if name not in METHODS:
        raise ODEInputError(
            f"unknown method {name!r}; valid methods are: {', '.join(sorted(METHODS))}"
        )
    return METHODS[name]


def _check_options(options: Mapping[str, Any], tableau: Tableau) -> None:
    valid = GRID_OPTIONS | (ADAPTIVE_OPTIONS if tableau.adaptive else set())
    for key in options:
        if key not in valid:
            raise ODEInputError(
                f"unknown option {key!r} for method {tableau.name!r}; valid options are: "
                f"{', '.join(sorted(valid))}"
            )
    if "step_size" in options and "grid" in options:
        raise ODEInputError("give options 'step_size' or 'grid', not both")
    step_size = options.get("step_size")
    if step_size is not None and not (isinstance(step_size, (int, float)) and step_size > 0):
        raise ODEInputError(f"option 'step_size' must be a positive number, got {step_size!r}")
    controller = options.get("controller", "I")
    if controller not in CONTROLLERS:
        raise ODEInputError(
            f"unknown controller {controller!r}; valid controllers are: {', '.join(CONTROLLERS)}"
        )
    row_options = sorted({"per_sample", "compile"} & {k for k, v in options.items() if v})
    if tableau.implicit and row_options:
        raise ODEInputError(
            f"method {tableau.name!r} (implicit) does not take option(s) {row_options}: it "
            "steps the whole state with one Jacobian, eagerly"
        )
    _check_jacobian_option(options, tableau)
    max_steps = options.get("max_num_steps", DEFAULT_MAX_NUM_STEPS)
    if not isinstance(max_steps, int) or max_steps < 1:
        raise ODEInputError(f"option 'max_num_steps' must be a positive integer, got {max_steps!r}")


def _check_jacobian_option(options: Mapping[str, Any], tableau: Tableau) -> None:
    for key in sorted({"jacobian", "jacobian_every"} & set(options)):
        if not tableau.implicit:
            raise ODEInputError(
                f"option {key!r} is for implicit methods (rosenbrock23), not {tableau.name!r}"
            )
    every = options.get("jacobian_every", 1)
    if not isinstance(every, int) or every < 1:
        raise ODEInputError(f"option 'jacobian_every' must be a positive integer, got {every!r}")
    if options.get("jacobian", "full") not in ("full", "per_sample"):
        raise ODEInputError(
            f"option 'jacobian' must be 'full' or 'per_sample', got {options['jacobian']!r}"
        )


def _grid(options: Mapping[str, Any], times: list[float], adaptive: bool) -> list[float] | None:
    """Fixed-step grid from the options (fixed-step methods default to the output times);
    None for adaptive stepping."""
    t0, t1 = times[0], times[-1]
    direction = 1.0 if t1 >= t0 else -1.0
    if "step_size" in options:
        h = float(options["step_size"])
        # A span over a whole number of steps by less than 10⁻⁶·|t| is rounding (float32 times
        # carry about 6·10⁻⁸·|t|), not a sliver of a step more.
        rounding = 1e-6 * max(abs(t0), abs(t1), h)
        n = max(1, math.ceil((abs(t1 - t0) - rounding) / h))
        return [t0 + direction * h * i for i in range(n)] + [t1]
    if "grid" in options:
        given = torch.as_tensor(options["grid"])
        grid = given.detach().double().reshape(-1).tolist()
        if len(grid) >= 2 and given.dtype != torch.float64:
            # Endpoints given in lower precision stand for t's endpoints.
            rounded = torch.tensor([t0, t1], dtype=given.dtype).double().tolist()
            grid[0] = t0 if grid[0] == rounded[0] else grid[0]
            grid[-1] = t1 if grid[-1] == rounded[1] else grid[-1]
        ordered = all(direction * (b - a) > 0 for a, b in itertools.pairwise(grid))
        if len(grid) < 2 or not ordered or grid[0] != t0 or grid[-1] != t1:
            raise ODEInputError(
                "option 'grid' must be strictly monotonic in the direction of t and run from "
                f"t[0]={t0:.6g} to t[-1]={t1:.6g}"
            )
        return grid
    return None if adaptive else list(times)


@dataclass
class Problem:
    """A validated initial value problem on flat states.

    Attributes:
        layout: shapes of the user's state.
        y0: flat initial state, shape (N,).
        times: output times as floats.
        field: the vector field on flat states (counts NFE into ``stats``).
        tableau: the method.
        options: the solver options.
        tolerance: error scale and norm.
        stats: counters of this problem's solves.
    """

    layout: StateLayout
    y0: torch.Tensor
    times: list[float]
    field: FlatVectorField
    tableau: Tableau
    options: Mapping[str, Any]
    tolerance: Tolerance
    stats: SolverStats

    def first_derivative(self, y0: torch.Tensor) -> torch.Tensor:
        """f(t[0], y0) for a flat y0, checking func's output shape, dtype and device."""
        self.stats.nfe += 1
        like = self.y0
        f0 = self.field.func(
            torch.full((), self.times[0], dtype=like.dtype, device=like.device),
            self.layout.unflatten(y0),
        )
        _check_derivative(f0, self.layout, like)
        return self.layout.flatten(f0)

    @property
    def max_num_steps(self) -> int:
        """The bound on attempted steps (option ``max_num_steps``)."""
        return self.options.get("max_num_steps", DEFAULT_MAX_NUM_STEPS)

    def adaptive_controller(self) -> IController:
        """A fresh step-size controller as the options configure it (default: I control)."""
        options = self.options
        return CONTROLLERS[options.get("controller", "I")](
            error_order=self.tableau.error_order,
            **{k: options[k] for k in ("safety", "ifactor", "dfactor") if k in options},
        )

    def loop(self, y0: torch.Tensor, f0: torch.Tensor) -> StepLoop:
        """A step loop from the flat ``y0`` with f0 = f(t[0], y0), set up from the options."""
        options = self.options
        grid = _grid(options, self.times, self.tableau.adaptive)
        direction = 1.0 if self.times[-1] >= self.times[0] else -1.0
        controller: IController | FixedGrid
        if grid is not None:
            controller = FixedGrid(grid)
            first_dt = controller.first_dt(self.times[0])
        else:
            controller = self.adaptive_controller()
            first_dt = options.get("first_step") or initial_step_size(
                self.field,
                self.times[0],
                y0,
                f0,
                self.tableau.error_order,
                self.tolerance,
                direction,
            )
        loop_class: type[StepLoop] = StepLoop
        extra: dict[str, int] = {}
        if isinstance(self.tableau, RosenbrockMethod):
            per_sample = options.get("jacobian", "full") == "per_sample"
            loop_class = RosenbrockLoop
            extra = {
                "blocks": self.layout.shapes[0][0] if per_sample else 1,
                "jacobian_every": options.get("jacobian_every", 1),
            }
        return loop_class(
            self.field,
            y0,
            f0,
            self.times,
            self.tableau,
            controller,
            abs(float(first_dt)),
            self.tolerance,
            self.max_num_steps,
            **extra,
        )

    def solve(self, y0: torch.Tensor | None = None) -> torch.Tensor:
        """States at ``times``, shape (len(times), N), from the flat ``y0`` (default: the
        problem's own), differentiable by backpropagation through the steps."""
        y0 = self.y0 if y0 is None else y0
        if self.options.get("compile"):
            return solve_rows(self, y0, bool(self.options.get("per_sample")), compiled=True)
        return self.solve_eagerly(y0)

    def solve_eagerly(self, y0: torch.Tensor) -> torch.Tensor:
        """:meth:`solve` by the Python step loop (whatever the option ``compile``)."""
        if self.options.get("per_sample"):
            return solve_rows(self, y0, per_sample=True, compiled=False)
        f0 = self.first_derivative(y0)
        if len(self.times) == 1:
            return y0[None]
        return integrate(self.loop(y0, f0))


def make_problem(
    func: VectorFieldFn,
    y0: State,
    t: torch.Tensor,
    rtol: float | torch.Tensor,
    atol: float | torch.Tensor,
    method: str | None,
    options: Mapping[str, Any] | None,
) -> Problem:
    """Validate odeint's arguments and build the flat problem."""
    if not callable(func):
        raise ODEInputError(f"func must be callable as func(t, y), got {type(func).__name__}")
    parts = _validate_y0(y0)
    times = _validate_t(t, parts[0])
    tableau = _resolve_method(method)
    options = dict(options or {})
    _check_options(options, tableau)
    _validate_tolerance(rtol, "rtol")
    _validate_tolerance(atol, "atol")

    layout = StateLayout(y0)
    like = parts[0]
    stats = SolverStats()
    try:
        tolerance = Tolerance.make(layout, rtol, atol, options.get("norm"), like)
    except ValueError as error:
        raise ODEInputError(str(error)) from None
    field = FlatVectorField(func, layout, like, stats)
    return Problem(layout, layout.flatten(y0), times, field, tableau, options, tolerance, stats)
