"""Griffe extension for the API reference: the docstrings' Sphinx roles
(:func:`~neuralode.odeint`, :class:`Solution`) shown as code (``odeint``, ``Solution``), as
mkdocstrings reads docstrings as Markdown."""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:func|class|meth|mod|attr|data|exc|obj):`(~?)([^`]+)`")


def _as_code(match: re.Match[str]) -> str:
    """``~a.b.c`` → ``c``; ``a.b.c`` → ``a.b.c``."""
    short, name = match.groups()
    return f"`{name.rsplit('.', 1)[-1] if short else name}`"


class SphinxRoles(griffe.Extension):
    """Rewrites the roles of every docstring before it is parsed."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Rewrite ``obj``'s docstring."""
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(_as_code, obj.docstring.value)
