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

import math
from typing import Any

import numpy as np

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


# Steady or not (``MeasureMethod.max_rounds``). A shared VM's core can run at two speeds about 1.2-1.5x apart for
# seconds at a time (measured on a 2-vCPU Xeon VM: a fixed matmul ran at 0.81-0.91x or 1.21-1.42x its median), and
# which speed dominates changes over minutes. There the best of three rounds mixes the two: an item whose three rounds
# all landed slow keeps a slow time, one that caught a short fast window keeps a fast one, and the table's items no
# longer compare (the same 100 networks timed twice agreed to 81 % within ±10 %). So the first ``rounds`` rounds also
# tell whether the machine is steady. Steady (an item's rounds rarely disagree): each item keeps its best round, as
# before. Unsteady: every item gets ``max_rounds`` rounds, interleaved, and keeps the round of one state, the same
# state for every item, so that items compare; a change of state between profiling and use is what the drift
# correction measures (latency.trust). Which state: the one every item is likelier to show (:func:`mixing_risk`).
# The fast state's typical round ("fast": the median of the rounds within SLOW_RATIO of the best) is missed only by an
# item none of whose k rounds ran fast (p^k); the median round lands in the minority state whenever most rounds did
# (a binomial tail, large near p = 1/2). Measured: ExecuTorch DARTS on the Xeon VM (p 0.36-0.50) kept median rounds
# and predicted 59 % of 100 networks within ±10 % (τ 0.60); the same measurements settled on the fast state 100 %
# (τ 0.94). ONNX Runtime there earlier (the usual state slow, short fast windows): 9 rounds' medians 100 % within ±10 %
# (τ 0.856), their best rounds 86 % (τ 0.737): the best round alone can be a lucky window, the fast median is not.
SLOW_RATIO = 1.10  # a round this far above its item's best round counts as slow (the two speeds are 1.2-1.5x apart)
ALL_SLOW_RISK = 0.01  # steady: the chance that every one of an item's first rounds landed slow is at most this


def round_medians(record: dict[str, Any] | None) -> list[float]:
    return [float(r["median_ms"]) for r in (record or {}).get("rounds", [])]


def slow_share(records: list[dict[str, Any] | None]) -> float:
    """The share p of rounds that land in a slow phase, by maximum likelihood over the items' rounds.

    Two-state model: each round of an item is slow with probability p, independently (an item's rounds are a whole
    pass over the other items apart, longer than a phase). An item with j of its k rounds above SLOW_RATIO x its best
    one has likelihood C(k, j) p^j (1-p)^(k-j); one whose rounds all agree was either always fast or always slow,
    (1-p)^k + p^k. Items with fewer than two rounds say nothing. The maximum is found on a grid of step 0.005.
    """
    observed = []
    for record in records:
        medians = round_medians(record)
        if len(medians) >= 2:
            best = min(medians)
            observed.append((len(medians), sum(m > SLOW_RATIO * best for m in medians)))
    if not observed or all(j == 0 for _, j in observed):
        return 0.0
    grid = np.arange(0.005, 0.96, 0.005)
    loglik = np.zeros_like(grid)
    for k, j in observed:
        if j == 0:
            loglik += np.log((1 - grid) ** k + grid ** k)
        else:
            loglik += np.log(math.comb(k, j)) + j * np.log(grid) + (k - j) * np.log(1 - grid)
    return float(grid[int(np.argmax(loglik))])


# what each statistic keeps, as reports say it
STATISTIC_TEXT = {"best": "best round", "fast": "median fast round", "median": "median round"}


def mixing_risk(statistic: str, p: float, k: int) -> float:
    """The chance that an item's kept round is not in the state ``statistic`` stands for, with slow share ``p`` and
    ``k`` rounds (independent rounds): "fast" misses when no round ran fast, p^k; "median" (the lower middle of k)
    lands in the minority state when at least k - (k-1)//2 rounds (p < 1/2: slow ones) or (k-1)//2 + 1 rounds
    (p > 1/2: fast ones) did."""
    if statistic == "fast":
        return p ** k
    q, needed = (p, k - (k - 1) // 2) if p <= 0.5 else (1 - p, (k - 1) // 2 + 1)
    return float(sum(math.comb(k, j) * q ** j * (1 - q) ** (k - j) for j in range(needed, k + 1)))


def rounds_decision(records: list[dict[str, Any] | None], rounds: int, max_rounds: int | None) -> dict[str, Any]:
    """What the first ``rounds`` rounds say: steady (``rounds`` rounds, each item its best) when the slow share p has
    p^rounds <= ALL_SLOW_RISK, else unsteady (``max_rounds`` rounds, each item the round of the state with the smaller
    :func:`mixing_risk`: "fast" or "median"). Without a ``max_rounds`` above ``rounds``: always ``rounds`` and the best
    round (tables made before the rule)."""
    share = slow_share(records)
    most = max(rounds, max_rounds or rounds)
    unsteady = most > rounds and share ** rounds > ALL_SLOW_RISK
    statistic = min(("fast", "median"), key=lambda name: mixing_risk(name, share, most)) if unsteady else "best"
    return {"slow_share": round(share, 3), "steady": not unsteady, "rounds": most if unsteady else rounds,
            "statistic": statistic, "base_rounds": rounds, "max_rounds": most,
            "slow_ratio": SLOW_RATIO, "all_slow_risk": ALL_SLOW_RISK,
            **({"mixing_risk": round(mixing_risk(statistic, share, most), 4)} if unsteady else {})}


def pick_round(medians: list[float], statistic: str) -> int:
    """The index of the round ``statistic`` keeps among rounds with these medians: "best" the smallest, "median" the
    median round (the lower middle one of an even count), "fast" the median of the rounds within SLOW_RATIO of the
    best (the fast state's typical round, not its luckiest)."""
    order = sorted(range(len(medians)), key=lambda i: medians[i])
    if statistic == "fast":
        order = [i for i in order if medians[i] <= SLOW_RATIO * medians[order[0]]]
    return order[(len(order) - 1) // 2] if statistic in ("fast", "median") else order[0]


STATS = ("median_ms", "p10_ms", "p90_ms", "iqr_ms", "mean_ms", "wall_median_ms")


def settle(record: dict[str, Any], statistic: str) -> dict[str, Any]:
    """``record`` with the statistic of a :func:`rounds_decision` applied (:func:`pick_round`): "best" keeps its best
    round's stats (what :func:`add_round` keeps), "fast" or "median" the round they pick."""
    rounds = record.get("rounds", [])
    if statistic == "best" or not rounds:
        return {**record, "statistic": "best"} if rounds else record
    pick = rounds[pick_round([r["median_ms"] for r in rounds], statistic)]
    return {**record, **{k: pick[k] for k in STATS if k in pick}, "statistic": statistic}


def rounds_taken(records: list[dict[str, Any] | None], rounds: int, max_rounds: int | None) -> dict[str, Any]:
    """For reports: the rounds the records have, the statistic they were settled with, the slow share over all rounds."""
    statistic = next((r["statistic"] for r in records if r and "statistic" in r), "best")
    return {**rounds_decision(records, rounds, max_rounds), "rounds": max((len(round_medians(r)) for r in records), default=0),
            "statistic": statistic, "steady": statistic == "best"}
