"""Parse once: odeint's arguments become a validated :class:`Problem` of typed, frozen parts.

Every input check lives here, once, with a message that names the argument, the value and the
fix. Nothing downstream re-validates or re-derives a value that these objects hold.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import ODEInputError, TransformError
from .adams import Adams
from .adams_method import MAX_ORDER, MIN_ORDER, AdamsMethod
from .callbacks import Callbacks
from .controllers import (
    CONTROLLER_COEFFICIENTS,
    AdaptiveController,
    FixedGrid,
    Landings,
    Nudge,
    Tolerance,
    make_grid,
)
from .implicit import DEFAULT_MAX_ITERS, ImplicitRK
from .implicit_methods import ImplicitMethod
from .loop import Watch
from .methods import DEFAULT_METHOD, METHODS, RK4
from .rosenbrock_method import RosenbrockMethod
from .state import COMPLEX, LOW_PRECISION, FlatField, State, StateLayout, VectorFieldFn
from .stats import SolverStats
from .steppers import ExplicitRK, Rosenbrock
from .tableau import Tableau
from .transforms import first_instance, is_batched, truth, unwrap

GRID_GIVEN = {"step_size", "grid", "grid_constructor"}  # (any of these: a fixed grid)
GRID_OPTIONS = {*GRID_GIVEN, "interp", "perturb"}
FIXED_ONLY_OPTIONS = {"interp", "perturb"}
ANY_OPTIONS = {"dtype"}  # torchdiffeq's time dtype: validated; time is float64 here anyway
CONTROL_OPTIONS = {"first_step", "safety", "ifactor", "dfactor", "min_step", "max_step",
                   "max_num_steps", "norm", "controller", "step_t", "jump_t"}  # fmt: skip
LANDING_OPTIONS = {"step_t", "jump_t"}
TORCHDIFFEQ_OPTIONS = {"first_step", "safety", "ifactor", "dfactor", "max_num_steps", "step_t",
                       "jump_t", "min_step", "max_step", "dtype", "norm", "step_size",
                       "grid_constructor", "interp", "perturb", "max_order", "max_iters",
                       "solver"}  # fmt: skip
"""The option names of torchdiffeq's solvers: where one does not apply to the method, it is
ignored with a warning (torchdiffeq warns too), not refused."""
ROW_OPTIONS = {"per_sample", "compile"}
JACOBIAN_OPTIONS = {"jacobian", "jacobian_every"}
ADAMS_OPTIONS = {"max_order", "max_iters"}
IMPLICIT_OPTIONS = {"max_iters"}  # fixed-grid implicit Runge–Kutta methods (with the above)
DEFAULT_MAX_NUM_STEPS = 100_000
SCIPY_METHOD = "scipy_solver"
SCIPY_SOLVERS = ("RK45", "RK23", "DOP853", "Radau", "BDF", "LSODA")
SCIPY_OPTIONS = {"solver", "min_step", "max_step"}


@dataclass(frozen=True)
class ScipySolver:
    """``method="scipy_solver"``: the solve is handed to ``scipy.integrate.solve_ivp``
    (:mod:`neuralode.core.scipy_execution`), as torchdiffeq's ``scipy_solver`` does.

    Attributes:
        solver: solve_ivp's method (torchdiffeq's default, ``"LSODA"``).
        min_step: LSODA's smallest step (None: scipy's default, 0).
        max_step: the largest step (inf).
    """

    solver: str = "LSODA"
    min_step: float | None = None
    max_step: float = math.inf


@dataclass(frozen=True)
class Execution:
    """How the loop runs: shared steps (one row, the whole state) or per-sample steps (one row
    per sample of a (B, ...) state), eagerly or compiled as one call; or, with ``scipy``, not
    our loop at all but scipy's ``solve_ivp``."""

    per_sample: bool = False
    compiled: bool = False
    scipy: ScipySolver | None = None


@dataclass
class Outcome:
    """How the last solve of a problem ended: each row's status (an int or 0-d tensor for shared
    steps, (B,) per sample; codes in :mod:`neuralode.core.loop`) and the error of the first
    failed row."""

    status: torch.Tensor | int | None = None
    error: Exception | None = None


