"""``python -m neuralode COMMAND ...``: the same as the ``neuralode`` command."""

import sys

from .paper.cli import main

sys.exit(main())
