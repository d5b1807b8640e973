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


def test_lag_histograms_of_workers_merge_exactly():
    from backends.loadgen.stats import LagHistogram

    a, b = LagHistogram(), LagHistogram()
    for v in [0.2] * 98 + [7.0, 12.0]:
        a.add(v)
    for v in [0.4] * 50 + [30.0] * 50:
        b.add(v)
    merged = LagHistogram()
    merged.merge(a)
    merged.merge(LagHistogram.from_sparse(b.to_sparse()))  # as a worker process sends it
    assert merged.count == 200 and merged.max_ms == 30.0
    # the same as one histogram of all 200 samples, to the 0.1 ms bucket
    whole = LagHistogram()
    for v in [0.2] * 98 + [7.0, 12.0] + [0.4] * 50 + [30.0] * 50:
        whole.add(v)
    assert merged.buckets == whole.buckets
    assert merged.pct(50) == pytest.approx(0.5) and merged.pct(99) == pytest.approx(30.0)
    assert a.pct(99) == pytest.approx(7.1) and a.pct(100) == 12.0
    assert LagHistogram().pct(99) is None
    huge = LagHistogram()
    huge.add(5000.0)  # beyond the last bucket: kept there, max exact
    assert huge.pct(50) == 5000.0 and huge.buckets == {10000: 1}


def test_client_verdict_says_what_limited_and_by_how_much():
    from backends.loadgen.stats import LAG_MIN_SAMPLES, LagHistogram, client_verdict

    calm = LagHistogram()
    for _ in range(200):
        calm.add(0.5)
    ok = client_verdict(calm, [40.0, 55.0])
    assert ok["limited"] is False and ok["message"] == "" and ok["reasons"] == []
    assert ok["cpu_pct_max"] == 55.0 and ok["loop_lag_ms"]["p99"] == pytest.approx(0.5)

    laggy = LagHistogram()
    for i in range(200):
        laggy.add(9.0 if i % 20 == 0 else 0.5)
    bad = client_verdict(laggy, [30.0, 93.0])
    assert bad["limited"] is True and len(bad["reasons"]) == 2
    assert "event-loop lag p99 9.0 ms (limit 5 ms)" in bad["message"]
    assert "worker 1 used 93% of a core (limit 80%)" in bad["message"]
    # too few probes or too short a run say nothing either way
    few = LagHistogram()
    for _ in range(LAG_MIN_SAMPLES - 1):
        few.add(50.0)
    assert client_verdict(few, [None])["limited"] is False


def test_every_sample_is_checked():
    from backends.loadgen.worker import check_sample

    assert check_sample(1.0, 1.1, 1.5, 1.6, chunks=5, output_tokens=5) is None
    assert check_sample(1.0, 1.1, 1.1, 1.2, chunks=1, output_tokens=1) is None
    assert "out of order" in check_sample(1.0, 0.9, 1.5, 1.6, 5, 5)  # first token before the send
    assert "out of order" in check_sample(1.0, 1.2, 1.1, 1.6, 5, 5)  # last before first
    assert "out of order" in check_sample(1.0, 1.1, 1.5, 1.4, 5, 5)  # end before the last token
    assert check_sample(1.0, 0.0, 0.0, 1.2, 0, 0).startswith("empty stream")
    assert "usage says 3 output tokens but 5 chunks" in check_sample(1.0, 1.1, 1.5, 1.6, 5, 3)