@dataclass
class Problem:
    """A validated initial value problem on flat states (made on every call, and not frozen: a
    frozen dataclass's constructor costs about 1% of a batch-1 solve's instructions).

    Attributes:
        layout: shapes and dtype of the user's state.
        y0: flat initial state, shape (N,), in the working dtype.
        times: output times as floats.
        field: the vector field on flat states (counts NFE into ``stats``).
        method: the tableau (an explicit Runge–Kutta method or a Rosenbrock method).
        tolerance: rtol, atol and the norm (the controller's, for adaptive methods).
        controller: adaptive step-size control, or a fixed grid.
        execution: shared or per-sample steps, eager or compiled.
        max_num_steps: bound on attempted steps.
        first_step: magnitude of the first step, or None for the starting-step heuristic.
        jacobian_blocks, jacobian_every: an implicit method's Jacobian structure and reuse.
        max_iters: an implicit Runge–Kutta method's Newton iterations per step at most.
        raise_on_failure: raise the first failed row's error (else report it in ``outcome``
            and leave NaN at the times that row did not reach).
        watch: shown each accepted step of a shared-step eager solve (dense output).
        callbacks: torchdiffeq's step callbacks found on func, or None.
        stats: counters of this problem's solves.
        outcome: how the last solve ended.
        batched_times: under torch.func.vmap over t, every instance's output times, a float64
            (T,) batched tensor; ``times`` are then the first instance's, for their count and
            shared direction only (:func:`~neuralode.core.execution.integrate` runs such a
            problem on the row loop, whose clock is this tensor, or refuses it).
    """

    layout: StateLayout
    y0: torch.Tensor
    times: list[float]
    field: FlatField
    method: Tableau
    tolerance: Tolerance
    controller: AdaptiveController | FixedGrid
    execution: Execution = Execution()
    max_num_steps: int = DEFAULT_MAX_NUM_STEPS
    first_step: float | None = None
    jacobian_blocks: int = 1
    jacobian_every: int = 1
    max_iters: int = DEFAULT_MAX_ITERS
    raise_on_failure: bool = True
    watch: Watch | None = None
    callbacks: Callbacks | None = None
    stats: SolverStats = field(default_factory=SolverStats)
    outcome: Outcome = field(default_factory=Outcome)
    batched_times: torch.Tensor | None = None

    @property
    def output_times(self) -> list[float] | torch.Tensor:
        """The output times: floats, or every instance's under vmap over t (a (T,) tensor)."""
        return self.times if self.batched_times is None else self.batched_times

    def stepper(self) -> ExplicitRK | Rosenbrock | ImplicitRK | Adams:
        """A fresh stepper for one solve (an implicit or Rosenbrock stepper keeps its Jacobian,
        an Adams stepper its history, each starting empty)."""
        if isinstance(self.method, AdamsMethod):
            return Adams(self.method, self.tolerance, ExplicitRK(RK4))
        if isinstance(self.method, ImplicitMethod):
            return ImplicitRK(self.method, self.field, self.jacobian_blocks, self.jacobian_every,
                              self.max_iters)  # fmt: skip
        if isinstance(self.method, RosenbrockMethod):
            return Rosenbrock(self.method, self.field, self.jacobian_blocks, self.jacobian_every)
        return ExplicitRK(self.method, isinstance(self.controller, AdaptiveController))

    def first_derivative(self, y0: torch.Tensor, rows: int = 1) -> torch.Tensor:
        """f(t[0], y0) for a flat y0 (just after t[0] with perturb) as ``rows`` rows, (rows,
        N / rows), checking func's output shape, dtype and device (counted)."""
        self.field.count(1)
        layout = self.layout
        start = self.output_times[0]
        if isinstance(self.controller, FixedGrid) and self.controller.nudge is not None:
            start = self.controller.nudge.toward(start, 1.0 if self.times[-1] >= start else -1.0)
        f0 = self.field.func(self.field.time(start), layout.unflatten(y0))
        _check_derivative(f0, layout)
        return layout.flatten(f0, rows)


