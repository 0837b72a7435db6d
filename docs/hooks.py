"""MkDocs hook: the repository's ``results/`` folder, part of the site at ``results/``.

Pages link to results as GitHub reads them, by their path from the page
(``../results/cnf_toy.png`` from ``docs/``, ``../../results/cnf_toy.png`` from
``docs/experiments/``). Such a path leaves ``docs_dir``, and MkDocs resolves a link to the file
whose path relative to ``docs_dir`` it is: this hook adds every file of ``results/`` that pages
show or link (tables, figures, metrics) under that name, ``../results/...``, written to
``results/...`` in the site. Tables are embedded in pages with ``pymdownx.snippets``
(``--8<-- "results/cnf.md"``); see docs/development.md.
"""

from __future__ import annotations

import os
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files, InclusionLevel

SHARED = "results"
SUFFIXES = (".md", ".png", ".json")  # not the models (.pt) and logs


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add the files of ``results/`` as ``../results/...``, built to ``results/...``."""
    root = Path(config.config_file_path).parent
    for path in sorted((root / SHARED).rglob("*")):
        if path.suffix not in SUFFIXES or not path.is_file():
            continue
        site_path = path.relative_to(root).as_posix()
        built = File(site_path, str(root), config.site_dir, config.use_directory_urls)
        files.append(
            File(
                Path(os.path.relpath(path, config.docs_dir)).as_posix(),
                config.docs_dir,
                config.site_dir,
                config.use_directory_urls,
                dest_uri=built.dest_uri,
                inclusion=InclusionLevel.NOT_IN_NAV,
            )
        )
    return files
