"""What every benchmark here shares: number formatting and the markdown table.

Each script's rows differ (what they hold, what they write to JSON); they all print the
same six columns, through :func:`markdown_table`, from ``row.cells()``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Protocol

COLUMNS = ("measurement", "value", "baseline", "ratio", "goal", "met?")


class HasCells(Protocol):
    def cells(self) -> list[str]: ...


def markdown_table(rows: Iterable[HasCells], columns: Sequence[str] = COLUMNS) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines)


def format_ns(ns: float | None) -> str:
    if ns is None:
        return "-"
    if ns >= 1e9:
        return f"{ns / 1e9:.2f} s"
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.1f} µs"
    return f"{ns:.0f} ns"


def format_bytes(amount: float | None) -> str:
    if amount is None:
        return "-"
    if amount >= 1024 * 1024:
        return f"{amount / 1024 / 1024:.1f} MiB"
    return f"{amount / 1024:.1f} KiB"


def percentile(samples: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (p99 of 1,000 samples is the 990th smallest)."""
    ordered = sorted(samples)
    return float(ordered[max(0, math.ceil(fraction * len(ordered)) - 1)])
