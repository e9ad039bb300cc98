"""Command line: one module per command, each registering on ``app``; errors become one line + exit 2."""

from __future__ import annotations

import sys

from nasdeploy.cli.app import app
from nasdeploy.errors import NasDeployError
from nasdeploy.progress import console

# Each module adds its commands to ``app``.
from nasdeploy.cli import profile, search, train, export, run  # noqa: E402,F401


def main() -> None:
    try:
        app(standalone_mode=True)
    except NasDeployError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)


__all__ = ["app", "main"]
