"""Compiled solves kept on disk: a new process loads what an earlier one compiled, and a different
graph, constant or input layout is a different entry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from neuralode.core.compile_cache import cache_folder, graph_key

SETTINGS = {"cpp.use_decompose_tanh": True}

CHILD = """
import json, sys, torch
import neuralode
torch.manual_seed(0)
field = torch.nn.Linear(2, 2)
y0 = torch.randn(3, 2)
with torch.no_grad():
    y = neuralode.odeint(lambda t, y: torch.tanh(field(y)), y0, torch.linspace(0, 1, 3),
                         options={"compile": True})
print(json.dumps({"y": y.tolist()}))
"""


def _traced(fn) -> torch.fx.GraphModule:
    return torch.fx.symbolic_trace(fn)


def test_the_key_changes_with_the_code_the_constants_and_the_inputs() -> None:
    x = [torch.zeros(3, 2)]
    tanh = _traced(lambda y: torch.tanh(y) * 2.0)
    assert graph_key(tanh, x, SETTINGS) == graph_key(_traced(lambda y: torch.tanh(y) * 2.0), x,
                                                     SETTINGS)  # fmt: skip
    assert graph_key(tanh, x, SETTINGS) != graph_key(_traced(lambda y: torch.sin(y) * 2.0), x,
                                                     SETTINGS)  # fmt: skip
    assert graph_key(tanh, x, SETTINGS) != graph_key(_traced(lambda y: torch.tanh(y) * 3.0), x,
                                                     SETTINGS)  # fmt: skip
    assert graph_key(tanh, x, SETTINGS) != graph_key(tanh, [torch.zeros(4, 2)], SETTINGS)
    assert graph_key(tanh, x, SETTINGS) != graph_key(tanh, [torch.zeros(3, 2).double()], SETTINGS)
    assert graph_key(tanh, x, SETTINGS) != graph_key(tanh, x, {})

    class Held(torch.nn.Module):
        def __init__(self, value: float) -> None:
            super().__init__()
            self.register_buffer("shift", torch.full((2,), value))

        def forward(self, y: torch.Tensor) -> torch.Tensor:
            return y + self.shift

    one, two = torch.fx.symbolic_trace(Held(1.0)), torch.fx.symbolic_trace(Held(2.0))
    assert one.code == two.code  # the same code; only the held tensor's values differ
    assert graph_key(one, x, SETTINGS) != graph_key(two, x, SETTINGS)


def test_the_folder_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.delenv("NEURALODE_COMPILE_CACHE", raising=False)
    assert cache_folder() is None  # off unless asked for
    monkeypatch.setenv("NEURALODE_COMPILE_CACHE", str(tmp_path))
    assert cache_folder() == tmp_path
    monkeypatch.setenv("NEURALODE_COMPILE_CACHE", "off")
    assert cache_folder() is None
    monkeypatch.setenv("NEURALODE_COMPILE_CACHE", "on")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_folder() == tmp_path / "neuralode" / "compiled"


def _solve_in_a_new_process(cache: Path | str) -> dict:
    env = {**os.environ, "NEURALODE_COMPILE_CACHE": str(cache)}
    done = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True,
                          text=True, timeout=900, check=True)  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_new_process_loads_the_solve_an_earlier_one_compiled(tmp_path: Path) -> None:
    first = _solve_in_a_new_process(tmp_path)
    (package,) = tmp_path.glob("*.pt2")
    written = package.stat()
    second = _solve_in_a_new_process(tmp_path)
    assert second["y"] == first["y"]
    assert list(tmp_path.glob("*")) == [package]  # loaded, not compiled and written again
    assert (package.stat().st_ino, package.stat().st_mtime_ns) == (
        written.st_ino,
        written.st_mtime_ns,
    )
    # as compiled without the cache, to rounding (inductor's and AOTInductor's code may round
    # differently)
    without = torch.tensor(_solve_in_a_new_process("off")["y"])
    torch.testing.assert_close(torch.tensor(first["y"]), without, rtol=1e-6, atol=1e-6)
