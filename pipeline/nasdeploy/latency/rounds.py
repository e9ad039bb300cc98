"""Interleaved measurement rounds: every op (or network) is timed once per round, rounds in sequence.

A busy neighbour or a frequency dip lasting seconds slows every run of a back-to-back measurement, so
more repetitions do not remove it; spreading the work over rounds and keeping, for each item, the round
with the smallest median does. Tables and validation use the same rule, so their numbers compare.
"""

from __future__ import annotations

from typing import Any

from nasdeploy.hardware.base import Timing


def add_round(record: dict[str, Any] | None, timing: Timing) -> dict[str, Any]:
    """``record`` (an entry or a measured sample) with one more round; its stats are the best round's."""
    rounds = list((record or {}).get("rounds", [])) + [timing.summary()]
    best = min(rounds, key=lambda r: r["median_ms"])
    return {
        **(record or {}),
        "median_ms": best["median_ms"], "p10_ms": best["p10_ms"], "p90_ms": best["p90_ms"],
        "iqr_ms": best["iqr_ms"], "mean_ms": best["mean_ms"], "n": int(sum(r["n"] for r in rounds)),
        **({"wall_median_ms": best["wall_median_ms"]} if "wall_median_ms" in best else {}),
        "rounds": rounds,
    }


def rounds_done(record: dict[str, Any] | None) -> int:
    if not record:
        return 0
    return len(record.get("rounds", [])) or (1 if "median_ms" in record else 0)
