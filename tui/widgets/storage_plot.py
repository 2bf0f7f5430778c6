"""Used and available storage of one server over time: a plot, or a one-line sparkline.

The admin server samples every node's disk (``GET /api/v1/servers/NAME/storage``); the
servers screen fetches only the samples newer than the last one it has, appends them to a
capped ``StorageSeries`` per server, and each tick redraws from that series (Dolphie's
``MetricGraph`` does the same with its metrics). The plot shows used bytes, available bytes
and the capacity line (used + available) on a byte-labelled axis, logarithmic by default so
that a few megabytes stored next to terabytes free still show; ``l`` switches to linear.
"""
import math
from collections import deque
from datetime import timedelta

from rich.text import Text
from textual.app import ComposeResult
from textual.color import Color
from textual.containers import Horizontal, Vertical
from textual.reactive import reactive
from textual.widgets import Label, Sparkline, Static
from textual_plotext import PlotextPlot

from securifile.common.times import from_epoch

from ..format import axis_size, clock_time, human_size, linear_byte_ticks, log_byte_ticks, parse_time

SERIES_CAP = 720  # an hour of samples at the admin server's five-second pace
WINDOW = timedelta(minutes=10)
# Quadrant blocks: in every monospace font (braille dots are not, and break SVG screenshots)
MARKER = "hd"


class StorageSeries:
    """One server's samples, oldest first, at most ``cap`` of them: (epoch, used, available)."""

    def __init__(self, cap=SERIES_CAP):
        self.points = deque(maxlen=cap)

    def extend(self, samples):
        """Append the API's samples newer than the newest held; True when any were new."""
        added = False
        for s in samples or ():
            moment = parse_time(s.get("t"))
            if moment is None:
                continue
            t = moment.timestamp()
            if self.points and t <= self.points[-1][0]:
                continue  # ``since`` is inclusive: the newest sample comes back each time
            self.points.append((t, int(s.get("used_bytes") or 0), int(s.get("available_bytes") or 0)))
            added = True
        return added

    @property
    def latest(self):
        """(epoch, used, available) of the newest sample, or None."""
        return self.points[-1] if self.points else None

    def last_time(self):
        return self.points[-1][0] if self.points else None

    def window(self, start):
        """The points at or after epoch ``start``, plus the one just before (lines enter from the edge)."""
        pts = list(self.points)
        first = next((i for i, p in enumerate(pts) if p[0] >= start), len(pts))
        return pts[max(0, first - 1):]

    def __len__(self):
        return len(self.points)


def series_colors(app):
    """RGB for used, available and capacity, from the current Textual theme."""
    theme = app.current_theme

    def rgb(value, fallback):
        try:
            return Color.parse(value or fallback).rgb
        except Exception:  # a theme without that colour
            return Color.parse(fallback).rgb

    return (rgb(theme.warning, "#ffa62b"), rgb(theme.success, "#4ebf71"),
            rgb(theme.primary, "#0178d4"))


def legend(app, latest, width=80, compact=False):
    """``━ used 1.2 MiB (0.0%)  ━ available 74.9 GiB  ━ capacity 75 GiB`` in the plot's
    colours, in shorter words when ``width`` is narrow; ``compact``: ``1.2 MiB of 75 GiB``."""
    used_c, avail_c, cap_c = (Color(*c).hex for c in series_colors(app))
    if latest is None:
        return Text("no samples yet", style="dim")
    _, used, avail = latest
    total = used + avail
    pct = f" ({100 * used / total:.1f}%)" if total else ""
    if compact:
        return Text.assemble((human_size(used), used_c), " of ", (human_size(total), cap_c), pct)
    for words, share in ((("used", "available", "capacity"), pct), (("used", "free", "total"), pct),
                         (("used", "free", None), pct), (("used", "free", None), "")):
        parts = [(f"━ {words[0]} ", used_c), human_size(used), share, "  ",
                 (f"━ {words[1]} ", avail_c), human_size(avail)]
        if words[2]:
            parts += ["  ", (f"━ {words[2]} ", cap_c), human_size(total)]
        text = Text.assemble(*parts)
        if len(text) <= width:
            return text
    return text


class StorageLegend(Static):
    """The legend line, worded to fit the width it is drawn at."""

    def __init__(self, series, **kwargs):
        super().__init__(**kwargs)
        self.series = series

    def render(self):
        return legend(self.app, self.series.latest, width=self.content_region.width or 80)


