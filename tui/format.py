"""How the terminal client writes sizes, times and ages: short enough for 80 columns."""
import math
from datetime import datetime

from securifile.common.times import aware

UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_size(n):
    """``1.5 MiB``; ``-`` for nothing. Whole numbers of bytes stay exact."""
    if n is None:
        return "-"
    size = float(n)
    for unit in UNITS:
        if abs(size) < 1024 or unit == UNITS[-1]:
            if unit == "B":
                return f"{int(size)} B"
            return f"{size:.0f} {unit}" if abs(size) >= 100 else f"{size:.1f} {unit}"
        size /= 1024
    return str(n)


def axis_size(n):
    """A tick label: as human_size, without a needless '.0' (``1 GiB``, ``1.5 GiB``)."""
    text = human_size(n)
    return text.replace(".0 ", " ")


def parse_time(value):
    """An aware datetime from the API's ISO text (None for nothing or nonsense)."""
    if isinstance(value, datetime):
        return aware(value)
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return aware(moment)


def clock_time(value, tz=None, seconds=True):
    """``14:03:07`` in ``tz`` (None: the local zone)."""
    moment = parse_time(value)
    if moment is None:
        return "-"
    return moment.astimezone(tz).strftime("%H:%M:%S" if seconds else "%H:%M")


def date_time(value, tz=None):
    """``2026-11-24 14:03`` in ``tz`` (None: the local zone)."""
    moment = parse_time(value)
    if moment is None:
        return "-"
    return moment.astimezone(tz).strftime("%Y-%m-%d %H:%M")


def age(value, now):
    """How long ago, in the largest whole unit: ``45s``, ``12m``, ``3h``, ``2d``."""
    moment = parse_time(value)
    if moment is None:
        return "-"
    seconds = max(0, int((now - moment).total_seconds()))
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def since(value, now, tz=None):
    """``14:03:07 (12m)``: when a state began, and how long it has lasted."""
    if parse_time(value) is None:
        return "-"
    return f"{clock_time(value, tz)} ({age(value, now)})"


def valid_until(value, now, tz=None):
    """``2026-12-24`` for an account, or ``expired 2026-11-01``."""
    moment = parse_time(value)
    if moment is None:
        return "-"
    day = moment.astimezone(tz).strftime("%Y-%m-%d")
    return day if moment > now else f"expired {day}"


# --- axis ticks -----------------------------------------------------------------------------

_LINEAR_STEPS = sorted(m * 1024 ** k for k in range(len(UNITS))
                       for m in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500))


def linear_byte_ticks(low, high, most=5):
    """Evenly spaced ticks from 0 (or below ``low``) past ``high``, in round byte units."""
    low, high = min(0, low), max(high, 1)
    span = high - low
    step = next((s for s in _LINEAR_STEPS if span / s <= most - 1), _LINEAR_STEPS[-1])
    first = math.floor(low / step) * step
    ticks = [first]
    while ticks[-1] < high:
        ticks.append(ticks[-1] + step)
    return ticks


def log_byte_ticks(low, high, most=5):
    """Powers of two around the data; only powers of 1024 when the range spans several."""
    lo = math.floor(math.log2(max(1, low)))
    hi = max(math.ceil(math.log2(max(1, high))), lo + 1)
    lo_1024, hi_1024 = lo // 10 * 10, -(-hi // 10) * 10
    exps = list(range(lo_1024, hi_1024 + 1, 10)) if hi_1024 - lo_1024 >= 20 else list(range(lo, hi + 1))
    stride = max(1, math.ceil((len(exps) - 1) / (most - 1)))
    chosen = exps[::stride]
    if chosen[-1] != exps[-1]:
        chosen.append(exps[-1])
    return [2 ** e for e in chosen]
