"""What one node believes about itself and the others, from heartbeats and challenges.

A peer is running, down (missed ``misses_allowed`` heartbeats in a row), verifying (it
answered again and this node's challenge of its copies is under way) or failed (the
challenge found a bad copy, or did not complete). Heartbeats go on to down and failed
peers; a failed peer stays failed until it has been down (taken offline) and comes back.

A node is itself verifying when it starts with files on disk, or is put back online, until
every peer it can reach has passed it; one failing verdict makes it failed. Only a running
node serves users.
"""
import logging
import time

RUNNING, DOWN, VERIFYING, FAILED, OFFLINE = "running", "down", "verifying", "failed", "offline"
log = logging.getLogger("securifile.peers")


class PeerTable:
    def __init__(self, self_name, peer_names, misses_allowed=3, clock=time.time, on_change=None,
                 self_status=RUNNING):
        self.self_name = self_name
        self.misses_allowed = misses_allowed
        self.clock = clock
        self.on_change = on_change or (lambda name, old, new, detail="": None)
        now = clock()
        # Until a peer answers, it is assumed running: a fresh cluster starts together and a
        # wrong guess costs one failed redirect, which the client retries elsewhere.
        self._peers = {n: {"status": RUNNING, "misses": 0, "since": now, "seq": 0, "boot": None,
                           "checked_boot": None}
                       for n in peer_names if n != self_name}
        self.self_status = self_status
        self.self_since = now
        self.verdicts = {}  # challenger -> True (passed) / False (failed), for this return

    @property
    def names(self):
        return list(self._peers)

    def status(self, name):
        if name == self.self_name:
            return self.self_status
        return self._peers[name]["status"] if name in self._peers else DOWN

    def since(self, name):
        return self.self_since if name == self.self_name else self._peers[name]["since"]

    def is_running(self, name):
        return self.status(name) == RUNNING

    def running_peers(self):
        return [n for n, p in self._peers.items() if p["status"] == RUNNING]

    def _set(self, name, status, detail=""):
        p = self._peers[name]
        if p["status"] != status:
            old, p["status"], p["since"] = p["status"], status, self.clock()
            log.warning("peer %s: %s -> %s %s", name, old, status, detail)
            self.on_change(name, old, status, detail)
            self._reconsider_self()

    # -- heartbeats ------------------------------------------------------------------------

    def record_ack(self, name, seq=0, boot=None, status=RUNNING):
        """A heartbeat answered. True when this node should now challenge the peer."""
        p = self._peers[name]
        p["misses"] = 0
        p["seq"] = seq
        restarted = boot is not None and p["boot"] is not None and boot != p["boot"]
        if boot is not None:
            p["boot"] = boot
        if p["status"] == FAILED and not restarted:
            return False  # heartbeats go on; only a return from down re-opens the question
        if p["status"] == VERIFYING:
            return False  # a challenge is under way
        returning = p["status"] == DOWN or restarted or (
            status == VERIFYING and p["checked_boot"] != p["boot"])
        if returning:
            self._set(name, VERIFYING, "answered again: challenging its copies")
            return True
        if p["status"] != RUNNING:
            self._set(name, RUNNING)
        return False

    def record_miss(self, name):
        p = self._peers[name]
        p["misses"] += 1
        if p["misses"] >= self.misses_allowed:
            self._set(name, DOWN, f"{p['misses']} heartbeats missed")

    # -- challenges ------------------------------------------------------------------------

    def challenge_done(self, name, passed, detail=""):
        """This node's challenge of ``name`` ended: running if passed, failed otherwise."""
        p = self._peers[name]
        p["checked_boot"] = p["boot"]
        if p["status"] == VERIFYING:
            self._set(name, RUNNING if passed else FAILED, detail)

    def receive_verdict(self, challenger, passed, detail=""):
        """A peer's verdict on this node's copies."""
        if challenger not in self._peers:
            return
        self.verdicts[challenger] = passed
        log.warning("verdict from %s: %s %s", challenger, "passed" if passed else "FAILED", detail)
        self._reconsider_self(detail)

    def _reconsider_self(self, detail=""):
        if self.self_status != VERIFYING:
            return
        if any(v is False for v in self.verdicts.values()):
            self.set_self(FAILED, detail or "a challenge failed")
            return
        judges = [n for n, p in self._peers.items() if p["status"] not in (DOWN, FAILED)]
        if judges and all(self.verdicts.get(n) for n in judges):
            self.set_self(RUNNING, "every reachable peer passed this node's copies")

    def set_self(self, status, detail=""):
        if status == self.self_status:
            return
        old, self.self_status, self.self_since = self.self_status, status, self.clock()
        if status == VERIFYING:
            self.verdicts = {}
        log.warning("this node (%s): %s -> %s %s", self.self_name, old, status, detail)
        self.on_change(self.self_name, old, status, detail)
        self._reconsider_self()

    def snapshot(self):
        return [{"name": n, "status": p["status"], "since": p["since"]} for n, p in self._peers.items()]
