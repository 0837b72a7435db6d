"""The Runge–Kutta methods offered by ``odeint(method=...)``: each one is only a tableau.

Coefficients are the published ones: Dormand & Prince (1980) with Shampine's (1986) midpoint
weights for dopri5; Prince & Dormand (1981) RK8(7)13M for dopri8; Bogacki & Shampine (1989);
Tsitouras (2011) with its interpolant; Kutta's 3/8 rule for rk4; Heun's third-order method;
Fehlberg's RK1(2) (the order-2 propagation of torchdiffeq's fehlberg2).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from numpy.polynomial import polynomial as npoly

from .adams_method import EXPLICIT_ADAMS, FIXED_ADAMS, IMPLICIT_ADAMS
from .implicit_methods import IMPLICIT_METHODS
from .rosenbrock_method import ROSENBROCK23
from .tableau import Tableau


def _difference(high: tuple[float, ...], low: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(h - lo for h, lo in zip(high, low, strict=True))


EULER = Tableau(name="euler", order=1, c=(0.0,), a=((),), b=(1.0,))

MIDPOINT = Tableau(name="midpoint", order=2, c=(0.0, 0.5), a=((), (0.5,)), b=(0.0, 1.0))

HEUN2 = Tableau(name="heun2", order=2, c=(0.0, 1.0), a=((), (1.0,)), b=(0.5, 0.5))

RK4 = Tableau(
    name="rk4",
    order=4,
    c=(0.0, 1 / 3, 2 / 3, 1.0),
    a=((), (1 / 3,), (-1 / 3, 1.0), (1.0, -1.0, 1.0)),
    b=(1 / 8, 3 / 8, 3 / 8, 1 / 8),
)

HEUN3 = Tableau(
    name="heun3",
    order=3,
    c=(0.0, 1 / 3, 2 / 3),
    a=((), (1 / 3,), (0.0, 2 / 3)),
    b=(1 / 4, 0.0, 3 / 4),
)

_FEHLBERG2_B = (1 / 512, 255 / 256, 1 / 512)
FEHLBERG2 = Tableau(
    name="fehlberg2",
    order=2,
    c=(0.0, 1 / 2, 1.0),
    a=((), (1 / 2,), (1 / 256, 255 / 256)),
    b=_FEHLBERG2_B,
    b_err=_difference(_FEHLBERG2_B, (1 / 256, 255 / 256, 0.0)),
    error_order=1,
)

ADAPTIVE_HEUN = Tableau(
    name="adaptive_heun",
    order=2,
    c=(0.0, 1.0),
    a=((), (1.0,)),
    b=(0.5, 0.5),
    b_err=_difference((0.5, 0.5), (1.0, 0.0)),
    error_order=1,
)

BOSH3 = Tableau(
    name="bosh3",
    order=3,
    c=(0.0, 0.5, 0.75, 1.0),
    a=((), (0.5,), (0.0, 0.75), (2 / 9, 1 / 3, 4 / 9)),
    b=(2 / 9, 1 / 3, 4 / 9, 0.0),
    b_err=_difference((2 / 9, 1 / 3, 4 / 9, 0.0), (7 / 24, 1 / 4, 1 / 3, 1 / 8)),
    error_order=2,
)

_DOPRI5_B = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
DOPRI5 = Tableau(
    name="dopri5",
    order=5,
    c=(0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0),
    a=(
        (),
        (1 / 5,),
        (3 / 40, 9 / 40),
        (44 / 45, -56 / 15, 32 / 9),
        (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
        (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
        _DOPRI5_B[:6],
    ),
    b=_DOPRI5_B,
    # Shampine's embedded fourth-order solution, as torchdiffeq's dopri5 (the same steps and
    # NFE as torchdiffeq; Hairer's 5179/57600, … estimate is about 1.5 times larger).
    b_err=_difference(
        _DOPRI5_B,
        (1951 / 21600, 0.0, 22642 / 50085, 451 / 720, -12231 / 42400, 649 / 6300, 1 / 60),
    ),
    error_order=4,
    c_mid=(
        6025192743 / 30085553152 / 2,
        0.0,
        51252292925 / 65400821598 / 2,
        -2691868925 / 45128329728 / 2,
        187940372067 / 1594534317056 / 2,
        -1776094331 / 19743644256 / 2,
        11237099 / 235043384 / 2,
    ),
)


def _tsit5_dense_basis() -> tuple[tuple[float, ...], ...]:
    """Tsitouras' interpolation polynomials b_i(θ), expanded to coefficients of θ..θ⁴."""

    def product(scale: float, *factors: tuple[float, ...]) -> np.ndarray:
        poly = np.array([scale])
        for factor in factors:  # each factor lists coefficients from θ⁰ upwards
            poly = npoly.polymul(poly, factor)
        return poly

    theta, theta2 = (0.0, 1.0), (0.0, 0.0, 1.0)
    polys = [
        product(
            -1.0530884977290216,
            theta,
            (-1.3299890189751412, 1.0),
            (0.7139816917074209, -1.4364028541716351, 1.0),
        ),
        product(0.1017, theta2, (1.2949852507374631, -2.1966568338249754, 1.0)),
        product(2.490627285651252793, theta2, (1.57803468208092486, -2.38535645472061657, 1.0)),
        product(
            -16.54810288924490272,
            theta2,
            (-1.21712927295533244, 1.0),
            (-0.61620406037800089, 1.0),
        ),
        product(
            47.37952196281928122,
            theta2,
            (-1.203071208372362603, 1.0),
            (-0.658047292653547382, 1.0),
        ),
        product(-34.87065786149660974, theta2, (-1.2, 1.0), (-0.666666666666666667, 1.0)),
        product(2.5, theta2, (-1.0, 1.0), (-0.6, 1.0)),
    ]
    # Drop the θ⁰ coefficient (zero for every b_i) and pad to degree 4.
    return tuple(tuple(np.pad(p, (0, 5 - len(p)))[1:]) for p in polys)


