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


COMMANDS: dict[str, Command] = {
    "demo": Command(
        help="learn a 2-D spiral's vector field from its trajectory (about a minute on a CPU)",
        description=spiral_demo.__doc__ or "",
        add_arguments=spiral_demo.add_arguments,
        run=spiral_demo.run,
    ),
    "bouncing-ball": Command(
        help="fit gravity and restitution to a bouncing ball's bounce times (events, ~10 s)",
        description=bouncing_ball.__doc__ or "",
        add_arguments=bouncing_ball.add_arguments,
        run=bouncing_ball.run,
    ),
    "augmented": Command(
        help="plain vs augmented vs input-conditioned Neural ODEs on a 1-D swap and 2-D circles",
        description=augmented.__doc__ or "",
        add_arguments=augmented.add_arguments,
        run=augmented.run,
    ),
    "cnf": Command(
        help="continuous normalizing flows vs planar flows: 2-D densities and 14x14 MNIST",
        description=cnf.__doc__ or "",
        subcommands={
            "train": Command(
                help="train one flow by maximum likelihood (--data) or density matching (--target)",
                description="Train one flow; checkpoints and a JSONL log go to --out.",
                add_arguments=cnf.add_train_arguments,
                run=cnf.train,
            ),
            "eval": Command(
                help="test NLL (nats), KL or bits/dim of a saved flow",
                description="Score a saved flow on held-out data (the same for every model).",
                add_arguments=cnf.add_eval_arguments,
                run=cnf.evaluate,
            ),
            "sample": Command(
                help="draw samples from a saved flow and plot them",
                description="Draw samples from a saved flow; writes a PNG.",
                add_arguments=cnf.add_sample_arguments,
                run=cnf.sample,
            ),
            "report": Command(
                help="results/cnf.md, cnf.json and the figures from finished runs",
                description=cnf_report.__doc__ or "",
                add_arguments=cnf_report.add_arguments,
                run=cnf_report.run,
            ),
        },
    ),
    "latent": Command(
        help="latent ODE against an RNN on irregularly sampled spirals (Table 2)",
        description=latent.__doc__ or "",
        subcommands={
            "train": Command(
                help="train one model at one number of observations",
                description="Train one Table 2 model; checkpoints and a JSONL log go to --out.",
                add_arguments=latent.add_train_arguments,
                run=latent.train,
            ),
            "eval": Command(
                help="RMSE of a saved model on held-out spirals",
                description="Score a saved model on the held-out spirals.",
                add_arguments=latent.add_eval_arguments,
                run=latent.evaluate,
            ),
            "report": Command(
                help="results/latent_ode.md, latent_ode.json and the figures from finished runs",
                description=latent_report.__doc__ or "",
                add_arguments=latent_report.add_arguments,
                run=latent_report.run,
            ),
        },
    ),
    "mnist": Command(
        help="the paper's MNIST classifiers (Table 1): train or evaluate one model",
        description=mnist.__doc__ or "",
        subcommands={
            "train": Command(
                help="train one model (ODE-Net, ResNet, RK-Net or MLP)",
                description="Train one Table 1 model; checkpoints and a JSONL log go to --out.",
                add_arguments=mnist.add_train_arguments,
                run=mnist.train,
            ),
            "eval": Command(
                help="test error of a saved model on the MNIST test set",
                description="Evaluate a saved model on the 10,000 MNIST test images.",
                add_arguments=mnist.add_eval_arguments,
                run=mnist.evaluate,
            ),
            "report": Command(
                help="results/mnist.md: Table 1 and the adaptive-computation figure",
                description=mnist_report.__doc__ or "",
                add_arguments=mnist_report.add_arguments,
                run=mnist_report.run,
            ),
        },
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