def make_problem(
    func: VectorFieldFn,
    y0: State,
    t: torch.Tensor,
    rtol: float | torch.Tensor,
    atol: float | torch.Tensor,
    method: str | Tableau | None,
    options: Mapping[str, Any] | None,
) -> Problem:
    """Validate odeint's arguments and build the flat problem."""
    if not callable(func):
        raise ODEInputError(f"func must be callable as func(t, y), got {type(func).__name__}")
    parts = _validate_y0(y0)
    times, batched_times = _validate_t(t, parts[0])
    options = dict(options or {})
    layout = StateLayout(y0)
    settings = solver_settings(method, rtol, atol, options, layout)
    for note in settings.notes:
        warnings.warn(note, UserWarning, stacklevel=4)
    controller = settings.controller
    if controller is None:
        if batched_times is not None and {"grid", "grid_constructor"} & set(options):
            raise TransformError(
                "under torch.func.vmap over the output times t each instance steps on its own "
                "grid, and options 'grid' and 'grid_constructor' give one grid for all: use "
                "step_size, or an adaptive method"
            )
        grid = _grid_option(options, times, func, y0, t)
        own = times if batched_times is None else batched_times  # (each instance's grid)
        controller = make_grid(options.get("step_size"), grid, own, *settings.grid_style)
    stats = SolverStats()
    execution = settings.execution
    return Problem(
        layout,
        layout.flatten(y0),
        times,
        FlatField(func, layout, stats),
        settings.method,
        settings.tolerance,
        controller,
        execution,
        settings.max_num_steps,
        settings.first_step,
        settings.jacobian_blocks,
        settings.jacobian_every,
        settings.max_iters,
        callbacks=None if execution.scipy else _callbacks(func, layout, execution),
        stats=stats,
        batched_times=batched_times,
    )


@dataclass(frozen=True)
class Settings:
    """What the method, the tolerances and the options make of a state's layout: everything of a
    :class:`Problem` that depends on neither func, y0's values nor t (so it is built once per
    distinct input; see :func:`solver_settings`).

    Attributes:
        controller: the adaptive controller, or None on a fixed grid (built per call: the grid
            depends on t); ``grid_style`` is the grid's (interp, nudge).
        notes: warnings to give at each call (options ignored as torchdiffeq ignores them).
    """

    method: Tableau
    tolerance: Tolerance
    controller: AdaptiveController | None
    grid_style: tuple[str, Nudge | None]
    execution: Execution
    max_num_steps: int
    first_step: float | None
    jacobian_blocks: int
    jacobian_every: int
    max_iters: int
    notes: tuple[str, ...]


_SETTINGS: dict[Any, Settings] = {}
_SETTINGS_BOUND = 256
_PLAIN_OPTION = (bool, int, float, str, torch.dtype, type(None))


def _remembered(make: Callable[..., Settings]) -> Callable[..., Settings]:
    """``make``, remembering its :class:`Settings` for inputs that are plain values (numbers,
    strings, dtypes: not tensors or callables), so that repeated solves of one kind of problem,
    as in training, parse them once."""

    @functools.wraps(make)
    def remembered(*inputs: Any) -> Settings:
        key = _settings_key(inputs)
        settings = _SETTINGS.get(key) if key is not None else None
        if settings is None:
            settings = make(*inputs)
            if key is not None:
                if len(_SETTINGS) >= _SETTINGS_BOUND:
                    _SETTINGS.clear()
                _SETTINGS[key] = settings
        return settings

    return remembered


def _settings_key(inputs: tuple[Any, ...]) -> Any:
    """A hashable key of the inputs (method, rtol, atol, options, layout) when they are all
    plain values (and no transform, trace or inference mode would make the remembered tensors
    unfit elsewhere), else None."""
    method, rtol, atol, options, layout = inputs
    if not (_is_number(rtol) and _is_number(atol)):
        return None
    if not all(isinstance(value, _PLAIN_OPTION) for value in options.values()):
        return None
    if torch.is_inference_mode_enabled() or torch.compiler.is_compiling():
        return None
    shapes = tuple(tuple(shape) for shape in layout.shapes)
    # (with each value's type: True == 1 == 1.0, but only 1 is a valid max_num_steps)
    try:
        given = tuple(sorted((key, type(value), value) for key, value in options.items()))
        return hash(method), method, type(rtol), rtol, type(atol), atol, given, shapes, \
            layout.dtype, layout.device, layout.is_tuple  # fmt: skip
    except TypeError:  # (an unhashable method object, option names that do not sort)
        return None


