"""Adams methods: torchdiffeq's ``explicit_adams`` and ``implicit_adams`` (alias ``fixed_adams``).

Linear multistep methods on a fixed grid, with torchdiffeq's meaning:

- the first steps bootstrap with ``rk4`` (Kutta's 3/8 rule) while the history of past
  derivatives is shorter than 3;
- then each step is Adams–Bashforth of order k, k the number of derivatives in the history
  (f at the step's start and the k − 1 before it), which grows by one per step up to
  ``max_order`` − 1;
- ``implicit_adams`` corrects that prediction with Adams–Moulton of order k + 1 by functional
  iteration, y1 = y + h (γ₀ f(t1, y1) + Σ γⱼ fⱼ), at most ``max_iters`` times, until
  two iterates' increments dy agree: max |dy − dy_old| / (atol + rtol·max(|dy_old|, |dy|)) < 1.
  An iteration that does not converge keeps the last iterate, drops the oldest derivative from
  the history (both as torchdiffeq does) and warns once per solve.

The coefficients are those of the actual past steps (variable-step Adams): on an even grid they
are torchdiffeq's constants, to rounding, and an uneven grid (output times as the grid, a short
last step, the adjoint's intervals) keeps the method's order where constant coefficients would
not. As a :class:`Tableau` the method declares only its dense output: a Hermite cubic from
k = (f(t, y), (y1 − y)/h) and f(t1, y1); the step is in :class:`neuralode.core.adams.Adams`.

Orders (measured, tests/test_adams.py) with the default ``max_order``: ``explicit_adams`` 4, set
by its one Adams–Bashforth step of order 3 while the history fills (the later steps are of
higher order); ``implicit_adams`` 5, set by the two rk4 steps (local errors O(h⁵) made once),
while the corrector converges. Adams–Bashforth of high order has a small stability region:
with max_order 12 (order 11) a step needs |h λ| below about 0.003 on y' = λ y, so on most
problems ``explicit_adams`` wants a lower ``max_order`` (as in torchdiffeq, whose numbers these
are).
"""

from __future__ import annotations

from dataclasses import dataclass

from .tableau import Tableau

MAX_ORDER = 12
"""torchdiffeq's largest ``max_order`` (and its default)."""
MIN_ORDER = 4
"""Below this ``max_order`` every step is rk4."""
MAX_ITERS = 4
"""torchdiffeq's default number of corrector iterations."""


@dataclass(frozen=True)
class AdamsMethod(Tableau):
    """An Adams method on a fixed grid.

    Attributes:
        corrector: an Adams–Moulton corrector after the Adams–Bashforth predictor.
        max_order: the history holds at most max_order − 1 past derivatives (1 to 12).
        max_iters: most functional iterations of the corrector per step.
    """

    corrector: bool = False
    max_order: int = MAX_ORDER
    max_iters: int = MAX_ITERS


def _adams(name: str, order: int, corrector: bool) -> AdamsMethod:
    """k = (f(t, y), (y1 − y)/h): the Hermite cubic's mean slope Σ b k is k[1]."""
    return AdamsMethod(
        name=name, order=order, c=(0.0, 0.0), a=((), (0.0,)), b=(0.0, 1.0), corrector=corrector
    )


EXPLICIT_ADAMS = _adams("explicit_adams", 4, corrector=False)
IMPLICIT_ADAMS = _adams("implicit_adams", 5, corrector=True)
FIXED_ADAMS = _adams("fixed_adams", 5, corrector=True)
"""torchdiffeq's older name for ``implicit_adams``."""
