"""The command line refuses nonsense at the door and reports every error in one line: a table of
bad inputs (command, exit status, words of the message), bad checkpoints, resume semantics,
real diverging runs, --debug, and help that shows every default."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pytest
import torch

from neuralode.paper import commands
from neuralode.paper.cli import main
from neuralode.paper.mnist_models import build_mnist_model
from neuralode.paper.training import load_checkpoint, save_checkpoint

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
needs_mnist = pytest.mark.skipif(not MNIST.exists(), reason=f"MNIST not found at {MNIST}")
GAUSSIAN = [
    "cnf", "train", "--data", "moons", "--model", "gaussian", "--iterations", "4",
    "--eval-every", "2", "--eval-samples", "20", "--threads", "1",
]  # fmt: skip
"""A cnf run that takes a fraction of a second."""


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A finished cnf run, and bad checkpoint files made from it."""
    root = tmp_path_factory.mktemp("files")
    run = root / "cnf-run"
    assert main([*GAUSSIAN, "--out", str(run)]) == 0
    data = (run / "checkpoint.pt").read_bytes()
    paths = {"run": run, "model": run / "model.pt"}
    for name, content in {
        "truncated": data[: len(data) // 2],
        "random": bytes(range(7, 256)) * 8,
        "empty": b"",
    }.items():
        paths[name] = root / f"{name}.pt"
        paths[name].write_bytes(content)
    paths["bare"] = root / "bare.pt"
    torch.save(load_checkpoint(run / "model.pt")["model"], paths["bare"])
    paths["mnist"] = root / "mnist.pt"
    config = {"command_0": "mnist", "command_1": "train", "model": "mlp"}
    save_checkpoint(
        paths["mnist"], {"model": build_mnist_model("mlp").state_dict(), "config": config}
    )
    paths["misfit"] = root / "misfit.pt"
    state = load_checkpoint(run / "model.pt")
    save_checkpoint(paths["misfit"], {**state, "config": {**state["config"], "dim": 3}})
    paths["file"] = root / "a-file"
    paths["file"].write_text("")
    return paths


BAD_INPUTS = [
    # argv, exit status, words the one-line message must hold
    (["cnf", "train", "--data", "moons", "--iterations", "-10"], 2,
     ["--iterations", "integer >= 1", "-10"]),
    (["cnf", "train", "--data", "moons", "--iterations", "0"], 2, ["--iterations", "integer >= 1"]),
    (["cnf", "train", "--data", "moons", "--eval-every", "-5"], 2, ["--eval-every", "-5"]),
    (["cnf", "train", "--data", "moons", "--eval-every", "0"], 2, ["--eval-every", "integer >= 1"]),
    (["cnf", "train", "--data", "moons", "--iterations", "7", "--eval-every", "3"], 2,
     ["--iterations 7", "multiple of --eval-every 3", "--iterations 6"]),
    (["cnf", "train", "--data", "moons", "--hidden", "64,x"], 2, ["--hidden", "64,x"]),
    (["latent", "train", "--epochs", "-2"], 2, ["--epochs", "-2"]),
    (["mnist", "train", "--lr", "nan"], 2, ["--lr", "finite number > 0", "nan"]),
    (["mnist", "train", "--lr", "inf"], 2, ["--lr", "finite"]),
    (["mnist", "train", "--limit", "-5"], 2, ["--limit", "integer >= 1"]),
    (["mnist", "train", "--limit", "0"], 2, ["--limit", "integer >= 1"]),
    (["mnist", "train", "--checkpoint-every", "nan"], 2, ["--checkpoint-every", "nan"]),
    (["mnist", "train", "--batch-size", "0"], 2, ["--batch-size", "integer >= 1"]),
    (["mnist", "train", "--tol", "0"], 2, ["--tol", "> 0"]),
    (["mnist", "train", "--tol", "-1"], 2, ["--tol", "> 0", "-1"]),
    (["mnist", "train", "--weight-decay", "-1"], 2, ["--weight-decay", ">= 0"]),
    (["mnist", "train", "--epochs", "x"], 2, ["--epochs", "an integer", "'x'"]),
    (["mnist", "train", "--device", "cuda:99"], 2, ["--device", "cuda:99", "--device cpu"]),
    (["mnist", "train", "--max-bad-batches", "0"], 2, ["--max-bad-batches"]),
    (["augmented", "--epochs", "-1"], 2, ["--epochs", "-1"]),
    (["bouncing-ball", "--init-restitution", "1.5"], 2,
     ["--init-restitution", "between 0 and 1"]),
    (["demo", "--iterations", "0"], 2, ["--iterations"]),
    (["mnist", "eval", "--checkpoint", "{missing}"], 2, ["--checkpoint", "no such file"]),
    (["cnf", "eval", "--checkpoint", "{run}"], 2, ["--checkpoint", "is a folder"]),
    (["cnf", "eval", "--checkpoint", "{truncated}"], 1, ["{truncated}", "truncated or corrupt"]),
    (["cnf", "eval", "--checkpoint", "{random}"], 1, ["{random}", "not a PyTorch checkpoint"]),
    (["cnf", "eval", "--checkpoint", "{empty}"], 1, ["{empty}", "is empty"]),
    (["cnf", "eval", "--checkpoint", "{bare}"], 1, ["{bare}", "bare state_dict"]),
    (["cnf", "eval", "--checkpoint", "{mnist}"], 1,
     ["{mnist}", "`neuralode mnist`", "not `neuralode cnf`"]),
    (["cnf", "eval", "--checkpoint", "{misfit}"], 1,
     ["{misfit}", "weights do not fit the model its options describe", "size mismatch"]),
    (["latent", "eval", "--checkpoint", "{model}"], 1,
     ["{model}", "`neuralode cnf`", "a latent run"]),
    (["mnist", "eval", "--checkpoint", "{model}"], 1,
     ["{model}", "`neuralode cnf`", "a mnist run"]),
    ([*GAUSSIAN, "--out", "{file}/run"], 1, ["run folder {file}/run cannot be written", "--out"]),
    ([*GAUSSIAN, "--out", "{run}", "--resume", "--lr", "0.5", "--iterations", "8"], 1,
     ["cannot resume", "--lr 0.5 (the run's: 0.001)", "--iterations 8 (the run's: 4)"]),
    (["mnist", "eval", "--checkpoint", "{mnist}", "--data-dir", "{run}/nothing"], 1,
     ["MNIST files missing from {run}/nothing", "pass --download"]),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "status", "words"), BAD_INPUTS, ids=lambda v: str(v)[:60])
