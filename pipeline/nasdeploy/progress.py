"""One place for progress bars and logging, so every long command looks the same."""

from __future__ import annotations

import logging
import os
import sys

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

# Rich falls back to 80 columns when stderr is a file or pipe (logs, CI), which folds the summary tables
# into unreadable slivers; a log gets 160 columns unless COLUMNS says otherwise.
console = Console(stderr=True, width=None if sys.stderr.isatty() or "COLUMNS" in os.environ else 160)


def setup_logging(verbose: bool = False) -> None:
    """Rich logging; under torchrun ranks other than 0 log warnings and errors only (``distributed``)."""
    from nasdeploy.distributed import is_main_process

    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(
        level=level if is_main_process() else max(level, logging.WARNING),
        format="%(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(console=console, show_path=False)],
        force=True,
    )


def progress_bar(transient: bool = False) -> Progress:
    """A rich Progress with description, bar, count, elapsed/remaining time and a free 'info' field.

    Use ``task = bar.add_task("epoch", total=n, info="")`` and ``bar.update(task, advance=1, info="loss 0.3")``.
    Under torchrun only rank 0 draws it.
    """
    from nasdeploy.distributed import is_main_process

    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        transient=transient,
        disable=not is_main_process(),
    )