_TSIT5_B = (
    0.09646076681806523,
    0.01,
    0.4798896504144996,
    1.379008574103742,
    -3.290069515436081,
    2.324710524099774,
    0.0,
)
TSIT5 = Tableau(
    name="tsit5",
    order=5,
    c=(0.0, 0.161, 0.327, 0.9, 0.9800255409045097, 1.0, 1.0),
    a=(
        (),
        (0.161,),
        (-0.008480655492356989, 0.335480655492357),
        (2.8971530571054935, -6.359448489975075, 4.3622954328695815),
        (5.325864828439257, -11.748883564062828, 7.4955393428898365, -0.09249506636175525),
        (
            5.86145544294642,
            -12.92096931784711,
            8.159367898576159,
            -0.071584973281401,
            -0.02826905039406838,
        ),
        _TSIT5_B[:6],
    ),
    b=_TSIT5_B,
    # Tsitouras' published "b-tilde" are already the error weights; the sign of the last one
    # is corrected as in later implementations.
    b_err=(
        0.00178001105222577714,
        0.0008164344596567469,
        -0.007880878010261995,
        0.1447110071732629,
        -0.5823571654525552,
        0.45808210592918697,
        -1 / 66,
    ),
    error_order=4,
    dense_basis=_tsit5_dense_basis(),
)

_DOPRI8_B = (
    14005451 / 335480064,
    0.0,
    0.0,
    0.0,
    0.0,
    -59238493 / 1068277825,
    181606767 / 758867731,
    561292985 / 797845732,
    -1041891430 / 1371343529,
    760417239 / 1151165299,
    118820643 / 751138087,
    -528747749 / 2220607170,
    1 / 4,
)
_DOPRI8_B_LOW = (
    13451932 / 455176623,
    0.0,
    0.0,
    0.0,
    0.0,
    -808719846 / 976000145,
    1757004468 / 5645159321,
    656045339 / 265891186,
    -3867574721 / 1518517206,
    465885868 / 322736535,
    53011238 / 667516719,
    2 / 45,
    0.0,
)


