"""A history of reads, writes and deletes on a few paths, and what it allows each to see.

Each path is a register. A write's value is its bytes (unique per write), a delete's value
is ``ABSENT``, as is the value of a path before anything was written. An operation that was
acknowledged (2xx) ended at its acknowledgement; one that was refused before it did anything
(``fail``) never took effect; one whose outcome is unknown (timeout, broken connection, a
server error) may take effect at any time, so it never ends.

An operation B *supersedes* A when B was acknowledged and started after A's acknowledgement:
whoever looks after B's acknowledgement must not see A's value any more. So a read may
return the value of an effective operation that started before the read ended and was not
superseded by one acknowledged before the read started; the final value of a path, the value
of one that nothing acknowledged superseded.
"""
import math
import threading
from dataclasses import dataclass

ABSENT = None
WRITE, DELETE, READ = "write", "delete", "read"
OK, FAIL, UNKNOWN = "ok", "fail", "unknown"


@dataclass
class Op:
    process: str
    kind: str
    path: str
    value: bytes | None  # the bytes written or read; ABSENT for a delete or a 404
    start: float
    end: float = math.inf  # the acknowledgement; inf while (or when) it is not known
    outcome: str = UNKNOWN
    node: str = ""
    detail: str = ""

    @property
    def effective(self):
        """Took effect, or may have: a refused operation did nothing."""
        return self.kind in (WRITE, DELETE) and self.outcome != FAIL

    @property
    def acknowledged_at(self):
        return self.end if self.outcome == OK else math.inf

    def describe(self):
        value = "absent" if self.value is ABSENT else f"{len(self.value)}B {self.value[:24]!r}"
        end = "..." if math.isinf(self.end) else f"{self.end:9.3f}"
        return (f"{self.start:9.3f} {end} {self.process:>10} {self.kind:6} {self.path} "
                f"{self.outcome:7} via {self.node or '-':6} {value} {self.detail}")


INITIAL = Op("initial", DELETE, "", ABSENT, -math.inf, -math.inf, OK)


class History:
    """Operations recorded by many threads, with the nemesis' actions between them."""

    def __init__(self, clock):
        self.clock = clock
        self.ops = []
        self.events = []
        self._lock = threading.Lock()

    def begin(self, process, kind, path, value=ABSENT, node=""):
        op = Op(process, kind, path, value, self.clock(), node=node)
        with self._lock:
            self.ops.append(op)
        return op

    def finish(self, op, outcome, value=ABSENT, detail="", node=""):
        op.outcome, op.detail = outcome, detail
        op.node = node or op.node
        if op.kind == READ:
            op.value = value
        if outcome != UNKNOWN:
            op.end = self.clock()

    def event(self, text):
        with self._lock:
            self.events.append((self.clock(), text))

    def effects(self, path):
        return [INITIAL] + [op for op in self.ops if op.path == path and op.effective]

    def written(self, path):
        return {op.value for op in self.ops if op.path == path and op.kind == WRITE}

    def describe(self, path=None, last=None):
        """Operations (on ``path``) and nemesis events in start order, for a failure message."""
        lines = [(op.start, op.describe()) for op in self.ops if path in (None, op.path)]
        lines += [(t, f"{t:9.3f}           nemesis    {text}") for t, text in self.events]
        lines.sort(key=lambda line: line[0])
        if last:
            lines = lines[-last:]
        return "\n".join(text for _, text in lines)


def superseded(op, before, effects):
    """Whether an acknowledged operation that started after ``op``'s acknowledgement was
    itself acknowledged before time ``before``."""
    acked = op.acknowledged_at
    return any(b.outcome == OK and b.start > acked and b.end < before for b in effects)


def allowed(value, start, end, effects):
    """The operations whose value a look at the path between ``start`` and ``end`` may see."""
    return [w for w in effects if w.value == value and w.start < end
            and not superseded(w, start, effects)]


def read_violations(history):
    """Reads that returned bytes nobody wrote there, or a value already superseded."""
    problems = []
    for r in history.ops:
        if r.kind != READ or r.outcome != OK:
            continue
        if r.value is not ABSENT and r.value not in history.written(r.path):
            problems.append(f"read returned bytes never written to {r.path}: {r.describe()}")
        elif not allowed(r.value, r.start, r.end, history.effects(r.path)):
            problems.append(f"stale or impossible read: {r.describe()}")
    return problems


def final_violation(history, path, value):
    """Why ``value`` cannot be what ``path`` holds at the end, or None if it can."""
    effects = history.effects(path)
    if value is not ABSENT and value not in history.written(path):
        return f"{path} holds bytes never written to it"
    if not allowed(value, math.inf, math.inf, effects):
        live = [w.describe() for w in effects if not superseded(w, math.inf, effects)]
        return (f"{path} holds a value superseded by a later acknowledged operation; "
                f"allowed: \n  " + "\n  ".join(live))
    return None