class StoragePlot(PlotextPlot):
    """The time series of one server, redrawn from its StorageSeries on each ``show``."""

    scale = reactive("log")

    def __init__(self, series, *, tz=None, window=WINDOW, **kwargs):
        super().__init__(**kwargs)
        self.series = series
        self.tz = tz
        self.window = window
        self.now = None

    def show(self, now):
        """Redraw for the window that ends at ``now`` (an aware datetime)."""
        self.now = now
        self.replot()

    def watch_scale(self):
        self.replot()

    def on_resize(self):
        self.replot()  # tick counts follow the width

    def replot(self):
        self.refresh()

    def render(self):
        # plotext applies a log axis to the plotted data in place when it builds, so a
        # second build of the same data (the widget drawn again with no new sample: a
        # dialog or a notification over it) took the log of a log, and of log10(1) = 0:
        # "math domain error" (a CI run stopped on it). Each render draws afresh.
        self._draw()
        return super().render()

    def _draw(self):
        """Set the plot up for the window that ends at ``now``: axes, ticks and series."""
        plt = self.plt
        plt.clf()
        if self.now is None or not self.is_mounted:
            return
        end = self.now.timestamp()
        start = end - self.window.total_seconds()
        pts = self.series.window(start)
        plt.xlim(start, end)
        width = self.size.width or 60
        count = 5 if width >= 70 else 3 if width >= 36 else 2
        xticks = [start + i * (end - start) / (count - 1) for i in range(count)]
        plt.xticks(xticks, [clock_time(from_epoch(t), self.tz, seconds=False) for t in xticks])
        if not pts:
            plt.yticks([], [])
            plt.frame(True)
            return
        xs = [p[0] for p in pts]
        used = [p[1] for p in pts]
        avail = [p[2] for p in pts]
        cap = [u + a for u, a in zip(used, avail)]
        used_c, avail_c, cap_c = series_colors(self.app)
        top = max(cap)
        rows = max(2, min(5, self.size.height // 2))
        if self.scale == "log":
            plt.yscale("log")
            used = [max(1, u) for u in used]  # log(0): nothing stored is drawn as one byte
            avail = [max(1, a) for a in avail]
            cap = [max(1, c) for c in cap]  # a server that has not measured its disk yet
            top = max(cap)
            ticks = [t for t in log_byte_ticks(min(used), top, most=rows) if t <= top]
            # the top label is the capacity itself, instead of a round value just below it
            if len(ticks) > 1 and math.log10(top) - math.log10(ticks[-1]) < 0.3:
                ticks[-1] = top
            elif not ticks or ticks[-1] != top:
                ticks.append(top)
            # plotext takes the limits of a log axis as exponents
            plt.ylim(math.log10(ticks[0]), math.log10(max(top, ticks[-1])) + 0.05)
        else:
            ticks = linear_byte_ticks(0, top, most=rows)
            plt.ylim(ticks[0], ticks[-1])
        plt.yticks(ticks, [axis_size(t) for t in ticks])
        plt.plot(xs, cap, color=cap_c, marker=MARKER)
        plt.plot(xs, avail, color=avail_c, marker=MARKER)  # over capacity while little is used
        plt.plot(xs, used, color=used_c, marker=MARKER)  # last: on top of the others


class StorageChart(Vertical):
    """A server's name, status and legend over its StoragePlot."""

    DEFAULT_CSS = """
    StorageChart {
        height: 1fr;
        min-height: 7;
        border: round $panel-lighten-2;
        border-title-color: $foreground;
        padding: 0 0;
    }
    StorageChart > StorageLegend {
        height: 1;
        padding: 0 1;
    }
    StorageChart > StoragePlot {
        height: 1fr;
    }
    """

    def __init__(self, name, series, *, tz=None, **kwargs):
        super().__init__(**kwargs)
        self.server = name
        self.series = series
        self.tz = tz
        self.border_title = name
        self.scale = "log"
        self._shown = None

    def compose(self) -> ComposeResult:
        yield StorageLegend(self.series)
        yield StoragePlot(self.series, tz=self.tz)

    @property
    def plot(self):
        return self.query_one(StoragePlot)

    def on_mount(self):
        if self._shown is not None:
            self.show(*self._shown)

    def show(self, now, status=None):
        """Redraw for the window ending at ``now`` (before mounting: once mounted)."""
        self._shown = (now, status)
        self.border_title = f"{self.server} · {status}" if status else self.server
        if not self.children:
            return
        self.plot.scale = self.scale
        self.query_one(StorageLegend).refresh()
        self.plot.show(now)


class StorageSparkline(Horizontal):
    """One line for a small terminal: name, a sparkline of used bytes, used of capacity."""

    DEFAULT_CSS = """
    StorageSparkline {
        height: 1;
    }
    StorageSparkline > .spark-name {
        width: 8;
        text-style: bold;
    }
    StorageSparkline > Sparkline {
        width: 1fr;
        margin: 0 1;
    }
    StorageSparkline > .spark-numbers {
        width: 28;
    }
    """

    def __init__(self, name, series, **kwargs):
        super().__init__(**kwargs)
        self.server = name
        self.series = series
        self._shown = None

    def compose(self) -> ComposeResult:
        yield Label(self.server, classes="spark-name")
        yield Sparkline([], summary_function=max)
        yield Label("", classes="spark-numbers")

    def on_mount(self):
        if self._shown is not None:
            self.show(*self._shown)

    def show(self, now, status=None):
        """Redraw for the window ending at ``now`` (before mounting: once mounted)."""
        self._shown = (now, status)
        if not self.children:
            return
        start = now.timestamp() - WINDOW.total_seconds()
        used = [p[1] for p in self.series.window(start)]
        self.query_one(Sparkline).data = used or [0]
        self.query_one(".spark-numbers", Label).update(
            legend(self.app, self.series.latest, compact=True))
