"""SLURM and Go-style durations."""

from __future__ import annotations

import pytest

from config.durations import format_slurm_duration, parse_go_duration, parse_slurm_duration


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("30", 30 * 60),  # MM
        ("5:30", 5 * 60 + 30),  # MM:SS
        ("1:00:00", 3600),  # H:MM:SS
        ("12:05:09", 12 * 3600 + 5 * 60 + 9),
        ("100:00:00", 100 * 3600),
        ("1-12", 86400 + 12 * 3600),  # D-HH
        ("1-12:30", 86400 + 12 * 3600 + 30 * 60),  # D-HH:MM
        ("2-00:00:10", 2 * 86400 + 10),  # D-HH:MM:SS
        (" 1:00:00 ", 3600),
    ],
)
def test_slurm_forms(text, seconds):
    assert parse_slurm_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "1h", "-1", "1:60", "1:00:60", "1-24", "0", "0:00:00", "1:2:3:4", "1.5"])
def test_slurm_rejects_with_the_accepted_forms(text):
    with pytest.raises(ValueError) as err:
        parse_slurm_duration(text)
    assert "H:MM:SS" in str(err.value)


@pytest.mark.parametrize("seconds", [1, 59, 3600, 3661, 86399, 86400, 2 * 86400 + 3 * 3600 + 4 * 60 + 5])
def test_format_round_trips(seconds):
    assert parse_slurm_duration(format_slurm_duration(seconds)) == seconds


def test_format_forms():
    assert format_slurm_duration(3600) == "1:00:00"
    assert format_slurm_duration(90061) == "1-01:01:01"


@pytest.mark.parametrize(
    "text, seconds",
    [("6h", 6 * 3600), ("5h30m", 5 * 3600 + 1800), ("90s", 90), ("1h0m5s", 3605), ("45m", 2700)],
)
def test_go_forms(text, seconds):
    assert parse_go_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "6", "h", "1d", "5m30h", "1.5h", "-1h", "6 h"])
def test_go_rejects(text):
    with pytest.raises(ValueError, match="not a duration"):
        parse_go_duration(text)