@_remembered
def solver_settings(
    method: str | Tableau | None,
    rtol: float | torch.Tensor,
    atol: float | torch.Tensor,
    options: Mapping[str, Any],
    layout: StateLayout,
) -> Settings:
    """The validated :class:`Settings` of odeint's arguments (remembered: see
    :func:`_remembered`)."""
    scipy = isinstance(method, str) and method == SCIPY_METHOD
    # (a scipy solve has no tableau of ours: the default one stands in, unused by solve_ivp)
    tableau = resolve_method(None if scipy else method)
    notes: tuple[str, ...] = ()
    if scipy:
        execution = Execution(scipy=_scipy_solver(options))
    else:
        options, notes = _applicable_options(options, tableau)
        _check_time_dtype(options)
        tableau, adams_notes = _adams_options(tableau, options)
        notes += adams_notes
        execution = _execution(options, tableau, layout)
        _check_landings(options, execution)
    fixed = bool(GRID_GIVEN & set(options)) or not tableau.adaptive
    norm = None if scipy else options.get("norm")
    tolerance = make_tolerance(layout, rtol, atol, norm, adaptive=not fixed)
    controller = None
    grid_style: tuple[str, Nudge | None] = ("linear", None)
    if fixed:
        grid_style = _interp_perturb(options, layout, tableau)
    else:
        controller = make_controller(tableau, tolerance, {} if scipy else options, layout)
    return Settings(
        tableau,
        tolerance,
        controller,
        grid_style,
        execution,
        _positive_int(options, "max_num_steps", DEFAULT_MAX_NUM_STEPS),
        _first_step(options),
        layout.shapes[0][0] if options.get("jacobian") == "per_sample" else 1,
        _positive_int(options, "jacobian_every", 1),
        _positive_int(options, "max_iters", DEFAULT_MAX_ITERS),
        notes,
    )


def resolve_method(method: str | Tableau | None) -> Tableau:
    """The tableau named by ``method`` (default dopri5), or ``method`` itself."""
    if isinstance(method, Tableau):
        return method
    name = DEFAULT_METHOD if method is None else method
    if not isinstance(name, str) or name not in METHODS:
        valid = ", ".join(sorted([*METHODS, SCIPY_METHOD]))
        raise ODEInputError(
            f"unknown method {name!r}; valid methods are: {valid} (or a neuralode.Tableau)"
        )
    return METHODS[name]


def make_tolerance(
    layout: StateLayout,
    rtol: float | torch.Tensor,
    atol: float | torch.Tensor,
    norm: Any,
    adaptive: bool = True,
) -> Tolerance:
    """Tolerances broadcast to the state (raised to a half-precision state's resolution), and the
    norm. An adaptive method cannot work to a zero bound on a component (rtol = atol = 0)."""
    _validate_tolerance(rtol, "rtol")
    _validate_tolerance(atol, "atol")
    if norm is not None and not callable(norm):
        raise ODEInputError(
            f"option 'norm' must be a callable on the scaled error, got {norm!r}"
            + (
                " ('seminorm' is for the adjoint's backward solve: adjoint_options={'norm': "
                "'seminorm'})"
                if norm == "seminorm"
                else ""
            )
        )
    try:
        rtol_flat, atol_flat = layout.broadcast(rtol, "rtol"), layout.broadcast(atol, "atol")
    except ValueError as error:
        raise ODEInputError(str(error)) from None
    if layout.dtype in LOW_PRECISION:
        rtol_flat, atol_flat = _at_resolution(rtol_flat, atol_flat, layout.dtype)
    plain = _is_number(rtol) and _is_number(atol)  # (checked without a host sync)
    if not adaptive or (plain and (rtol > 0 or atol > 0)):
        both_zero = 0
    else:
        both_zero = int(((rtol_flat == 0) & (atol_flat == 0)).expand(layout.size).sum())
    if both_zero:
        raise ODEInputError(
            f"rtol and atol are both 0 for {both_zero} state component(s): no adaptive step can "
            "meet a zero error bound; give a positive rtol or atol, or a fixed-step method "
            "(method='rk4', options={'step_size': ...})"
        )
    exact_zero = atol == 0 if _is_number(atol) else bool((atol_flat == 0).any())
    structure = None
    if norm is not None:
        structure = functools.partial(layout.unflatten, cast=False)
    parts = tuple(layout.numels) if layout.is_tuple else None
    if not (is_batched(rtol_flat) or is_batched(atol_flat)):
        # constants: inside a torch.func transform, the plain tensors under its wrappers, so
        # that the adjoint's Functions (run below the transform's level) can use them
        rtol_flat, atol_flat = unwrap(rtol_flat), unwrap(atol_flat)
    return Tolerance(rtol_flat, atol_flat, norm, exact_zero, structure, parts, layout.is_complex)


