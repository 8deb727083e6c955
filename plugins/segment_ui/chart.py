"""The account view's chart: daily event counts as stacked bars, one colour per event name (templates/chart.html)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

PALETTE = ("#017cee", "#f08a24", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
WIDTH, HEIGHT, LEFT, RIGHT, BOTTOM = 720, 220, 40, 24, 20


@dataclass(frozen=True)
class Bar:
    x: str  # SVG coordinates, to 0.1 px
    y: str
    width: str
    height: str
    colour: str
    day: dt.date
    name: str
    count: int


@dataclass(frozen=True)
class Label:
    x: float
    day: dt.date


@dataclass(frozen=True)
class DailyBars:
    all_names: list[str]  # every event name of the window, for the selector
    only: str | None
    top: int
    bars: list[Bar]
    labels: list[Label]  # every 5th day and today
    legend: list[tuple[str, str]]  # (event name, colour)
    width: int = WIDTH
    height: int = HEIGHT
    full_height: int = HEIGHT + BOTTOM
    left: int = LEFT


def daily_bars(daily: list[dict], since: dt.date, today: dt.date, only: str | None = None) -> DailyBars:
    """The bars of `daily` (event_date, event_name, event_count rows) from `since` to `today`, or of one name."""
    days = [since + dt.timedelta(days=i) for i in range((today - since).days + 1)]
    all_names = sorted({r["event_name"] for r in daily})
    names = [n for n in all_names if only is None or n == only]
    counts = {(r["event_date"], r["event_name"]): r["event_count"] for r in daily}
    top = max([sum(counts.get((d, n), 0) for n in names) for d in days] + [1])
    step = (WIDTH - LEFT - RIGHT) / len(days)
    bars, labels = [], []
    for i, day in enumerate(days):
        y = HEIGHT
        for k, name in enumerate(names):
            count = counts.get((day, name), 0)
            if not count:
                continue
            height = count / top * (HEIGHT - 10)
            y -= height
            colour = PALETTE[k % len(PALETTE)]
            bars.append(
                Bar(
                    f"{LEFT + i * step + 1:.1f}",
                    f"{y:.1f}",
                    f"{step - 2:.1f}",
                    f"{height:.1f}",
                    colour,
                    day,
                    name,
                    count,
                )
            )
        if i % 5 == 0 or day == today:
            labels.append(Label(LEFT + i * step, day))
    legend = [(name, PALETTE[k % len(PALETTE)]) for k, name in enumerate(names)]
    return DailyBars(all_names, only, top, bars, labels, legend)
