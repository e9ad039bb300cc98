"""The flags every command that reuses a latency table shares: spot-check tolerance, --recalibrate, --trust-table.

Each is a function returning a fresh typer option, so a command declares them as
``tolerance: float = tolerance_option()`` and turns them into a policy with :func:`table_policy`. The tolerance is
given in per cent on the command line, as every message prints it, and kept as a fraction in ``TablePolicy``.
"""

from __future__ import annotations

import typer

from nasdeploy.errors import NasDeployError
from nasdeploy.latency.trust import TablePolicy


TOLERANCE_HELP = ("Median |error| of the latency table's spot check (a few networks measured end to end), in per cent, "
                  "above which the table is refused, e.g. --spot-check-tolerance 10")


def tolerance_option():
    return typer.Option(10.0, "--spot-check-tolerance", help=TOLERANCE_HELP + ".")


def recalibrate_option():
    return typer.Option(False, "--recalibrate", help="When the spot check fails, refit the table's overhead model on networks "
                        "measured here and save it into the table (with a note of when and where).")


def trust_option():
    return typer.Option(False, "--trust-table", help="Use the latency table even if its spot check fails (reported as such); "
                        "nothing is measured unless a result is cached this boot.")


def tolerance_fraction(percent: float | None) -> float | None:
    """``--spot-check-tolerance`` (per cent, as every message prints it) as TablePolicy's fraction."""
    if percent is None:
        return None
    if not 1 <= percent < 1000:
        raise NasDeployError(f"--spot-check-tolerance is in per cent (10 means 10 %), got {percent:g}; pass e.g. "
                             "--spot-check-tolerance 10")
    return percent / 100


def table_policy(tolerance_percent: float, recalibrate: bool, trust: bool, threads: int | None = None) -> TablePolicy:
    return TablePolicy(tolerance=tolerance_fraction(tolerance_percent), recalibrate=recalibrate, trust=trust, threads=threads)