def _dopri8_dense_basis() -> tuple[tuple[float, ...], ...]:
    """Prince–Dormand's continuous extension b_i(θ) = θ·q_i(θ), q_i quintic: 14 polynomials,
    one per stage and the last for f1, as coefficients of θ..θ⁶. The q_i are data
    (``dopri8_dense.json``: vector index -> coefficients of q_i from θ⁵ down to θ⁰; the
    vectors not named have q_i = 0)."""
    quintics = json.loads(Path(__file__).with_name("dopri8_dense.json").read_text())
    basis = [(0.0,) * 6] * 14
    for index, coefficients in quintics.items():
        basis[int(index)] = tuple(reversed(coefficients))
    return tuple(basis)


# fmt: off
_DOPRI8_A = (
        (),
        (1 / 18,),
        (1 / 48, 1 / 16),
        (1 / 32, 0.0, 3 / 32),
        (5 / 16, 0.0, -75 / 64, 75 / 64),
        (3 / 80, 0.0, 0.0, 3 / 16, 3 / 20),
        (
            29443841 / 614563906,
            0.0,
            0.0,
            77736538 / 692538347,
            -28693883 / 1125000000,
            23124283 / 1800000000,
        ),
        (
            16016141 / 946692911,
            0.0,
            0.0,
            61564180 / 158732637,
            22789713 / 633445777,
            545815736 / 2771057229,
            -180193667 / 1043307555,
        ),
        (
            39632708 / 573591083,
            0.0,
            0.0,
            -433636366 / 683701615,
            -421739975 / 2616292301,
            100302831 / 723423059,
            790204164 / 839813087,
            800635310 / 3783071287,
        ),
        (
            246121993 / 1340847787,
            0.0,
            0.0,
            -37695042795 / 15268766246,
            -309121744 / 1061227803,
            -12992083 / 490766935,
            6005943493 / 2108947869,
            393006217 / 1396673457,
            123872331 / 1001029789,
        ),
        (
            -1028468189 / 846180014,
            0.0,
            0.0,
            8478235783 / 508512852,
            1311729495 / 1432422823,
            -10304129995 / 1701304382,
            -48777925059 / 3047939560,
            15336726248 / 1032824649,
            -45442868181 / 3398467696,
            3065993473 / 597172653,
        ),
        (
            185892177 / 718116043,
            0.0,
            0.0,
            -3185094517 / 667107341,
            -477755414 / 1098053517,
            -703635378 / 230739211,
            5731566787 / 1027545527,
            5232866602 / 850066563,
            -4093664535 / 808688257,
            3962137247 / 1805957418,
            65686358 / 487910083,
        ),
        (
            403863854 / 491063109,
            0.0,
            0.0,
            -5068492393 / 434740067,
            -411421997 / 543043805,
            652783627 / 914296604,
            11173962825 / 925320556,
            -13158990841 / 6184727034,
            3936647629 / 1978049680,
            -160528059 / 685178525,
            248638103 / 1413531060,
            0.0,
        ),
)
# fmt: on

DOPRI8 = Tableau(
    name="dopri8",
    order=8,
    c=(
        0.0,
        1 / 18,
        1 / 12,
        1 / 8,
        5 / 16,
        3 / 8,
        59 / 400,
        93 / 200,
        5490023248 / 9719169821,
        13 / 20,
        1201146811 / 1299019798,
        1.0,
        1.0,
    ),
    a=_DOPRI8_A,
    b=_DOPRI8_B,
    b_err=_difference(_DOPRI8_B, _DOPRI8_B_LOW),
    error_order=7,
    dense_basis=_dopri8_dense_basis(),
)

METHODS: dict[str, Tableau] = {
    tableau.name: tableau
    for tableau in (
        EULER,
        MIDPOINT,
        HEUN2,
        HEUN3,
        RK4,
        ADAPTIVE_HEUN,
        FEHLBERG2,
        BOSH3,
        DOPRI5,
        TSIT5,
        DOPRI8,
        ROSENBROCK23,
        EXPLICIT_ADAMS,
        IMPLICIT_ADAMS,
        FIXED_ADAMS,
        *IMPLICIT_METHODS,
    )
}
DEFAULT_METHOD = "dopri5"
