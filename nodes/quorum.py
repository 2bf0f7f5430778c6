"""Whether this node may serve: it hears from a majority of the servers.

A server that cannot reach more than half of the cluster (itself included) stops serving
users and takes no writes, so a partition never has two sides accepting changes (Ceph's and
MinIO's rule, not Swift's). In an even split, exactly half wins only with the witness's
grant: the admin server gives a short lease to one side at a time. So with 3 servers any one
may be lost; with 2, either may be lost while the admin server answers; the admin server's
loss alone changes nothing while a strict majority of servers hear each other.

"Hears" means: answered a heartbeat within the detection window (``misses`` intervals),
whatever its status (a verifying or failed server still votes on locks). At start nothing
has answered yet, so a node serves only after it has heard from, and pulled the location
records of, a majority. Nor does it ask the witness in its first window: a node just
started has heard from no peer yet, then from some, and "exactly half" then means "not all
answered yet", not a split; a lease granted for it would hold up membership changes for
its length (the admin server refuses them while a lease is out).
"""
import asyncio
import logging
import time

log = logging.getLogger("securifile.quorum")


class Quorum:
    def __init__(self, peers, cluster_size, window, witness=None, clock=time.monotonic,
                 on_change=None):
        self.peers = peers
        self.size = cluster_size
        self.window = window
        self.witness = witness  # async (side: list of names) -> lease seconds, or None
        self.clock = clock
        self.on_change = on_change or (lambda has, detail: None)
        self._last_ack = {}
        self._witness_side = None
        self._witness_until = 0.0
        self._state = self.size == 1
        self.ever = self._state  # had quorum at least once since start
        self._asking = None
        self._since = clock()  # when this node began counting its peers' answers

    def heard(self, name, sent=None):
        """``name`` answered a heartbeat (after its records were pulled). ``sent``: when that
        heartbeat went out (this clock), which is all an answer vouches for: an answer to a
        beat sent before this process stood still (SIGSTOP, a stalled host) arrives after
        it, and must not count as fresh.

        A loss of the majority that nobody asked about yet (the process stood still longer
        than the window) is noticed first: the node is cut off, and becomes verifying,
        before the peers' new answers make a majority again. Those peers marked it down
        meanwhile and wrote without it; verified again, it serves only once they count it.
        """
        self._note(*self._decide())
        self._last_ack[name] = self.clock() if sent is None else sent

    def lost(self, name):
        """``name`` was seen down: it no longer counts, whatever its last answer."""
        self._last_ack.pop(name, None)

    def reachable(self):
        now = self.clock()
        members = set(self.peers.names)  # a server taken out of the cluster votes no more
        near = [n for n, t in self._last_ack.items() if now - t <= self.window and n in members]
        return sorted([self.peers.self_name, *near])

    def _decide(self):
        side = self.reachable()
        if 2 * len(side) > self.size:
            return True, f"{len(side)} of {self.size} servers reachable"
        if 2 * len(side) == self.size and self._witness_side == side \
                and self.clock() < self._witness_until:
            return True, f"{len(side)} of {self.size} servers reachable, with the witness"
        return False, f"only {len(side)} of {self.size} servers reachable ({', '.join(side)})"

    def has(self):
        """True while this node may serve and coordinate writes."""
        has, detail = self._decide()
        if not has and self._may_ask() and self._asking is None:
            # Just tied (a peer went silent): ask now rather than at the next round.
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # called outside the event loop: the next round asks
                loop = None
            if loop is not None:
                self._asking = loop.create_task(self.refresh())
                self._asking.add_done_callback(self._asked)
        self._note(has, detail)
        return has

    def _asked(self, _task):
        self._asking = None

    def detail(self):
        return self._decide()[1]

    def enough(self, count):
        """Whether ``count`` servers (this one among them) are a majority for a lock or a
        record: more than half, or exactly half while this side holds the witness's grant."""
        if 2 * count > self.size:
            return True
        return 2 * count == self.size and self.has() and self.tied()

    def tied(self):
        return 2 * len(self.reachable()) == self.size

    def _may_ask(self):
        """Tied once every peer has had a window to answer (see the module's docstring)."""
        return (self.witness is not None and self.tied()
                and self.clock() - self._since >= self.window)

    def _note(self, has, detail):
        if has != self._state:
            self._state = has
            log.warning("quorum %s: %s", "reached" if has else "LOST", detail)
            if has:
                self.ever = True
            self.on_change(has, detail)

    async def refresh(self):
        """Once per heartbeat round: ask the witness when exactly half are reachable."""
        if self._may_ask():
            side = self.reachable()
            asked = self.clock()
            try:
                lease = await self.witness(side)
            except Exception as e:  # the witness unreachable: what was granted runs out
                log.debug("witness did not answer: %s", e)
                lease = None
            if lease == 0:  # refused: another side holds it
                self._witness_side = None
            elif lease:
                # Counted from before the question, and shortened, so this side stops
                # before the witness could grant the other side.
                self._witness_side, self._witness_until = side, asked + lease * 0.8
        self._note(*self._decide())
