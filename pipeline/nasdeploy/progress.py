"""One place for progress bars and logging, so every long command looks the same."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Iterator

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


class HoldingHandler(RichHandler):
    """Rich logging that holds INFO lines back while a command checks its input (:func:`preflight`); a line logged
    with ``extra=SHOW_NOW`` (one that explains minutes of work starting now) is never held."""

    held: list[logging.LogRecord] | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.held is not None and record.levelno < logging.WARNING and not getattr(record, "show_now", False):
            self.held.append(record)
            return
        super().emit(record)

    def show_held(self) -> None:
        held, self.held = self.held or [], None
        for record in held:
            super().emit(record)


SHOW_NOW = {"show_now": True}


def _holding_handler() -> HoldingHandler | None:
    return next((h for h in logging.getLogger().handlers if isinstance(h, HoldingHandler)), None)


@contextlib.contextmanager
def preflight() -> Iterator[None]:
    """A command's checks: their INFO lines are shown once they pass and dropped when they refuse the input, so a
    refusal is its one error line. Warnings and ``SHOW_NOW`` lines are never held."""
    from nasdeploy.errors import NasDeployError

    handler = _holding_handler()
    if handler is None or handler.held is not None:  # no rich logging, or an outer preflight holds already
        yield
        return
    handler.held = []
    try:
        yield
    except NasDeployError:
        handler.held = None
        raise
    finally:
        handler.show_held()


def setup_logging(verbose: bool = False) -> None:
    """Rich logging; under torchrun ranks other than 0 log warnings and errors only (``distributed``)."""
    from nasdeploy.distributed import is_main_process

    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(
        level=level if is_main_process() else max(level, logging.WARNING),
        format="%(message)s",
        datefmt="[%X]",
        handlers=[HoldingHandler(console=console, show_path=False)],
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
        disable=not is_main_process() or (transient and not console.is_terminal),  # a vanishing bar in a log is a blank line
    )
