"""What one node believes about the others: running or down, from heartbeat acks and misses."""
import logging
import time

RUNNING, DOWN = "running", "down"


class PeerTable:
    """Heartbeat bookkeeping for every peer: consecutive misses turn running into down."""

    def __init__(self, self_name, peer_names, misses_allowed=3, clock=time.time, on_change=None):
        self.self_name = self_name
        self.misses_allowed = misses_allowed
        self.clock = clock
        self.on_change = on_change or (lambda name, old, new, detail="": None)
        now = clock()
        # Until a peer answers, it is assumed running: a fresh cluster starts together and a
        # wrong guess costs one failed redirect, which the client retries elsewhere.
        self._peers = {n: {"status": RUNNING, "misses": 0, "since": now, "seq": 0}
                       for n in peer_names if n != self_name}
        self.self_status = RUNNING

    @property
    def names(self):
        return list(self._peers)

    def status(self, name):
        if name == self.self_name:
            return self.self_status
        return self._peers[name]["status"] if name in self._peers else DOWN

    def since(self, name):
        return self._peers[name]["since"]

    def is_running(self, name):
        return self.status(name) == RUNNING

    def running_peers(self):
        return [n for n, p in self._peers.items() if p["status"] == RUNNING]

    def _set(self, name, status):
        p = self._peers[name]
        if p["status"] != status:
            old, p["status"], p["since"] = p["status"], status, self.clock()
            logging.getLogger("securifile.peers").warning("peer %s: %s -> %s", name, old, status)
            self.on_change(name, old, status)

    def record_ack(self, name, seq=0):
        p = self._peers[name]
        p["misses"] = 0
        p["seq"] = seq
        self._set(name, RUNNING)

    def record_miss(self, name):
        p = self._peers[name]
        p["misses"] += 1
        if p["misses"] >= self.misses_allowed:
            self._set(name, DOWN)

    def snapshot(self):
        return [{"name": n, "status": p["status"], "since": p["since"]} for n, p in self._peers.items()]