def make_controller(
    tableau: Tableau,
    tolerance: Tolerance,
    options: Mapping[str, Any],
    layout: StateLayout | None = None,
) -> AdaptiveController:
    """The adaptive controller that the options configure (default: I control; ``step_t`` and
    ``jump_t`` need the state's ``layout``, for func's time dtype)."""
    name = options.get("controller", "I")
    if name not in CONTROLLER_COEFFICIENTS:
        raise ODEInputError(
            f"unknown controller {name!r}; valid controllers are: "
            f"{', '.join(CONTROLLER_COEFFICIENTS)}"
        )
    pcoeff, icoeff, dcoeff = CONTROLLER_COEFFICIENTS[name]
    numbers = {}
    for key in ("safety", "ifactor", "dfactor", "min_step", "max_step"):
        if key in options:
            value = options[key]
            if not _is_number(value):
                raise ODEInputError(f"option {key!r} must be a number, got {value!r}")
            numbers[key] = float(value)
    assert tableau.error_order is not None
    landings = _landings(options, layout) if LANDING_OPTIONS & set(options) else None
    return AdaptiveController(
        tableau.error_order, tolerance, pcoeff=pcoeff, icoeff=icoeff, dcoeff=dcoeff,
        landings=landings, **numbers,
    )  # fmt: skip


# -- checks ----------------------------------------------------------------------------------


def _describe(x: torch.Tensor) -> str:
    return f"shape {tuple(x.shape)}, dtype {x.dtype}, device {x.device}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_finite(x: torch.Tensor, name: str) -> None:
    # One reduction in the common case; the exact count only when something is off.
    if x.is_complex():
        x = torch.view_as_real(x.resolve_conj())
    x = unwrap(x.detach() if x.requires_grad else x)  # (every instance of a torch.func.vmap)
    if math.isfinite(float(x.float().sum())):
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
        if not (part.dtype.is_floating_point or part.dtype in COMPLEX):
            raise ODEInputError(
                f"{name} must have a floating-point dtype (float16, bfloat16, float32 or "
                f"float64) or be complex (complex64 or complex128), got {part.dtype}"
            )
        if part.dtype != parts[0].dtype or part.device != parts[0].device:
            raise ODEInputError(
                f"all parts of y0 must share dtype and device: y0[0] is {_describe(parts[0])}, "
                f"{name} is {_describe(part)}"
            )
        _check_finite(part, name)
    return parts


def _validate_t(t: Any, like: torch.Tensor) -> tuple[list[float], torch.Tensor | None]:
    """The output times as floats (the first instance's under torch.func.vmap over t) and,
    under vmap over t, every instance's as a float64 batched tensor (else None)."""
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
    batched = t.detach().double() if is_batched(t) else None
    times = first_instance(t).tolist()  # (exact: every float dtype's values are Python floats)
    if batched is not None or not math.isfinite(sum(times)):  # (an overflow: checked exactly)
        _check_finite(t, "t")
    if batched is not None and len(times) > 1:
        _check_instances(batched)
    if len(times) > 1:
        direction = 1.0 if times[1] > times[0] else -1.0
        for i in range(1, len(times)):
            if direction * (times[i] - times[i - 1]) <= 0:
                raise ODEInputError(
                    "t must be strictly increasing or strictly decreasing; "
                    f"t[{i}]={times[i]:.6g} does not follow t[{i - 1}]={times[i - 1]:.6g}"
                )
    return times, batched


def _check_instances(t: torch.Tensor) -> None:
    """Every instance of a vmapped t is strictly monotonic, all in one direction."""
    steps = t[1:] - t[:-1]
    increasing = (steps > 0).all()
    if truth(~(increasing | (steps < 0).all())):
        raise ODEInputError(
            "t must be strictly increasing or strictly decreasing in every instance of "
            "torch.func.vmap over t; some instance is not"
        )
    if truth(increasing) and truth(~increasing):
        raise TransformError(
            "torch.func.vmap over the output times t needs every instance to integrate in the "
            "same direction, and some increase while others decrease: vmap the instances of "
            "each direction apart"
        )


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


_WARNED_RESOLUTION: set[torch.dtype] = set()


