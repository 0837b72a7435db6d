"""Compiled solves kept on disk, so that a new process skips compiling a solve compiled before.

The compiled loop (:mod:`neuralode.core.compiled`) holds a ``while_loop``, which inductor's own
caches do not store. Solves that record no autograd graph (inference, the adjoint's forward
solve) are therefore compiled ahead of time with AOTInductor from the graph that dynamo traced,
and the package is saved under a key of everything that decides the generated code: the graph's
code (the method, the options and the vector field's operations, with its constants), the
inputs' shapes, strides and dtypes, the compiler's settings, torch's version and the CPU's
instruction set. A later process that traces the same graph loads the package (about 0.01 s)
instead of compiling it (seconds). Dynamo still traces each process's first solve and guards it
as usual, so a changed field or option is a new graph and a new key, never a stale answer.

It is off unless asked for: ``NEURALODE_COMPILE_CACHE=on`` keeps the packages in
``$XDG_CACHE_HOME/neuralode/compiled`` or ``~/.cache/neuralode/compiled``, and
``NEURALODE_COMPILE_CACHE=<folder>`` in that folder. The trade-off, measured on this project's
CPU (results/compile_cache.md): a new process's first solve takes seconds instead of tens of
seconds, but AOTInductor's code for the loop can run slower than the code inductor compiles in
the process (3.67 against 2.63 ms per per-sample MLP solve at batch 256), so long-running
processes should leave it off.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

FORMAT = 1
"""Bumped when what a package holds, or how it is called, changes."""

Compiled = Callable[..., Any]


def cache_folder() -> Path | None:
    """Where packages are kept, or None when the cache is off (the default)."""
    setting = os.environ.get("NEURALODE_COMPILE_CACHE", "")
    if setting.lower() in ("", "off"):
        return None
    if setting.lower() != "on":
        return Path(setting)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "neuralode" / "compiled"


def cached_compile(
    graph: torch.fx.GraphModule,
    inputs: list[torch.Tensor],
    decompositions: Callable[[], dict[Any, Any]],
    settings: dict[str, Any],
) -> Compiled | None:
    """The compiled ``graph`` (called with tensors like ``inputs``) from the cache, or compiled
    now with AOTInductor (with ``decompositions()`` and inductor's ``settings``) and saved;
    None when the cache is off or the graph cannot be exported (the caller compiles it the
    usual way)."""
    folder = cache_folder()
    if folder is None:
        return None
    path = folder / f"{graph_key(graph, inputs, settings)}.pt2"
    if path.exists():
        try:
            return _load(path)
        except Exception:  # (a package written by another build, or damaged: compile again)
            path.unlink(missing_ok=True)
    try:
        _compile_to(path, graph, inputs, decompositions(), settings)
    except Exception as error:
        warnings.warn(
            f"neuralode: the compiled solve could not be kept on disk ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}); compiling it for this "
            "process only",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    return _load(path)


def _load(path: Path) -> Compiled:
    """The package's compiled graph as a function of the graph's flat tensor inputs returning
    its flat outputs (its loader called directly: the package's own call parses its input and
    output specifications at every call, which costs more than a small solve)."""
    loader = torch._inductor.aoti_load_package(str(path)).loader

    def run(*inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(loader.boxed_run(list(inputs)))

    return run


def _compile_to(
    path: Path,
    graph: torch.fx.GraphModule,
    inputs: list[torch.Tensor],
    decompositions: dict[Any, Any],
    settings: dict[str, Any],
) -> None:
    """Export ``graph``, compile it with AOTInductor and save the package at ``path`` (written
    whole or not at all, also when processes race)."""
    exported = torch.export.export(graph, tuple(inputs), strict=False)
    exported = exported.run_decompositions(decompositions)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(suffix=".pt2", dir=path.parent)
    os.close(handle)
    try:
        torch._inductor.aoti_compile_and_package(
            exported, package_path=partial, inductor_configs=settings
        )
        os.replace(partial, path)
    finally:
        Path(partial).unlink(missing_ok=True)


def graph_key(graph: torch.fx.GraphModule, inputs: list[torch.Tensor], settings: dict) -> str:
    """A hex digest of what decides the code compiled from ``graph`` for ``inputs``."""
    digest = hashlib.sha256()
    for part in (FORMAT, torch.__version__, torch.backends.cpu.get_cpu_capability(), settings):
        digest.update(repr(part).encode())
    for module in graph.modules():
        if isinstance(module, torch.fx.GraphModule):
            digest.update(module.code.encode())
    for name, constant in sorted(_constants(graph).items()):
        digest.update(name.encode())
        digest.update(_tensor_bytes(constant))
    for x in inputs:
        digest.update(repr((tuple(x.shape), x.stride(), x.dtype, x.device.type)).encode())
    return digest.hexdigest()[:32]


def _constants(graph: torch.fx.GraphModule) -> dict[str, torch.Tensor]:
    """The tensors the graph and its subgraphs hold (not passed as inputs): their values are
    part of its code."""
    held = dict(graph.named_parameters())
    held.update(graph.named_buffers())
    for prefix, module in graph.named_modules():
        held.update(
            (f"{prefix}.{name}", value)
            for name, value in vars(module).items()
            if isinstance(value, torch.Tensor)
        )
    return held


def _tensor_bytes(x: torch.Tensor) -> bytes:
    """The bytes of a tensor's values, with its dtype and shape (graph constants are small)."""
    flat = x.detach().cpu().contiguous().reshape(-1)
    return repr((x.dtype, tuple(x.shape))).encode() + bytes(flat.view(torch.uint8).tolist())
