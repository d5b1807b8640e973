"""Seeded lengths, prompt text, rate-type resolution and arrival schedules (no clock)."""

from __future__ import annotations

import itertools
import random
import statistics

import pytest

from backends.loadgen.schedule import (
    THROUGHPUT_DEFAULT_CONCURRENCY,
    arrival_offsets,
    draw_length,
    lengths,
    make_prompt,
    resolve_mode,
)
from config.catalog import WorkloadProfile, make_workload
from config.errors import SweepdeckError


def profile(**kw) -> WorkloadProfile:
    return make_workload("custom", {"prompt_tokens": 200, "output_tokens": 50, **kw})


def test_same_seed_same_sequence_other_seed_other_sequence():
    p = profile(prompt_tokens_stdev=60, output_tokens_stdev=20, random_seed=7)
    a = list(itertools.islice(lengths(p), 200))
    b = list(itertools.islice(lengths(p), 200))
    c = list(itertools.islice(lengths(profile(prompt_tokens_stdev=60, output_tokens_stdev=20, random_seed=8)), 200))
    assert a == b
    assert a != c
    assert len({x for x, _ in a}) > 50  # really drawn, not constant


def test_lengths_follow_mean_and_stdev():
    p = profile(prompt_tokens=1000, prompt_tokens_stdev=100, prompt_tokens_min=1, prompt_tokens_max=5000,
                output_tokens=300, output_tokens_stdev=30)
    pairs = list(itertools.islice(lengths(p), 4000))
    prompts = [x for x, _ in pairs]
    outs = [y for _, y in pairs]
    assert statistics.fmean(prompts) == pytest.approx(1000, rel=0.02)
    assert statistics.stdev(prompts) == pytest.approx(100, rel=0.1)
    assert statistics.fmean(outs) == pytest.approx(300, rel=0.02)


def test_clamping_to_min_and_max():
    p = profile(prompt_tokens=100, prompt_tokens_stdev=500, prompt_tokens_min=50, prompt_tokens_max=150,
                output_tokens=20, output_tokens_stdev=100, output_tokens_min=5, output_tokens_max=30)
    pairs = list(itertools.islice(lengths(p), 2000))
    assert min(x for x, _ in pairs) == 50 and max(x for x, _ in pairs) == 150
    assert min(y for _, y in pairs) == 5 and max(y for _, y in pairs) == 30
    # zero stdev gives exactly the mean, and a length is never below 1
    assert set(itertools.islice(lengths(profile()), 50)) == {(200, 50)}
    rng = random.Random(0)
    assert all(draw_length(rng, 1, 50, 0, None) >= 1 for _ in range(500))


def test_prompt_text_has_the_intended_word_count_and_unique_heads():
    for n, prefix in ((1, 0), (5, 0), (8, 0), (9, 3), (1000, 0), (20000, 100), (3, 5000)):
        assert len(make_prompt(123, n, prefix).split()) == n + prefix
    a, b = make_prompt(1, 50), make_prompt(2, 50)
    assert a != b and a.split()[8:] == b.split()[8:]
    # the shared prefix is identical across requests
    assert make_prompt(1, 20, 10).split()[:10] == make_prompt(99, 20, 10).split()[:10]
    assert make_prompt(0, 10, 0) == make_prompt(0, 10, 0)


def test_prompt_text_matches_the_simulator_estimate():
    engine = pytest.importorskip("backends.sim.engine")
    for n, prefix in ((1, 0), (77, 0), (500, 12)):
        assert engine.count_prompt_tokens(make_prompt(5, n, prefix)) == n + prefix


def test_resolve_mode_per_rate_type():
    assert resolve_mode(profile(rate_type="synchronous")).concurrency == 1
    assert resolve_mode(profile(rate_type="concurrent", rate=8)).concurrency == 8
    assert resolve_mode(profile(rate_type="concurrent", rate=8, max_concurrency=3)).concurrency == 3
    t = resolve_mode(profile(rate_type="throughput"))
    assert t.concurrency == THROUGHPUT_DEFAULT_CONCURRENCY and not t.open_loop
    assert resolve_mode(profile(rate_type="throughput", max_concurrency=5)).concurrency == 5
    c = resolve_mode(profile(rate_type="constant", rate=4))
    assert c.open_loop and c.rate == 4 and not c.poisson and c.concurrency is None
    s = resolve_mode(profile(rate_type="sweep", rate=12))
    assert s.open_loop and s.rate == 12 and not s.poisson
    p = resolve_mode(profile(rate_type="poisson", rate=2, max_concurrency=4))
    assert p.poisson and p.concurrency == 4
    assert "poisson 2 req/s" in p.describe()


def test_resolve_mode_refuses_unusable_values():
    with pytest.raises(SweepdeckError, match="concurrent needs max_concurrency"):
        resolve_mode(WorkloadProfile(app="x", rate_type="concurrent", rate=0.5))
    with pytest.raises(SweepdeckError, match="positive rate"):
        resolve_mode(WorkloadProfile(app="x", rate_type="constant", rate=0))
    with pytest.raises(SweepdeckError, match="unknown rate type"):
        resolve_mode(WorkloadProfile(app="x", rate_type="bursty"))


def test_constant_arrivals_are_evenly_spaced():
    offs = list(itertools.islice(arrival_offsets(resolve_mode(profile(rate_type="constant", rate=5)), 1), 6))
    assert offs == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])


def test_poisson_arrivals_are_seeded_and_exponential():
    mode = resolve_mode(profile(rate_type="poisson", rate=10))
    a = list(itertools.islice(arrival_offsets(mode, 42), 5001))
    assert a == list(itertools.islice(arrival_offsets(mode, 42), 5001))
    assert a != list(itertools.islice(arrival_offsets(mode, 43), 5001))
    gaps = [y - x for x, y in zip(a, a[1:], strict=False)]
    assert a[0] == 0.0 and min(gaps) > 0
    assert statistics.fmean(gaps) == pytest.approx(0.1, rel=0.05)
    # exponential: stdev == mean, and about e^-1 of the gaps exceed the mean
    assert statistics.stdev(gaps) == pytest.approx(0.1, rel=0.08)
    assert sum(g > 0.1 for g in gaps) / len(gaps) == pytest.approx(0.368, abs=0.03)
    with pytest.raises(ValueError):
        next(arrival_offsets(resolve_mode(profile(rate_type="synchronous")), 1))
