"""The conclusions' sentences: the interval picks the word, and a page of many comparisons says what chance gives."""

from __future__ import annotations

import pytest

from transmix.reporting.verdicts import bullets, by_chance, verdict


@pytest.mark.parametrize(
    ("mean", "low", "high", "n", "expected"),
    [
        (0.5, 0.1, 0.9, 5, "is **higher**: by 0.50 points"),
        (-0.5, -0.9, -0.1, 5, "is **lower**: by 0.50 points"),
        (0.3, -0.3, 0.9, 5, "+0.30 points, **no difference shown**"),
        (0.5, float("nan"), float("nan"), 1, "too few for an interval"),
    ],
)
def test_the_interval_picks_the_sentence(mean, low, high, n, expected) -> None:
    text = verdict("transmix − deit", mean, low, high, n)
    assert expected in text
    if n > 1:
        assert f"over {n} seeds [{low:+.2f}, {high:+.2f}]" in text


def test_the_unit_and_the_level_are_the_callers() -> None:
    text = verdict("entropy", 0.2, 0.1, 0.3, 3, unit="nats", level=0.9)
    assert text == "entropy is **higher**: by 0.20 nats (90% t-interval over 3 seeds [+0.10, +0.30], excluding zero)."


def test_how_many_would_exclude_zero_by_chance() -> None:
    # 20 comparisons at 95%: 20 * 0.05 = 1.0; 7 at 90%: 7 * 0.1 = 0.7
    assert by_chance(20, 0.95) == "20 comparisons at 95%: about 1.0 would exclude zero by chance alone."
    assert by_chance(7, 0.9) == "7 comparisons at 90%: about 0.7 would exclude zero by chance alone."


def test_a_conclusion_is_a_markdown_list() -> None:
    assert bullets(["one.", "two."]) == "- one.\n- two."
    assert bullets([]) == ""
