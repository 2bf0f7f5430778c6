"""Which coordinators' records a node has had pushed to it, so that its pulls skip them.

Every node pulls, each heartbeat, whatever a peer's map changed since the last pull. A
peer's map changes with every record it applies, its own and those pushed to it by the
others, so under uploads through several nodes at once each pull brought back nearly every
record of the past second, each already pushed here by its own coordinator: with n nodes,
every record was sent n - 1 times more than needed (about 300 records a pull at 16 clients
on three nodes; at five nodes the pulls cost about a tenth of the cluster's CPU and a
third of the uploads' p99).

So each node numbers the records it publishes with a counter of its own (``OwnCounter``),
every push says which numbers it carries, and the receiver keeps, per coordinator, the
span of numbers it has all of (``PushedSpans``). A pull names those spans (``known``) and
the peer sends just the sequence number of each record inside them (``changes_since``):
the feed's pages keep their length and the cursor moves past them. A span is only ever
what this node has applied (records pushed here and applied, or a complete pull from the
coordinator itself), and only of the coordinator's current run of numbers, so nothing a
pull must bring can be skipped.
"""
import time

BLOCK = 1 << 20  # numbers reserved on disk at a time: one write per million records
_RESERVED = "own_counter_reserved"


class OwnCounter:
    """The numbers this node gives the records it publishes: strictly increasing for as long
    as its map lives, across restarts whatever the clock does.

    A run starts above every number reserved before (kept in the map's ``state``, a block
    at a time) and above the clock in microseconds (a map lost with its reservation starts
    above the numbers of the lost run, as long as the clock has not gone back). ``base``:
    the number the run started at; peers trust spans above it only (``PushedSpans``).
    """

    def __init__(self, locations):
        self._locations = locations
        reserved = int(locations.get_state(_RESERVED, "0"))
        self.base = self.value = max(reserved, time.time_ns() // 1000)
        self._reserve()

    def _reserve(self):
        self._reserved = self.value + BLOCK
        self._locations.set_state(_RESERVED, str(self._reserved))

    def take(self, locs):
        """Number ``locs`` (in place); (the number before them, the last of theirs)."""
        before = self.value
        for loc in locs:
            self.value += 1
            loc.cseq = self.value
        if self.value >= self._reserved:
            self._reserve()
        return before, self.value

    def span(self):
        """(base, value): this run's numbers so far, every one of them in the map here."""
        return self.base, self.value


class PushedSpans:
    """Per coordinator, the span (lo, hi] of its numbers whose records this node has.

    A span starts from a complete pull from the coordinator (``pulled``: its whole map is
    here, and with it every record it numbered this run) and grows with each push that
    follows on from its end (``pushed``). Pushes arriving out of order wait (``_ahead``) for
    the one before them; a gap, a push lost, stops the span until the next pull from the
    coordinator starts it again.
    """

    MAX_AHEAD = 10_000  # pushes waiting for a gap to close, per coordinator

    def __init__(self, name=None, counter=None):
        self._spans = {}
        self._ahead = {}
        self._name, self._counter = name, counter  # this node's own records: all here

    def known(self):
        """{coordinator: (lo, hi)}: what a pull may skip (this node's own run included)."""
        known = dict(self._spans)
        if self._counter is not None:
            known[self._name] = self._counter.span()
        return known

    def pulled(self, coordinator, span):
        """A complete pull from ``coordinator`` whose answer said ``span``: (base, value)."""
        lo, hi = int(span[0]), int(span[1])
        old = self._spans.get(coordinator)
        if old is not None and old[0] == lo:
            hi = max(hi, old[1])  # pushes after the answer went out: kept
        self._spans[coordinator] = (lo, hi)
        self._follow(coordinator)

    def pushed(self, coordinator, before, after):
        """Records ``coordinator`` numbered ``before`` + 1 .. ``after`` are applied here."""
        span = self._spans.get(coordinator)
        if span is None or after <= span[1]:
            return
        ahead = self._ahead.setdefault(coordinator, {})
        if len(ahead) >= self.MAX_AHEAD:
            ahead.clear()  # a gap that never closed: the next pull starts the span again
        ahead[before] = max(after, ahead.get(before, after))
        self._follow(coordinator)

    def _follow(self, coordinator):
        """Take into the span every waiting push that starts inside it or at its end."""
        ahead = self._ahead.get(coordinator)
        lo, hi = self._spans[coordinator]
        while ahead:
            joining = [start for start in ahead if start <= hi]
            if not joining:
                break
            for start in joining:
                hi = max(hi, ahead.pop(start))
        self._spans[coordinator] = (lo, hi)
