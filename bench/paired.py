"""Paired A/B statistics for benches that alternate two setups round by round.

Pure functions, no I/O (unit-tested in tests/unit/bench/test_bench_paired_stats.py):
the per-round ratios of one setup's figure to the other's, their summary, a percentile
bootstrap confidence interval over the rounds (seeded, so a report is reproducible from
its raw figures), and the verdict against a tolerance.

Why a ratio per round: both setups are measured in the same round, under the same load
from elsewhere, so a round's ratio cancels what the load did to both, and the spread of
the ratios over the rounds is what is left (the setups' difference and the noise that
falls on one and not the other).
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

WITHIN, OVER, UNDECIDED = "within", "over", "undecided"


def paired_ratios(a: Sequence[float], b: Sequence[float]) -> list[float]:
    """``a[i] / b[i]`` per round; the two lists are the same rounds, in order."""
    if len(a) != len(b):
        raise ValueError(f"unpaired: {len(a)} against {len(b)} rounds")
    if any(x <= 0 for x in (*a, *b)):
        raise ValueError("every figure must be positive to be a ratio's term")
    return [x / y for x, y in zip(a, b, strict=True)]


def trimmed_geomean(ratios: Sequence[float], trim: float = 0.25) -> float:
    """The geometric mean of the ratios with the lowest and highest ``trim`` of them
    left out (by default the middle half): a round's ratio of 1.2 and one of 1/1.2 weigh
    alike (the mean is of the logarithms), and a round where a burst of load hit one
    setup only does not pull the figure (it is among those left out). ``trim=0.5`` is
    the median. On a busy machine the per-round ratios of bursts and of the p99 have
    heavy tails: leaving out a quarter at each end gave intervals 10 % narrower than a
    fifth and as narrow as the median's on average, without the median's lumpy
    bootstrap (it takes one of few values)."""
    if not ratios:
        raise ValueError("no ratios")
    if not 0 <= trim <= 0.5:
        raise ValueError("trim is a share of each end, 0 to 0.5")
    logs = sorted(math.log(r) for r in ratios)
    cut = int(trim * len(logs))
    kept = logs[cut : len(logs) - cut] or [statistics.median(logs)]
    return math.exp(statistics.fmean(kept))


def bootstrap_ci(
    values: Sequence[float],
    statistic: Callable[[Sequence[float]], float] = trimmed_geomean,
    *,
    level: float = 0.95,
    resamples: int = 10_000,
    seed: int = 12,
) -> tuple[float, float]:
    """Percentile bootstrap: ``statistic`` of ``resamples`` draws of ``len(values)``
    rounds with replacement; the interval between the ``(1 - level) / 2`` quantiles."""
    if len(values) < 2:
        raise ValueError("a confidence interval needs at least 2 rounds")
    rng = random.Random(seed)
    n = len(values)
    draws = sorted(
        statistic([values[rng.randrange(n)] for _ in range(n)]) for _ in range(resamples)
    )
    tail = (1 - level) / 2
    low = draws[int(tail * resamples)]
    high = draws[min(resamples - 1, math.ceil((1 - tail) * resamples) - 1)]
    return low, high


def verdict(low: float, high: float, tolerance: float = 0.10) -> str:
    """``within`` when the whole interval lies within ±tolerance of 1, ``over`` when it
    lies wholly beyond (either side), else ``undecided``."""
    if low > high:
        raise ValueError(f"an interval from {low} to {high}")
    if 1 - tolerance <= low and high <= 1 + tolerance:
        return WITHIN
    if low > 1 + tolerance or high < 1 - tolerance:
        return OVER
    return UNDECIDED


def cost_verdict(
    low: float, high: float, *, higher_is_better: bool, tolerance: float = 0.10
) -> str:
    """One-sided: what setup A *costs* against B. ``within`` when the interval's worse
    end stays within ``tolerance`` (a throughput's low end at least 1 - tolerance, a
    latency's or a cost's high end at most 1 + tolerance), ``over`` when even its better
    end is past it, else ``undecided``. A setup faster than the other by more than the
    tolerance is two-sided ``undecided`` or ``over`` but costs nothing here."""
    if low > high:
        raise ValueError(f"an interval from {low} to {high}")
    if higher_is_better:  # a rate: the low end is the worse one
        if low >= 1 - tolerance:
            return WITHIN
        return OVER if high < 1 - tolerance else UNDECIDED
    if high <= 1 + tolerance:  # a latency or a cost: the high end is the worse one
        return WITHIN
    return OVER if low > 1 + tolerance else UNDECIDED


@dataclass(frozen=True)
class Comparison:
    """One measure, setup A against setup B over the same rounds."""

    a: float  # the median of A's per-round figures
    b: float  # the median of B's
    ratio: float  # A/B: the geometric mean of the middle half of the paired ratios
    low: float  # the bootstrap confidence interval of that ratio
    high: float
    verdict: str
    rounds: int


def compare(
    a: Sequence[float],
    b: Sequence[float],
    *,
    tolerance: float = 0.10,
    level: float = 0.95,
    resamples: int = 10_000,
    seed: int = 12,
) -> Comparison:
    ratios = paired_ratios(a, b)
    low, high = bootstrap_ci(ratios, level=level, resamples=resamples, seed=seed)
    return Comparison(
        a=statistics.median(a),
        b=statistics.median(b),
        ratio=trimmed_geomean(ratios),
        low=low,
        high=high,
        verdict=verdict(low, high, tolerance),
        rounds=len(ratios),
    )
