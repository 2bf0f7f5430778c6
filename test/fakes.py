"""A settable clock for the code that takes one (``clock=``): tests move time on by hand
instead of sleeping."""
from datetime import datetime, timedelta


class Clock:
    """``clock()`` is ``now``: seconds (1000.0 unless given) or a datetime. ``advance(5)``
    or ``advance(hours=2)`` moves it on; tests may also set ``now`` directly."""

    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now

    def advance(self, seconds=0.0, **delta):
        step = timedelta(seconds=seconds, **delta)
        self.now += step if isinstance(self.now, datetime) else step.total_seconds()
