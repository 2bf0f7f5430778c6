"""Times as the API, the database and the logs hold them: UTC, ISO 8601 text, epoch seconds.

One rule runs through all of them: a naive datetime (SQLite hands those back) is UTC.
"""
from datetime import datetime, timezone


def aware(dt):
    """``dt`` with a zone: a naive one is taken to be UTC (None stays None)."""
    return dt if dt is None or dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def utc(dt):
    """``dt`` converted to UTC (a naive one is UTC already)."""
    return aware(dt).astimezone(timezone.utc)


def from_epoch(seconds):
    """An aware UTC datetime from epoch seconds (a number, or its text as reports send it)."""
    return datetime.fromtimestamp(float(seconds), timezone.utc)


def epoch(dt):
    """Epoch seconds of ``dt`` (a naive one is UTC)."""
    return aware(dt).timestamp()


def iso(dt):
    """ISO 8601 text with the zone, as the API answers (None for nothing)."""
    return None if dt is None else aware(dt).isoformat()
