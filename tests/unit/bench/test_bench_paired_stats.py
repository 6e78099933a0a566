"""The paired A/B statistics of bench/isolation_ab.py (bench/paired.py): per-round
ratios, their trimmed geometric mean, the seeded percentile bootstrap and the ±10 %
verdict. The bench folder is not a package; the module is loaded from its file."""

from __future__ import annotations

import math
import random

import pytest

from support import bench_modules

paired = bench_modules.load("bench_paired", "paired.py")


def test_paired_ratios_are_per_round_and_refuse_unpaired_or_non_positive_figures() -> None:
    assert paired.paired_ratios([2.0, 3.0, 10.0], [1.0, 6.0, 8.0]) == [2.0, 0.5, 1.25]
    with pytest.raises(ValueError, match="unpaired"):
        paired.paired_ratios([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="positive"):
        paired.paired_ratios([1.0, 0.0], [1.0, 1.0])


def test_trimmed_geomean_weighs_a_ratio_and_its_inverse_alike_and_drops_the_ends() -> None:
    assert paired.trimmed_geomean([0.5, 2.0], trim=0) == pytest.approx(1.0)
    assert paired.trimmed_geomean([1.0, 4.0], trim=0) == pytest.approx(2.0)
    # a quarter of each end out (one of five): the 0.001 and the 100 (rounds a burst hit)
    assert paired.trimmed_geomean([100.0, 1.0, 2.0, 4.0, 0.001]) == pytest.approx(2.0)
    # the middle half of eight: 2, 4, 4 and 8 (geometric mean 4), not 0.01, 0.5, 32, 900
    assert paired.trimmed_geomean([900.0, 2.0, 0.5, 8.0, 32.0, 0.01, 4.0, 4.0]) == (
        pytest.approx(4.0)
    )
    assert paired.trimmed_geomean([100.0, 1.0, 2.0, 4.0, 0.001], trim=0) != pytest.approx(2.0)
    # trim 0.5: the median, odd and even counts
    assert paired.trimmed_geomean([9.0, 1.0, 3.0], trim=0.5) == pytest.approx(3.0)
    assert paired.trimmed_geomean([1.0, 4.0, 100.0, 0.01], trim=0.5) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        paired.trimmed_geomean([])
    with pytest.raises(ValueError):
        paired.trimmed_geomean([1.0], trim=0.6)


def test_bootstrap_ci_is_the_percentile_interval_of_the_resampled_statistic() -> None:
    # two rounds: resamples (1,1) (1,2) (2,1) (2,2), geometric means 1, √2, √2, 2 —
    # quantiles 2.5 % and 97.5 % are 1 and 2, quantiles 30 % and 70 % both √2
    assert paired.bootstrap_ci([1.0, 2.0], lambda v: paired.trimmed_geomean(v, 0)) == (
        pytest.approx(1.0),
        pytest.approx(2.0),
    )
    low, high = paired.bootstrap_ci([1.0, 2.0], lambda v: paired.trimmed_geomean(v, 0), level=0.4)
    assert low == pytest.approx(math.sqrt(2)) and high == pytest.approx(math.sqrt(2))
    assert paired.bootstrap_ci([1.07] * 12) == (pytest.approx(1.07), pytest.approx(1.07))
    with pytest.raises(ValueError, match="at least 2"):
        paired.bootstrap_ci([1.0])


def test_bootstrap_ci_is_reproducible_from_its_seed_and_narrows_with_more_rounds() -> None:
    rng = random.Random(7)
    ratios = [math.exp(rng.gauss(0.03, 0.1)) for _ in range(40)]
    first = paired.bootstrap_ci(ratios, seed=3)
    assert paired.bootstrap_ci(ratios, seed=3) == first
    assert paired.bootstrap_ci(ratios, seed=4) != first
    low, high = first
    assert low < paired.trimmed_geomean(ratios) < high
    few_low, few_high = paired.bootstrap_ci(ratios[:10], seed=3)
    assert high - low < few_high - few_low
    narrow_low, narrow_high = paired.bootstrap_ci(ratios, seed=3, level=0.5)
    assert low < narrow_low < narrow_high < high


def test_bootstrap_ci_covers_the_true_ratio_about_as_often_as_it_says() -> None:
    """100 benches of 20 rounds whose ratios scatter (log-normal, sd 0.15, with a few
    rounds a burst of load hit) around a true 1.05: the 95 % interval holds 1.05 in
    close to 95 of them (a percentile bootstrap of 20 rounds runs a little short)."""
    rng = random.Random(11)
    covered = 0
    for _ in range(100):
        ratios = [math.exp(rng.gauss(math.log(1.05), 0.15)) for _ in range(20)]
        ratios[rng.randrange(20)] *= rng.choice((3.0, 1 / 3))  # one round a burst hit
        low, high = paired.bootstrap_ci(ratios, resamples=1000, seed=rng.randrange(1 << 30))
        covered += low <= 1.05 <= high
    assert 86 <= covered <= 100


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        (0.95, 1.05, "within"),
        (0.90, 1.10, "within"),  # the edges are within
        (1.00, 1.00, "within"),
        (0.89, 1.05, "undecided"),
        (0.95, 1.11, "undecided"),
        (0.85, 1.15, "undecided"),  # the interval holds both 1 and more than ±10 %
        (1.11, 1.40, "over"),  # isolated at least 11 % higher
        (0.60, 0.89, "over"),  # or lower: beyond either way
    ],
)
def test_verdict_is_within_only_when_the_whole_interval_is(
    low: float, high: float, expected: str
) -> None:
    assert paired.verdict(low, high) == expected


