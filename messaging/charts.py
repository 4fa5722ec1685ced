"""Chart geometry for the operator's page, drawn as inline SVG by its templates (no script):
pure functions from counts to rectangles and points in a 0-100 box."""

from dataclasses import dataclass

# A message's states, in the order a bar stacks them.
PROGRESS_STATES = ("queued", "sent", "delivered", "failed")
EVENT_STATES = ("sent", "delivered", "failed")


@dataclass(frozen=True)
class Segment:
    state: str
    count: int
    start: float  # 0-100
    width: float


def stacked(counts: dict[str, int], order=PROGRESS_STATES) -> list[Segment]:
    """Split a 0-100 bar between the states in `order`, in proportion to their counts."""
    total = sum(max(0, counts.get(state, 0)) for state in order)
    segments, start = [], 0.0
    for state in order:
        count = max(0, counts.get(state, 0))
        width = 100.0 * count / total if total else 0.0
        segments.append(Segment(state, count, round(start, 3), round(width, 3)))
        start += width
    return segments


def describe(counts: dict[str, int], order=PROGRESS_STATES) -> str:
    """Say a bar's numbers in words (its title and label): "queued 0, sent 2, ..."."""
    return ", ".join(f"{state} {counts.get(state, 0):,}" for state in order)


@dataclass(frozen=True)
class Column:
    label: str
    counts: dict[str, int]
    x: float  # 0-100, its left edge
    width: float
    boxes: list[tuple[str, float, float]]  # (state, y, height): y from the top, 0-100


def columns(
    buckets: list[tuple[str, dict[str, int]]], order=EVENT_STATES, gap: float = 0.15
) -> tuple[list[Column], int]:
    """Lay out one stacked column per bucket, scaled to the tallest; return them and that
    tallest total (the chart's scale)."""
    tallest = max((sum(counts.get(s, 0) for s in order) for _, counts in buckets), default=0)
    step = 100.0 / len(buckets) if buckets else 0.0
    laid = []
    for index, (label, counts) in enumerate(buckets):
        boxes, top = [], 100.0
        for state in order:
            height = 100.0 * counts.get(state, 0) / tallest if tallest else 0.0
            top -= height
            if height > 0:
                boxes.append((state, round(top, 3), round(height, 3)))
        laid.append(
            Column(label, counts, round(index * step, 3), round(step * (1 - gap), 3), boxes)
        )
    return laid, tallest


def polyline(values: list[float], most: float) -> str:
    """Return SVG polyline points for `values` spread evenly across 0-100, scaled so that
    `most` reaches the top."""
    if not values:
        return ""
    step = 100.0 / (len(values) - 1) if len(values) > 1 else 0.0
    points = []
    for index, value in enumerate(values):
        y = 100.0 - (100.0 * value / most if most else 0.0)
        points.append(f"{index * step:.2f},{y:.2f}")
    return " ".join(points)


def bucket_seconds(span_seconds: float, buckets: int = 40) -> int:
    """Pick a round bucket width that cuts `span_seconds` into at most about `buckets`."""
    for width in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400):
        if span_seconds / width <= buckets:
            return width
    return 86400 * max(1, int(span_seconds // (86400 * buckets)) + 1)


def duration(seconds: float | None) -> str:
    """Say a duration shortly: 0.4 s, 12 s, 3 min 20 s, 2 h 5 min, 3 d 4 h."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f} s"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"
