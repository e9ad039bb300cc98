"""The flags every command that reuses a latency table shares: spot-check tolerance, --recalibrate, --trust-table.

Each is a function returning a fresh typer option, so a command declares them as
``tolerance: float = tolerance_option()`` and turns them into a policy with :func:`table_policy`.
"""

from __future__ import annotations

import typer

from nasdeploy.latency.trust import TablePolicy


def tolerance_option():
    return typer.Option(0.10, "--spot-check-tolerance", help="Median |error| of the latency table's spot check (a few "
                        "networks measured end to end) above which the table is refused, as a fraction.")


def recalibrate_option():
    return typer.Option(False, "--recalibrate", help="When the spot check fails, refit the table's overhead model on networks "
                        "measured here and save it into the table (with a note of when and where).")


def trust_option():
    return typer.Option(False, "--trust-table", help="Use the latency table even if its spot check fails (reported as such); "
                        "nothing is measured unless a result is cached this boot.")


def table_policy(tolerance: float, recalibrate: bool, trust: bool, threads: int | None = None) -> TablePolicy:
    return TablePolicy(tolerance=tolerance, recalibrate=recalibrate, trust=trust, threads=threads)