def test_verdict_follows_its_tolerance_and_refuses_an_inverted_interval() -> None:
    assert paired.verdict(0.93, 1.04, tolerance=0.05) == "undecided"
    assert paired.verdict(0.97, 1.04, tolerance=0.05) == "within"
    assert paired.verdict(1.06, 1.2, tolerance=0.05) == "over"
    with pytest.raises(ValueError):
        paired.verdict(1.1, 0.9)


def test_compare_pairs_rounds_so_load_falling_on_both_cancels() -> None:
    """The load swings tenfold from round to round, and A is 3 % slower in each: the
    medians of each side scatter, the paired ratio does not."""
    rng = random.Random(5)
    load = [rng.uniform(50, 500) for _ in range(16)]
    b = [x * rng.uniform(0.99, 1.01) for x in load]
    a = [x * 1.03 * rng.uniform(0.99, 1.01) for x in load]
    found = paired.compare(a, b)
    assert found.rounds == 16
    assert found.a == pytest.approx(sorted(a)[7] / 2 + sorted(a)[8] / 2)
    assert found.b == pytest.approx(sorted(b)[7] / 2 + sorted(b)[8] / 2)
    assert found.ratio == pytest.approx(1.03, abs=0.01)
    assert 1.0 < found.low <= found.ratio <= found.high < 1.06
    assert found.verdict == "within"
    slower = paired.compare([x * 1.4 for x in b], b)
    assert slower.verdict == "over" and slower.low > 1.1


@pytest.mark.parametrize(
    ("low", "high", "higher_is_better", "expected"),
    [
        (1.026, 1.127, True, "within"),  # a rate faster by up to 12.7 %: costs nothing
        (0.90, 1.30, True, "within"),  # the low edge is within
        (0.89, 1.05, True, "undecided"),
        (0.60, 0.89, True, "over"),  # slower by more than 10 % even at its best
        (0.70, 0.99, False, "within"),  # a latency lower by up to 30 %: costs nothing
        (0.95, 1.10, False, "within"),  # the high edge is within
        (0.95, 1.11, False, "undecided"),
        (1.11, 1.40, False, "over"),  # slower by more than 10 % even at its best
    ],
)
def test_cost_verdict_is_one_sided_towards_the_worse_end(
    low: float, high: float, higher_is_better: bool, expected: str
) -> None:
    assert paired.cost_verdict(low, high, higher_is_better=higher_is_better) == expected
    # the two-sided verdict of the same interval differs where only the better side is out
    if expected == "within" and (high > 1.10 or low < 0.90):
        assert paired.verdict(low, high) != "within"


def test_cost_verdict_follows_its_tolerance_and_refuses_an_inverted_interval() -> None:
    assert paired.cost_verdict(0.96, 1.0, higher_is_better=True, tolerance=0.05) == "within"
    assert paired.cost_verdict(0.94, 1.0, higher_is_better=True, tolerance=0.05) == "undecided"
    with pytest.raises(ValueError):
        paired.cost_verdict(1.1, 0.9, higher_is_better=False)