def _at_resolution(
    rtol: torch.Tensor, atol: torch.Tensor, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tolerances below a half-precision state's resolution (its machine epsilon) raised to it,
    with a warning once per process and dtype."""
    eps = torch.finfo(dtype).eps
    low = {name: float(x.min()) for name, x in (("rtol", rtol), ("atol", atol)) if x.min() < eps}
    if low and dtype not in _WARNED_RESOLUTION:
        _WARNED_RESOLUTION.add(dtype)
        given = ", ".join(f"{name}={value:.3g}" for name, value in low.items())
        warnings.warn(
            f"neuralode: {given} below the resolution of a {dtype} state (eps {eps:.3g}); "
            f"raised to {eps:.3g} (warned once)",
            RuntimeWarning,
            stacklevel=5,
        )
    return rtol.clamp(min=eps), atol.clamp(min=eps)


def _check_derivative(f0: State, layout: StateLayout) -> None:
    plain = type(f0) is torch.Tensor and not layout.is_tuple  # (the common case, in few calls)
    alike = plain and f0.shape == layout.shapes[0] and f0.dtype == layout.dtype
    if alike and f0.device == layout.device:
        return
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
        if out.dtype != layout.dtype:
            raise ODEInputError(
                f"func(t, y){suffix} returned dtype {out.dtype} but y{suffix} has dtype "
                f"{layout.dtype}: dy/dt must have the dtype of y"
            )
        if out.device != layout.device:
            raise ODEInputError(
                f"func(t, y){suffix} returned a tensor on {out.device} but y{suffix} is on "
                f"{layout.device}"
            )


def _applicable_options(
    options: Mapping[str, Any], tableau: Tableau
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The options that apply to the method, and the warnings to give. A torchdiffeq option name
    that does not apply (``max_order`` for dopri5, ``step_t`` on a fixed grid) is ignored with a
    warning, as torchdiffeq ignores it; a name no method knows (a typo) is an error listing the
    valid ones, and so is one of neuralode's own options that does not apply."""
    valid = _check_option_names(options, tableau)
    fixed = not tableau.adaptive or bool(GRID_GIVEN & set(options))
    valid -= LANDING_OPTIONS if fixed else FIXED_ONLY_OPTIONS
    ignored = sorted(key for key in options if key not in valid)
    notes: tuple[str, ...] = ()
    if ignored:
        kind = "a fixed grid" if fixed else "adaptive steps"
        notes = (
            f"neuralode: option(s) {ignored} do not apply to method {tableau.name!r} on {kind}; "
            "ignored, as torchdiffeq ignores them",
        )
    return {key: value for key, value in options.items() if key in valid}, notes


def _check_option_names(options: Mapping[str, Any], tableau: Tableau) -> set[str]:
    """The option names valid for the method (raising for a name neither it nor torchdiffeq
    knows, and for neuralode's own options that conflict with it)."""
    valid = GRID_OPTIONS | ANY_OPTIONS
    if tableau.adaptive:
        valid |= CONTROL_OPTIONS | JACOBIAN_OPTIONS | ROW_OPTIONS
    multistep = isinstance(tableau, AdamsMethod)
    row_options = sorted({key for key in ROW_OPTIONS if options.get(key)})
    if multistep:
        valid |= ADAMS_OPTIONS
        if row_options:
            raise ODEInputError(
                f"method {tableau.name!r} (a multistep method) does not take option(s) "
                f"{row_options}: its history of past derivatives moves on with the shared steps "
                "of the whole state, eagerly; drop the option(s), or use an adaptive "
                "Runge–Kutta method (e.g. 'dopri5')"
            )
    if isinstance(tableau, ImplicitMethod):
        valid |= JACOBIAN_OPTIONS | IMPLICIT_OPTIONS | ROW_OPTIONS
    for key in options:
        known = key in valid or key in TORCHDIFFEQ_OPTIONS
        if not known and not (multistep and key in ROW_OPTIONS):  # (False: the default)
            raise ODEInputError(
                f"unknown option {key!r} for method {tableau.name!r}; valid options are: "
                f"{', '.join(sorted(valid))}"
            )
    for key in sorted(JACOBIAN_OPTIONS & set(options)):
        if not tableau.implicit:
            raise ODEInputError(
                f"option {key!r} is for implicit methods (rosenbrock23, gl6, ...), not "
                f"{tableau.name!r}"
            )
    if tableau.implicit and row_options:
        raise ODEInputError(
            f"method {tableau.name!r} (implicit) does not take option(s) {row_options}: it "
            "steps the whole state with one Jacobian, eagerly"
        )
    return valid


def _adams_options(tableau: Tableau, options: Mapping[str, Any]) -> tuple[Tableau, tuple[str, ...]]:
    """An Adams method with its options 'max_order' and 'max_iters' (validated) in it, so that
    problems built from it (the adjoint's backward solve) step alike; other methods as given.
    And the warnings to give."""
    if not isinstance(tableau, AdamsMethod):
        return tableau, ()
    max_order = options.get("max_order", tableau.max_order)
    if (
        not isinstance(max_order, int)
        or isinstance(max_order, bool)
        or not (1 <= max_order <= MAX_ORDER)
    ):
        raise ODEInputError(
            f"option 'max_order' must be an integer from 1 to {MAX_ORDER} (the Adams history "
            f"holds max_order - 1 past derivatives), got {max_order!r}"
        )
    notes: tuple[str, ...] = ()
    if max_order < MIN_ORDER:
        notes = (
            f"neuralode: max_order={max_order} is below {MIN_ORDER}, so method "
            f"{tableau.name!r} reduces to rk4 (every step is an rk4 step), as in torchdiffeq",
        )
    max_iters = _positive_int(options, "max_iters", tableau.max_iters)
    if (max_order, max_iters) != (tableau.max_order, tableau.max_iters):
        tableau = dataclasses.replace(tableau, max_order=max_order, max_iters=max_iters)
    return tableau, notes


def _check_time_dtype(options: Mapping[str, Any]) -> None:
    """torchdiffeq's option ``dtype`` (the dtype of its adaptive solvers' time and step-size
    arithmetic, promoted with the state's): accepted for drop-in use when it is a floating
    dtype. It changes nothing: the clock here is always float64 (Python floats, or float64
    tensors on rows), at least as precise as any dtype it could name."""
    if "dtype" not in options:
        return
    value = options["dtype"]
    if not (isinstance(value, torch.dtype) and value.is_floating_point):
        raise ODEInputError(
            "option 'dtype' must be a floating-point torch.dtype such as torch.float64 (the "
            "dtype of time and step sizes, which neuralode keeps in float64), got "
            f"{value!r}"
        )


def _execution(options: Mapping[str, Any], tableau: Tableau, layout: StateLayout) -> Execution:
    execution = Execution(bool(options.get("per_sample")), bool(options.get("compile")))
    fixed = sorted(GRID_GIVEN & set(options))
    if execution.per_sample:
        if layout.is_tuple or len(layout.shapes[0]) < 1:
            raise ODEInputError(
                "options['per_sample'] needs y0 to be one tensor whose first dimension is the batch"
            )
        unsupported = sorted({"norm", *fixed} & set(options))
        if unsupported:
            raise ODEInputError(
                f"options['per_sample'] uses the RMS norm of each sample: it cannot be combined "
                f"with option(s) {unsupported}"
            )
    if execution.compiled and fixed:
        raise ODEInputError(
            f"options['compile'] runs adaptive steps; it cannot be combined with option(s) "
            f"{fixed}: drop 'compile' for fixed steps"
        )
    if options.get("jacobian", "full") not in ("full", "per_sample"):
        raise ODEInputError(
            f"option 'jacobian' must be 'full' or 'per_sample', got {options['jacobian']!r}"
        )
    return execution


def _scipy_solver(options: Mapping[str, Any]) -> ScipySolver:
    """The options of ``method="scipy_solver"``, validated (torchdiffeq's: solver, min_step,
    max_step)."""
    unknown = sorted(set(options) - SCIPY_OPTIONS)
    if unknown:
        raise ODEInputError(
            f"unknown option(s) {unknown} for method {SCIPY_METHOD!r}; valid options are: "
            f"{', '.join(sorted(SCIPY_OPTIONS))}"
        )
    solver = options.get("solver", "LSODA")
    if solver not in SCIPY_SOLVERS:
        raise ODEInputError(
            f"option 'solver' of method {SCIPY_METHOD!r} must be one of "
            f"{', '.join(SCIPY_SOLVERS)}, got {solver!r}"
        )
    bounds = {}
    for key in ("min_step", "max_step"):
        if key in options:
            value = options[key]
            if not (_is_number(value) and value >= 0):
                raise ODEInputError(f"option {key!r} must be a non-negative number, got {value!r}")
            bounds[key] = float(value)
    if bounds.get("max_step", math.inf) <= 0:
        raise ODEInputError("option 'max_step' must be positive")
    return ScipySolver(solver, **bounds)


def _callbacks(func: Any, layout: StateLayout, execution: Execution) -> Callbacks | None:
    callbacks = Callbacks.find(func, layout)
    if callbacks is not None and execution != Execution():
        raise ODEInputError(
            "func has step callbacks (callback_step, ...), which are called in shared-step eager "
            "solves: they cannot be combined with options 'per_sample' or 'compile'"
        )
    return callbacks


def _check_landings(options: Mapping[str, Any], execution: Execution) -> None:
    for key in sorted(LANDING_OPTIONS & set(options)):
        if execution != Execution():
            raise ODEInputError(
                f"option {key!r} works with shared-step eager solves: it cannot be combined with "
                "options 'per_sample' or 'compile'"
            )


def _interp_perturb(
    options: Mapping[str, Any], layout: StateLayout, tableau: Tableau
) -> tuple[str, Nudge | None]:
    """A fixed grid's interpolation between grid points (torchdiffeq's default "linear" for
    fixed-step methods; an adaptive method on a grid keeps its own interpolant unless told) and
    its perturb."""
    given = options.get("interp")
    if given is not None and given not in ("linear", "cubic"):
        raise ODEInputError(f"option 'interp' must be 'linear' or 'cubic', got {given!r}")
    interp = given or ("method" if tableau.adaptive else "linear")
    perturb = options.get("perturb", False)
    if not isinstance(perturb, bool):
        raise ODEInputError(f"option 'perturb' must be True or False, got {perturb!r}")
    return interp, Nudge(layout.time_dtype) if perturb else None


def _landings(options: Mapping[str, Any], layout: StateLayout | None) -> Landings:
    """step_t and jump_t: times (1-D tensors or sequences) the adaptive steps land on."""
    points: dict[str, list[float]] = {}
    for key in ("step_t", "jump_t"):
        value = options.get(key)
        if value is None:
            points[key] = []
            continue
        try:
            given = torch.as_tensor(value, dtype=torch.float64).reshape(-1)
        except (TypeError, ValueError, RuntimeError):
            raise ODEInputError(
                f"option {key!r} must be a 1-D tensor (or a sequence) of times, got {value!r}"
            ) from None
        points[key] = given.tolist()
        if not all(math.isfinite(p) for p in points[key]):
            raise ODEInputError(f"option {key!r} must hold finite times, got {points[key]}")
    shared = sorted(set(points["step_t"]) & set(points["jump_t"]))
    if shared:
        raise ODEInputError(
            f"options 'step_t' and 'jump_t' share the time(s) {shared}: a time is either a step "
            "time or a jump time; leave it in 'jump_t'"
        )
    dtype = torch.float64 if layout is None else layout.time_dtype
    jumps = frozenset(points["jump_t"])
    return Landings(tuple(sorted({*points["step_t"], *jumps})), jumps, Nudge(dtype))


def _grid_option(
    options: Mapping[str, Any], times: list[float], func: Any, y0: State, t: torch.Tensor
) -> list[float] | None:
    """The fixed-step grid given by options 'step_size', 'grid' or 'grid_constructor'
    (called as torchdiffeq calls it: ``grid_constructor(func, y0, t)``), validated; else
    None."""
    given_by = sorted(GRID_GIVEN & set(options))
    if len(given_by) > 1:
        raise ODEInputError(f"give one of options 'step_size', 'grid', 'grid_constructor', not "
                            f"{given_by}")  # fmt: skip
    if "grid_constructor" in options:
        constructor = options["grid_constructor"]
        if not callable(constructor):
            raise ODEInputError(
                "option 'grid_constructor' must be a callable grid_constructor(func, y0, t) -> "
                f"1-D tensor of times, got {constructor!r}"
            )
        options = {"grid": constructor(func, y0, t)}
    if "step_size" in options:
        step_size = options["step_size"]
        if not (_is_number(step_size) and math.isfinite(step_size) and step_size > 0):
            raise ODEInputError(f"option 'step_size' must be a positive number, got {step_size!r}")
        return None
    if "grid" not in options:
        return None
    t0, t1 = times[0], times[-1]
    direction = 1.0 if t1 >= t0 else -1.0
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


def _positive_int(options: Mapping[str, Any], key: str, default: int) -> int:
    value = options.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ODEInputError(f"option {key!r} must be a positive integer, got {value!r}")
    return value


def _first_step(options: Mapping[str, Any]) -> float | None:
    value = options.get("first_step")
    if value is None:
        return None
    if torch.is_tensor(value) and value.numel() == 1:
        value = float(value)
    if not (_is_number(value) and math.isfinite(value) and value > 0):
        raise ODEInputError(
            f"option 'first_step' must be a positive number (the step's magnitude; its sign "
            f"follows t), got {value!r}"
        )
    return float(value)
