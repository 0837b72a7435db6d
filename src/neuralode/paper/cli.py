"""The ``neuralode`` command line (``neuralode COMMAND ...`` or ``python -m neuralode``).

The experiments need the ``experiments`` extra (matplotlib, tqdm). :func:`main` checks for it
before it imports them (:mod:`.commands`), so that without it the command fails with one line
naming what is missing and how to install it, not with a traceback.
"""

from __future__ import annotations

import importlib.util
import sys

EXTRA_PACKAGES = ("matplotlib", "tqdm")
"""The packages of the ``experiments`` extra, which the library itself does not need."""
INSTALL_EXTRA = 'pip install "neuralode[experiments]"'


def missing_packages() -> list[str]:
    """The packages of :data:`EXTRA_PACKAGES` that cannot be imported."""
    return [name for name in EXTRA_PACKAGES if importlib.util.find_spec(name) is None]


def main(argv: list[str] | None = None) -> int:
    """Run ``neuralode`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status
    (0 for ``--help`` and ``--version``, 2 for invalid arguments, 1 without the extra)."""
    missing = missing_packages()
    if missing:
        names = ", ".join(missing)
        print(
            f"neuralode: the experiments need {names} (not installed): {INSTALL_EXTRA}",
            file=sys.stderr,
        )
        return 1
    from .commands import run  # imports the experiments, hence matplotlib and tqdm

    return run(argv)