def test_bad_input_is_one_line_with_its_exit_status(
    argv: list[str],
    status: int,
    words: list[str],
    files: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    names = {name: str(path) for name, path in files.items()} | {"missing": "/no/such.pt"}
    assert main([arg.format(**names) for arg in argv]) == status
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    for word in words:
        assert word.format(**names) in lines[0]


def test_a_finished_run_says_so(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    before = (files["run"] / "log.jsonl").read_text()
    assert main([*GAUSSIAN, "--out", str(files["run"]), "--resume", "--device", "cpu"]) == 0
    assert "already finished its 2 epochs; nothing left to train" in capsys.readouterr().out
    assert (files["run"] / "log.jsonl").read_text() == before


def test_eval_says_what_it_evaluates(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["cnf", "eval", "--checkpoint", str(files["model"]), "--samples", "50"]) == 0
    assert "moons-gaussian: evaluating on 50 samples" in capsys.readouterr().out


def test_debug_shows_the_traceback(
    files: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["cnf", "eval", "--checkpoint", str(files["truncated"])]
    with pytest.raises(ValueError, match="truncated or corrupt"):
        main([*argv, "--debug"])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        main(["--debug", *argv])
    monkeypatch.setenv("NEURALODE_DEBUG", "1")
    with pytest.raises(ValueError, match="truncated or corrupt"):
        main(argv)
    monkeypatch.setenv("NEURALODE_DEBUG", "0")
    assert main(argv) == 1


def test_an_unexpected_error_is_one_line_naming_its_type(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(args: argparse.Namespace) -> int:
        raise KeyError("surprise")

    monkeypatch.setattr(commands.bouncing_ball, "run", broken)
    monkeypatch.setitem(
        commands.COMMANDS,
        "bouncing-ball",
        commands.Command("h", "d", commands.bouncing_ball.add_arguments, broken),
    )
    assert main(["bouncing-ball"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("neuralode: error: KeyError: 'surprise'") and "--debug" in err
    assert len(err.splitlines()) == 1


@needs_mnist
def test_a_diverging_mnist_run_stops_with_exit_1_and_writes_nothing_non_finite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's `mnist train --model mlp --lr 1e6` on 256 images, checkpointing after every
    step: the first step's checkpoint is the last good one."""
    out = tmp_path / "run"
    argv = [
        "mnist", "train", "--model", "mlp", "--lr", "1e6", "--limit", "256", "--batch-size",
        "32", "--test-limit", "50", "--epochs", "2", "--data-dir", str(MNIST), "--out", str(out),
        "--threads", "1", "--checkpoint-every", "0",
    ]  # fmt: skip
    assert main(argv) == 1
    message = capsys.readouterr().err.strip()
    assert len(message.splitlines()) == 1
    assert "training diverged at step" in message and "last finite loss 2.3" in message
    assert f"the last good checkpoint is {out / 'checkpoint.pt'}" in message
    assert not (out / "model.pt").exists()
    state = load_checkpoint(out / "checkpoint.pt")
    assert all(torch.isfinite(value).all() for value in state["model"].values())
    assert math.isfinite(state["guard"]["last_loss"])


def test_a_diverging_planar_flow_stops_with_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's planar flow at --lr 1e6: its loss stays finite but explodes."""
    argv = [
        "cnf", "train", "--data", "moons", "--model", "planar", "--layers", "4", "--lr", "1e6",
        "--iterations", "20", "--eval-every", "10", "--eval-samples", "20",
        "--out", str(tmp_path), "--threads", "1",
    ]  # fmt: skip
    assert main(argv) == 1
    message = capsys.readouterr().err
    assert "training diverged at step" in message and "times the first loss" in message
    assert "no checkpoint was written yet" in message
    assert not (tmp_path / "model.pt").exists()


def _leaf_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subparsers:
        return [parser]
    children = dict.fromkeys(subparsers[0].choices.values())  # aliases once
    return [leaf for child in children for leaf in _leaf_parsers(child)]


LEAVES = _leaf_parsers(commands.build_parser())


@pytest.mark.parametrize("parser", LEAVES, ids=lambda p: p.prog)
def test_help_shows_every_default(parser: argparse.ArgumentParser) -> None:
    formatter = parser._get_formatter()
    one_required = {
        a for g in parser._mutually_exclusive_groups if g.required for a in g._group_actions
    }
    for action in parser._actions:
        if not action.option_strings or action.nargs == 0 or action.required:
            continue
        if action in one_required:  # e.g. cnf train's --data or --target
            continue
        text = formatter._get_help_string(action)
        assert "default" in text, f"{parser.prog} {action.option_strings[0]}: {text!r}"
    assert "(default: " in parser.format_help()


@pytest.mark.parametrize("name", ["augmented", "bouncing-ball"])
def test_commands_without_batches_write_under_runs(name: str) -> None:
    (parser,) = [p for p in LEAVES if p.prog == f"neuralode {name}"]
    assert "--batch-size" not in parser.format_help()
    assert parser.get_default("results").parts[0] == "runs"


def test_runs_folder_is_ignored_by_git() -> None:
    ignored = (Path(__file__).resolve().parents[1] / ".gitignore").read_text().splitlines()
    assert "/runs/" in ignored
