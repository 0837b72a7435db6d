"""The library apart from the paper's code: ``import neuralode`` needs neither matplotlib nor tqdm
(the ``experiments`` extra), and the command line without them says what to install."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import neuralode

SOURCE_ROOT = Path(neuralode.__file__).resolve().parents[1]  # this checkout's neuralode

EXTRA = ("matplotlib", "tqdm")


def without(*packages: str) -> str:
    """Code that makes importing ``packages`` raise ImportError, as if they were not installed
    (torch, which imports tqdm when it can, then goes without it)."""
    return "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in packages)


LIBRARY = """
import json
import torch
import neuralode
import neuralode.nn

t = torch.linspace(0.0, 1.0, 5, dtype=torch.float64)
y = neuralode.odeint(lambda t, y: -y, torch.ones(3, dtype=torch.float64), t, rtol=1e-8, atol=1e-8)
torch.testing.assert_close(y[-1], torch.exp(-t[-1]).expand(3))
block = neuralode.nn.NeuralODE(neuralode.nn.MLPField(2, (8,)))
block(torch.randn(4, 2)).sum().backward()
loaded = [name for name, module in sys.modules.items() if module is not None]
print(json.dumps(sorted(
    name for name in loaded
    if name.split(".")[0] in ("matplotlib", "tqdm") or name.startswith("neuralode.paper")
)))
"""


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    """``python -c code`` in a fresh interpreter that imports this checkout's neuralode."""
    path = os.pathsep.join(filter(None, [str(SOURCE_ROOT), os.environ.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": path},
        check=False,
    )


def test_library_needs_neither_matplotlib_nor_tqdm_nor_the_paper_code() -> None:
    result = run_python(without(*EXTRA) + LIBRARY)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"  # nothing of them was imported


@pytest.mark.skipif(
    any(importlib.util.find_spec(name) is None for name in EXTRA),
    reason="the extra is not installed",
)
def test_import_loads_neither_matplotlib_nor_tqdm_when_installed() -> None:
    """With the extra installed, ``import neuralode`` and ``neuralode.nn`` load no module of it
    beyond those torch loads itself (torch imports tqdm when it can)."""
    code = """
import json
import sys
import torch
before = set(sys.modules)
import neuralode
import neuralode.nn
print(json.dumps(sorted(
    name for name in set(sys.modules) - before if name.split(".")[0] in ("matplotlib", "tqdm")
)))
"""
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_command_line_without_the_extra_names_what_to_install() -> None:
    main = "import runpy\nsys.argv = ['neuralode', 'demo']\nrunpy.run_module('neuralode')"
    result = run_python(without("tqdm") + main)  # python -m neuralode demo
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        'neuralode: the experiments need tqdm (not installed): pip install "neuralode[experiments]"'
    ]
    assert result.stdout == ""


def test_scipy_is_optional_and_named_when_missing() -> None:
    """``import neuralode`` and torch solves do not import scipy; method='scipy_solver' without
    it raises ODEInputError naming the install."""
    code = (
        without("scipy")
        + """
import torch
import neuralode
t = torch.tensor([0.0, 1.0])
neuralode.odeint(lambda t, y: -y, torch.ones(2), t)
try:
    neuralode.odeint(lambda t, y: -y, torch.ones(2), t, method="scipy_solver")
except neuralode.ODEInputError as error:
    print(error)
"""
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "pip install scipy" in result.stdout.strip().splitlines()[-1]
