"""Percentile math and the bounded live statistics of the load generator."""

from __future__ import annotations

import random
import statistics

import pytest

from backends.loadgen.stats import RESERVOIR_SIZE, LiveStat, describe, percentile


def test_percentile_interpolates_like_numpy_linear():
    data = [1.0, 2.0, 3.0, 4.0]
    assert percentile(data, 0) == 1.0
    assert percentile(data, 100) == 4.0
    assert percentile(data, 50) == 2.5
    # numpy.percentile([1,2,3,4], 90) == 3.7
    assert percentile(data, 90) == pytest.approx(3.7)
    assert percentile(list(range(101)), 99) == pytest.approx(99.0)
    assert percentile([7.0], 90) == 7.0
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile(data, 101)


def test_describe_matches_statistics_and_handles_empty():
    rng = random.Random(3)
    values = [rng.uniform(0, 1000) for _ in range(999)]
    d = describe(values)
    assert d["mean"] == pytest.approx(statistics.fmean(values))
    assert d["median"] == pytest.approx(statistics.median(values))
    # statistics.quantiles(method="inclusive") is the same linear interpolation
    q = statistics.quantiles(values, n=100, method="inclusive")
    assert d["p90"] == pytest.approx(q[89])
    assert d["p99"] == pytest.approx(q[98])
    assert d["min"] == min(values) and d["max"] == max(values)
    assert describe([]) == {k: None for k in ("mean", "median", "p90", "p99", "min", "max")}
    # unsorted input with a generator
    assert describe(x for x in [3.0, 1.0, 2.0])["median"] == 2.0


def test_livestat_exact_below_reservoir_size():
    s = LiveStat(size=100)
    for v in range(1, 51):
        s.add(float(v))
    assert s.count == 50 and s.mean == pytest.approx(25.5)
    assert s.pct(50) == pytest.approx(25.5)
    assert s.pct(90) == pytest.approx(percentile([float(v) for v in range(1, 51)], 90))
    assert (s.min, s.max) == (1.0, 50.0)
    assert LiveStat().mean is None and LiveStat().pct(50) is None


def test_livestat_stays_bounded_and_estimates_percentiles():
    s = LiveStat(seed=7)
    rng = random.Random(11)
    values = [rng.expovariate(1 / 100) for _ in range(100_000)]
    for v in values:
        s.add(v)
    assert len(s._res) == RESERVOIR_SIZE  # memory does not grow with the request count
    assert s.count == 100_000
    assert s.mean == pytest.approx(statistics.fmean(values))
    exact = describe(values)
    assert s.pct(50) == pytest.approx(exact["median"], rel=0.08)
    assert s.pct(90) == pytest.approx(exact["p90"], rel=0.08)
    assert s.max == exact["max"] and s.min == exact["min"]


def test_livestat_seeded_is_repeatable():
    a, b = LiveStat(size=16, seed=5), LiveStat(size=16, seed=5)
    for v in range(1000):
        a.add(v)
        b.add(v)
    assert a.pct(50) == b.pct(50)
