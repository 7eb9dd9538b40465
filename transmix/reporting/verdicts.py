"""The sentences a page concludes with, each chosen by an interval and none typed for one result.

A difference is called higher or lower only when its interval excludes zero, so a rerun with other numbers says what
those show. A page that makes many comparisons also says how many of them would exclude zero by chance alone
(:func:`by_chance`): with no difference anywhere, a share ``1 - confidence`` of the intervals still excludes zero, so a
sentence that calls one difference among many is weighed against that.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd


def verdict(what: str, mean: float, low: float, high: float, n: int, unit: str = "points", level: float = 0.95) -> str:
    """One sentence on a difference from its interval: higher or lower only when the interval excludes zero."""
    interval = f"{level:.0%} t-interval over {n} seeds [{low:+.2f}, {high:+.2f}]"
    if n < 2 or pd.isna(low):
        return f"{what}: {mean:+.2f} {unit} from {n} seed(s), too few for an interval; nothing is concluded."
    if low > 0:
        return f"{what} is **higher**: by {mean:.2f} {unit} ({interval}, excluding zero)."
    if high < 0:
        return f"{what} is **lower**: by {-mean:.2f} {unit} ({interval}, excluding zero)."
    return f"{what}: {mean:+.2f} {unit}, **no difference shown** ({interval} includes zero)."


def by_chance(count: int, confidence: float) -> str:
    """How many of ``count`` comparisons at ``confidence`` would exclude zero with no difference at all."""
    return (f"{count} comparisons at {int(confidence * 100)}%: about {count * (1 - confidence):.1f} would exclude zero "
            "by chance alone.")  # fmt: skip


def bullets(lines: Iterable[str]) -> str:
    """A page's conclusion as a markdown list, one sentence an item."""
    return "\n".join(f"- {line}" for line in lines)
