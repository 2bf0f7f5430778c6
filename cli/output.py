"""How the command-line client shows things: sizes, times, tables, JSON, usage errors."""
import datetime
import json


class UsageError(Exception):
    """A mistake on the command line that argparse cannot see (exit status 2)."""


def human_size(n):
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(n)


def quota_text(quota):
    return "none" if quota is None else human_size(quota)


def usage_text(usage):
    """'1.2 GiB of 10.0 GiB (12 %)', or '1.2 GiB (no quota)'."""
    used, quota = usage.get("used_bytes", 0), usage.get("quota_bytes")
    if quota is None:
        return f"{human_size(used)} (no quota)"
    share = f" ({100 * used / quota:.0f} %)" if quota else ""
    return f"{human_size(used)} of {human_size(quota)}{share}"


def when(value):
    """Epoch seconds or ISO text as local time to the second; '-' for nothing."""
    if isinstance(value, (int, float)):
        return datetime.datetime.fromtimestamp(value).isoformat(sep=" ", timespec="seconds")
    if isinstance(value, str) and value:
        try:
            moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
        if moment.tzinfo is not None:
            moment = moment.astimezone()
        return moment.isoformat(sep=" ", timespec="seconds")[:19]
    return "-"


def format_table(headers, rows):
    """Left-aligned columns under upper-case headers, two spaces apart; no trailing blanks."""
    cells = [[str(h).upper() for h in headers]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)


def to_json(value):
    return json.dumps(value, indent=2, sort_keys=False)
