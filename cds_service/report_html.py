"""`cds-service report --html`: the report as one self-contained HTML page with a weekly plot per
card kind (inline SVG: no script, no network), the top override reasons and the content versions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape

from cds_service.store.report import KindReport, report, unbumped, versions

# The plotted series: (KindReport attribute, legend label, colour).
SERIES = (
    ("shown", "shown", "#1f77b4"),
    ("silent", "silent (would have shown)", "#7f7f7f"),
    ("accepted", "accepted", "#2ca02c"),
    ("overridden", "overridden", "#d62728"),
)
WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 640, 200, 44, 12, 12, 28
# Version labels closer than this (SVG units) are stacked, one line each, so none hides another.
LABEL_GAP, LABEL_LINE = 80, 11


@dataclass
class Plot:
    """One card kind's weekly counts and the SVG geometry that draws them."""

    kind: str
    weeks: list[date]
    counts: dict[str, list[int]]  # series -> one count per week
    lines: list[tuple[str, str, str]]  # (label, colour, SVG polyline points)
    markers: list[tuple[str, str, float, float]]  # (label, colour, x, y): a dot per week and series
    changes: list[tuple[str, float, float]]  # (content version, x, label y): the week it came in
    y_max: int
    total: KindReport


def write_report(url: str, since: datetime | None, out_dir: Path) -> Path:
    """Write OUT_DIR/report.html for the cards issued since `since`; returns its path."""
    weekly = report(url, since, by_week=True)
    totals = {row.kind: row for row in report(url, since)}
    weeks = _weeks([row.week for row in weekly if row.week is not None])
    seen = versions(url, since)
    # Where each content version came in, drawn on every plot: did a change move the outcomes?
    came_in: dict[str, date] = {}
    for version, _, first, _, _ in seen:
        day = first.astimezone(UTC).date()
        monday = day - timedelta(days=day.weekday())
        came_in[version] = min(came_in.get(version, monday), monday)
    plots = [
        _plot(kind, weeks, [row for row in weekly if row.kind == kind], totals[kind], came_in)
        for kind in sorted(totals)
    ]
    environment = Environment(
        loader=PackageLoader("cds_service", "templates"), autoescape=select_autoescape()
    )
    html = environment.get_template("report.html").render(
        plots=plots,
        series=SERIES,
        versions=seen,
        unbumped=unbumped(seen),
        since=since,
        generated=datetime.now(UTC),
        size={"width": WIDTH, "height": HEIGHT, "left": LEFT, "bottom": HEIGHT - BOTTOM},
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "report.html"
    path.write_text(html, encoding="utf-8")
    return path


def _weeks(mondays: list[date]) -> list[date]:
    """Every week from the first to the last with a card (weeks without one are zeros, not gaps)."""
    if not mondays:
        return []
    first, last = min(mondays), max(mondays)
    return [first + timedelta(weeks=n) for n in range((last - first).days // 7 + 1)]


def _plot(
    kind: str,
    weeks: list[date],
    rows: list[KindReport],
    total: KindReport,
    came_in: dict[str, date],
) -> Plot:
    by_week = {row.week: row for row in rows}
    counts = {
        attr: [getattr(by_week[w], attr) if w in by_week else 0 for w in weeks]
        for attr, _, _ in SERIES
    }
    y_max = max([1, *(n for values in counts.values() for n in values)])
    span = max(len(weeks) - 1, 1)

    def x(index: int) -> float:
        return LEFT + (WIDTH - LEFT - RIGHT) * (index / span if len(weeks) > 1 else 0.5)

    def y(value: int) -> float:
        return HEIGHT - BOTTOM - (HEIGHT - TOP - BOTTOM) * value / y_max

    lines = [
        (label, colour, " ".join(f"{x(i):.1f},{y(n):.1f}" for i, n in enumerate(counts[attr])))
        for attr, label, colour in SERIES
    ]
    # A dot on every week: one week of data is a single point, which a line alone does not draw.
    markers = [
        (label, colour, round(x(i), 1), round(y(n), 1))
        for attr, label, colour in SERIES
        for i, n in enumerate(counts[attr])
    ]
    starts = sorted((x(weeks.index(monday)), v) for v, monday in came_in.items() if monday in weeks)
    changes: list[tuple[str, float, float]] = []
    for at, version in starts:
        stacked = sum(1 for _, other, _ in changes if at - other < LABEL_GAP)
        changes.append((version, round(at, 1), TOP + 10 + LABEL_LINE * stacked))
    return Plot(kind, weeks, counts, lines, markers, changes, y_max, total)
