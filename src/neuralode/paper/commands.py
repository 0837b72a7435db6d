"""The sub-commands of ``neuralode``, one per experiment.

Each sub-command is a :class:`Command` in :data:`COMMANDS`: a help line, a function adding its
options to an ``argparse`` parser, and a function running it from the parsed arguments and
returning the exit status. A command may instead group sub-commands of its own
(``neuralode mnist train``). Adding an experiment is one entry in :data:`COMMANDS`.

Every help shows the defaults; an invalid option is one line and exit status 2; an error while
running is one line (:mod:`.errors`) and exit status 1, with the traceback only under
``--debug`` or ``NEURALODE_DEBUG=1``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import ModuleType

from neuralode import __version__

from .arguments import ArgumentParser, HelpFormatter
from .errors import debug_requested, describe, exit_status
from .experiments import (
    augmented,
    bouncing_ball,
    cnf,
    cnf_report,
    latent,
    latent_report,
    mnist,
    mnist_report,
    spiral_demo,
)
from .training.distributed import leave_process_group


@dataclass(frozen=True)
class Command:
    """One sub-command: ``add_arguments(parser)`` declares its options and ``run(args)`` runs it
    and returns the exit status; or, for a group, ``subcommands`` by name."""

    help: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    run: Callable[[argparse.Namespace], int] | None = None
    subcommands: Mapping[str, Command] = field(default_factory=dict)


def _experiment_command(module: ModuleType, help: str) -> Command:
    """The command of an experiment ``module``: described by its docstring, with the options of
    its ``add_arguments`` and run by its ``run``."""
    return Command(help, module.__doc__ or "", module.add_arguments, module.run)


def _group_command(module: ModuleType, help: str, **subcommands: Command) -> Command:
    """A group of ``subcommands`` (``neuralode mnist train``), described by ``module``'s
    docstring."""
    return Command(help, module.__doc__ or "", subcommands=subcommands)


def _train_command(module: ModuleType, help: str, what: str) -> Command:
    """``train`` of an experiment ``module`` (its ``add_train_arguments`` and ``train``), which
    trains ``what`` (e.g. "one flow")."""
    description = f"Train {what}; checkpoints and a JSONL log go to --out."
    return Command(help, description, module.add_train_arguments, module.train)


def _eval_command(module: ModuleType, help: str, description: str) -> Command:
    """``eval`` of an experiment ``module`` (its ``add_eval_arguments`` and ``evaluate``)."""
    return Command(help, description, module.add_eval_arguments, module.evaluate)


COMMANDS: dict[str, Command] = {
    "demo": _experiment_command(
        spiral_demo,
        "learn a 2-D spiral's vector field from its trajectory (about a minute on a CPU)",
    ),
    "bouncing-ball": _experiment_command(
        bouncing_ball,
        "fit gravity and restitution to a bouncing ball's bounce times (events, ~10 s)",
    ),
    "augmented": _experiment_command(
        augmented,
        "plain vs augmented vs input-conditioned Neural ODEs on a 1-D swap and 2-D circles",
    ),
    "cnf": _group_command(
        cnf,
        "continuous normalizing flows vs planar flows: 2-D densities and 14x14 MNIST",
        train=_train_command(
            cnf,
            "train one flow by maximum likelihood (--data) or density matching (--target)",
            "one flow",
        ),
        eval=_eval_command(
            cnf,
            "test NLL (nats), KL or bits/dim of a saved flow",
            "Score a saved flow on held-out data (the same for every model).",
        ),
        sample=Command(
            "draw samples from a saved flow and plot them",
            "Draw samples from a saved flow; writes a PNG.",
            cnf.add_sample_arguments,
            cnf.sample,
        ),
        report=_experiment_command(
            cnf_report, "results/cnf.md, cnf.json and the figures from finished runs"
        ),
    ),
    "latent": _group_command(
        latent,
        "latent ODE against an RNN on irregularly sampled spirals (Table 2)",
        train=_train_command(
            latent, "train one model at one number of observations", "one Table 2 model"
        ),
        eval=_eval_command(
            latent,
            "RMSE of a saved model on held-out spirals",
            "Score a saved model on the held-out spirals.",
        ),
        report=_experiment_command(
            latent_report,
            "results/latent_ode.md, latent_ode.json and the figures from finished runs",
        ),
    ),
    "mnist": _group_command(
        mnist,
        "the paper's MNIST classifiers (Table 1): train or evaluate one model",
        train=_train_command(
            mnist, "train one model (ODE-Net, ResNet, RK-Net or MLP)", "one Table 1 model"
        ),
        eval=_eval_command(
            mnist,
            "test error of a saved model on the MNIST test set",
            "Evaluate a saved model on the 10,000 MNIST test images.",
        ),
        report=_experiment_command(
            mnist_report, "results/mnist.md: Table 1 and the adaptive-computation figure"
        ),
    ),
}


def _add_commands(
    subparsers: argparse._SubParsersAction, commands: Mapping[str, Command], depth: int
) -> None:
    for name, command in commands.items():
        parser = subparsers.add_parser(
            name,
            help=command.help,
            description=command.description,
            formatter_class=HelpFormatter,
        )
        if command.subcommands:
            nested = parser.add_subparsers(
                title="commands", metavar="COMMAND", dest=f"command_{depth + 1}", required=True
            )
            _add_commands(nested, command.subcommands, depth + 1)
        else:
            assert command.add_arguments is not None and command.run is not None
            command.add_arguments(parser)
            _add_debug(parser, default=argparse.SUPPRESS)
            parser.set_defaults(handler=command.run)


def _add_debug(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument(
        "--debug",
        action="store_true",
        default=default,
        help="show the full traceback of an error (as does NEURALODE_DEBUG=1)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``neuralode`` argument parser with every sub-command of :data:`COMMANDS`."""
    parser = ArgumentParser(
        prog="neuralode",
        formatter_class=HelpFormatter,
        description=(
            "Neural ordinary differential equations in PyTorch: run the experiments. "
            "Start with `neuralode demo`; `neuralode COMMAND --help` explains each command."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _add_debug(parser, default=False)
    subparsers = parser.add_subparsers(
        title="commands", metavar="COMMAND", dest="command_0", required=True
    )
    _add_commands(subparsers, COMMANDS, depth=0)
    return parser


def run(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and run its command; returns the exit status
    (0 for ``--help`` and ``--version``, 2 for invalid arguments, 1 for an error while running,
    130 for a run stopped by a signal). Errors are one line on stderr; with ``--debug`` or
    ``NEURALODE_DEBUG=1`` they propagate with their traceback."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 1
    try:
        status = args.handler(args)
    except KeyboardInterrupt:
        if debug_requested(args.debug):
            raise
        print("neuralode: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if debug_requested(args.debug):
            raise
        print(f"neuralode: error: {describe(error)}", file=sys.stderr)
        return exit_status(error)
    leave_process_group()  # a train command under torchrun: all ranks finish together
    return status
