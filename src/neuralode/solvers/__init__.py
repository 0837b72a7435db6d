"""Runge–Kutta tableaus and step-size controllers."""

from .controller import CONTROLLERS, FixedGrid, IController, PIController
from .methods import DEFAULT_METHOD, METHODS
from .tableau import Tableau

__all__ = [
    "CONTROLLERS",
    "DEFAULT_METHOD",
    "METHODS",
    "FixedGrid",
    "IController",
    "PIController",
    "Tableau",
]
