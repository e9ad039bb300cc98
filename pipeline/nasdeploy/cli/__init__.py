"""Command line: one module per command, each registering on ``app``; errors become one line + exit 2."""

from __future__ import annotations

import sys

from rich.markup import escape

from nasdeploy.cli.app import app
from nasdeploy.errors import NasDeployError
from nasdeploy.progress import console

# Each module adds its commands to ``app``.
from nasdeploy.cli import profile, search, train, export, run, runtimes  # noqa: E402,F401


# the commands that run data-parallel under torchrun (nasdeploy.distributed); the others are one-process jobs
DATA_PARALLEL_COMMANDS = ("train", "search")


def main() -> None:
    try:
        refuse_torchrun_for_other_commands(sys.argv[1:])
        app(standalone_mode=True)
    except NasDeployError as exc:  # under torchrun every rank prints its line, prefixed with its rank
        # escaped: a fix such as pip install 'nasdeploy[tensorrt]' must not be read as rich markup
        console.print(f"{rank_prefix()}[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)


def refuse_torchrun_for_other_commands(args: list[str]) -> None:
    from nasdeploy.distributed import launched_world_size

    command = next((a for a in args if not a.startswith("-")), None)
    if launched_world_size() > 1 and command is not None and command not in DATA_PARALLEL_COMMANDS:
        raise NasDeployError(f"nasdeploy {command} runs as one process; launch it without torchrun (torchrun runs: "
                             f"{', '.join(f'nasdeploy {c}' for c in DATA_PARALLEL_COMMANDS)})")


def rank_prefix() -> str:
    from nasdeploy.distributed import env_rank, launched_world_size

    return f"rank {env_rank()} of {launched_world_size()}: " if launched_world_size() > 1 else ""


__all__ = ["app", "main"]
