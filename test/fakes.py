"""Stand-ins for time and concurrency: a settable clock for the code that takes one
(``clock=``), so that tests move time on by hand instead of sleeping; calls released
together on threads, for races on shared rows."""
import threading
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


def at_once(*calls):
    """Run ``calls`` on threads released together (two admin instances, or two requests on
    one, reaching the same rows at the same moment); the exceptions they raised."""
    gate = threading.Barrier(len(calls), timeout=10)
    errors = []

    def run(call):
        try:
            gate.wait()
            call()
        except Exception as e:  # noqa: BLE001 (any failure is the finding)
            errors.append(e)

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return errors
