"""Interleaved measurement rounds: every op (or network) is timed once per round, rounds in sequence.

A busy neighbour or a frequency dip lasting seconds slows every run of a back-to-back measurement, so
more repetitions do not remove it; spreading the work over rounds and keeping, for each item, the round
with the smallest median does. Tables and validation use the same rule, so their numbers compare.

With a reference (``MeasureMethod.reference``) each round of each item also carries the median of a fixed
reference network timed just before it (``ref_ms``). The machine's slow phases last seconds to minutes
(measured on a 2-core VM: successive networks' deviations correlate at 0.5-0.6), so an item and the
reference timed within the same second share them: :func:`normalise` rescales every round by
``canonical / ref_ms``, ``canonical`` being the reference's quiet-state median over the whole session
(its 10th percentile), and then keeps the best round. Every item is thereby expressed at the same
machine state, whenever it was timed.
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


def canonical_reference_ms(reference_medians: list[float]) -> float | None:
    """The reference network's quiet-state median over a session: the 10th percentile of its medians."""
    if not reference_medians:
        return None
    ordered = sorted(reference_medians)
    return float(ordered[int(0.1 * (len(ordered) - 1))])


def normalise(record: dict[str, Any], canonical_ms: float | None) -> dict[str, Any]:
    """``record`` with each round rescaled to the reference's quiet state (``canonical_ms / ref_ms``) and the best
    rescaled round as its stats; unchanged when a round has no reference time or there is no canonical value."""
    rounds = record.get("rounds", [])
    if not canonical_ms or not rounds or not all(r.get("ref_ms") for r in rounds):
        return record
    scale = [canonical_ms / r["ref_ms"] for r in rounds]
    best = min(range(len(rounds)), key=lambda i: rounds[i]["median_ms"] * scale[i])
    stats = {k: rounds[best][k] * scale[best] for k in ("median_ms", "p10_ms", "p90_ms", "iqr_ms", "mean_ms")}
    return {**record, **stats, "raw_median_ms": min(r["median_ms"] for r in rounds), "reference_scale": scale[best]}
