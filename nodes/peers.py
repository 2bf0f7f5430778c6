"""What one node believes about itself and the others, from heartbeats and challenges.

A peer is running, down (missed ``misses_allowed`` heartbeats in a row), verifying (it
answered again and this node's challenge of its copies is under way) or failed (the
challenge found a bad copy, or timed out while the peer still answered heartbeats).
Heartbeats go on to down and failed peers; a failed peer stays failed until it has been
down (taken offline) and comes back. A challenge with no verdict yet (the peer claims
versions this node has not caught up with) leaves the peer verifying and is asked again at
a later heartbeat; one broken off because the peer became unreachable counts it down, so it
is challenged again when it answers: a partition never leaves a server failed.

A node is itself verifying when it starts with files on disk, or is put back online, until
every peer it can reach has passed it; one failing verdict makes it failed. Only a running
node serves users.
"""
import logging
import time

from securifile.common.errors import Forbidden

from .observed import observed

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
                           "round": 0, "checked": None, "self": RUNNING,
                           "ask_again": False}
                       for n in peer_names if n != self_name}
        self.self_status = self_status
        self.self_since = now
        self.verdicts = {}  # challenger -> True (passed) / False (failed), for this return
        self._verdict_at = {}  # challenger -> when its verdict of this return came
        self.round = 0  # goes up each time this node starts being verified again
        self.listeners = {}  # method name -> calls to make after it (see observed.py)
        # challenger -> (time of its last challenge, copies held with it it asked about),
        # until its verdict: a verdict comes only from a peer that challenged lately.
        self._challenged = {}
        self.verdict_window = 600.0

    @property
    def names(self):
        return list(self._peers)

    def add_peer(self, name):
        """A server added to the cluster: down until it answers, then challenged like any
        returning server before it counts as running."""
        if name == self.self_name or name in self._peers:
            return
        self._peers[name] = {"status": DOWN, "misses": self.misses_allowed, "since": self.clock(),
                             "seq": 0, "boot": None, "round": 0, "checked": None,
                             "self": DOWN, "ask_again": False}
        log.warning("peer %s: added to the cluster", name)

    def remove_peer(self, name):
        """A server taken out of the cluster: no longer watched, judged or counted."""
        if self._peers.pop(name, None) is not None:
            self.verdicts.pop(name, None)
            log.warning("peer %s: removed from the cluster", name)
            self._reconsider_self()

    def status(self, name):
        if name == self.self_name:
            return self.self_status
        return self._peers[name]["status"] if name in self._peers else DOWN

    def since(self, name):
        return self.self_since if name == self.self_name else self._peers[name]["since"]

    def is_running(self, name):
        """Running in this node's view, and by the peer's own word (a peer that another node
        failed, or that is still being verified by others, serves nobody)."""
        if name == self.self_name:
            return self.self_status == RUNNING
        p = self._peers.get(name)
        return p is not None and p["status"] == RUNNING and p["self"] == RUNNING

    def counted_out(self, name):
        """Down after having answered this node at least once (since it started)."""
        p = self._peers.get(name)
        return p is not None and p["status"] == DOWN and p["boot"] is not None

    def last_heard(self, name):
        """The boot and verification round ``name`` answered with last."""
        p = self._peers[name]
        return {"boot": p["boot"], "round": p["round"]}

    def coming_back(self, name):
        """Being verified, in this node's view or by its own word: it may serve in a moment."""
        p = self._peers.get(name)
        return p is not None and VERIFYING in (p["status"], p["self"]) and p["status"] != FAILED

    def doubted(self, window):
        """Peers that may be writing without this node: seen down, or a heartbeat to them
        missed within the last ``window`` seconds (a peer this node cannot hear may hear
        the others, and they count this node down as it counts that peer). Not a peer seen
        down that every voter has promised to refuse (``nodes/refusals.py``): it cannot
        reach a majority."""
        now = self.clock()
        voters = [p for p in self._peers.values() if p["status"] != DOWN]

        def refused(name):
            return voters and all(v.get("promised", {}).get(name, float("-inf")) > now
                                  for v in voters)

        return {n for n, p in self._peers.items()
                if (p["status"] == DOWN or now - p.get("missed", float("-inf")) < window
                    or now - p.get("refused", float("-inf")) < window)
                and not (p["status"] == DOWN and refused(n))}

    def records_refused(self, name):
        """This node refused records ``name`` pushed (a lock of another writer held here):
        it lacks what ``name`` published, which a majority may have acknowledged, until a
        pull brings it. Doubted meanwhile, as after a missed beat: reads ask the peers."""
        p = self._peers.get(name)
        if p is not None:
            p["refused"] = self.clock()

    def note_promise(self, name, refusing, sent):
        """``name`` answered a beat sent at ``sent`` (its records pulled since) promising to
        refuse the peers ``refusing`` names for its lease (``Refusals.promise``)."""
        p = self._peers.get(name)
        if p is None:
            return
        try:
            until = sent + float(refusing["for"]) if refusing else 0.0
            p["promised"] = {str(n): until for n in refusing["peers"]} if refusing else {}
        except (TypeError, ValueError, KeyError):
            log.warning("peer %s: a malformed promise ignored: %r", name, refusing)
            p["promised"] = {}

    def running_peers(self):
        return [n for n in self._peers if self.is_running(n)]

    def _set(self, name, status, detail=""):
        p = self._peers[name]
        if p["status"] != status:
            old, p["status"], p["since"] = p["status"], status, self.clock()
            log.warning("peer %s: %s -> %s %s", name, old, status, detail)
            self.on_change(name, old, status, detail)
            self._reconsider_self()

    # -- heartbeats ------------------------------------------------------------------------

    def record_ack(self, name, seq=0, boot=None, status=RUNNING, round_=0, sent=None):
        """A heartbeat answered (``sent``: when, on this table's clock; the peer's new records
        are pulled by now). True when this node should now challenge the peer.

        A peer is challenged when it answers after being down, when it restarted (a new boot
        id), or when it says it is being verified in a round this node has not checked yet
        (it was put back online, possibly too quickly to be seen down).
        """
        p = self._peers.get(name)
        if p is None:  # taken out of the cluster while the heartbeat was in flight
            return False
        p["misses"] = 0
        p["seq"] = seq
        p["self"] = status
        p["answered"] = self.clock() if sent is None else sent
        challenge = self._ack(p, name, boot, status, round_)
        self._reconsider_self()  # a verdict counts once an answer after it is in
        return challenge

    def _ack(self, p, name, boot, status, round_):
        """What an answer changes in this node's view of the peer; True to challenge it."""
        restarted = boot is not None and p["boot"] is not None and boot != p["boot"]
        if boot is not None:
            p["boot"] = boot
        p["round"] = round_
        if p["status"] == VERIFYING:
            # A challenge is under way, unless the last one ended with no verdict.
            ask_again, p["ask_again"] = p["ask_again"], False
            return ask_again
        new_round = status == VERIFYING and p["checked"] != (p["boot"], p["round"])
        if p["status"] == DOWN or restarted or new_round:
            self._set(name, VERIFYING, "answered again: challenging its copies")
            return True
        if p["status"] == RUNNING:
            return False
        if p["status"] != FAILED:
            self._set(name, RUNNING)
        return False  # failed: heartbeats go on; only a return re-opens the question

    def record_alive(self, name):
        """A heartbeat answered while its records are still being pulled: the misses count
        from zero again; the rest waits for the answer the pull belongs to."""
        p = self._peers.get(name)
        if p is not None:
            p["misses"] = 0

    @observed
    def record_miss(self, name, sent=None):
        """A heartbeat not answered (``sent``: when, on this table's clock)."""
        p = self._peers.get(name)
        if p is None:
            return
        p["misses"] += 1
        p["missed"] = self.clock() if sent is None else sent
        if p["misses"] >= self.misses_allowed:
            self._set(name, DOWN, f"{p['misses']} heartbeats missed")
        self._reconsider_self()  # a peer seen down counts out once a beat after it missed

    # -- challenges ------------------------------------------------------------------------

    @observed
    def challenge_done(self, name, passed, detail=""):
        """This node's challenge of ``name`` ended: running if passed, failed otherwise."""
        p = self._peers[name]
        p["checked"] = (p["boot"], p["round"])
        p["ask_again"] = False
        if p["status"] == VERIFYING:
            self._set(name, RUNNING if passed else FAILED, detail)

    def verdict_lost(self, name):
        """The verdict on ``name`` did not reach it (a link broken just then): while it still
        says it is being verified, its next answer starts another challenge. It heard no
        verdict, and would wait for this node's for ever."""
        p = self._peers.get(name)
        if p is not None:
            p["checked"] = None

    @observed
    def challenge_undecided(self, name, detail=""):
        """No verdict yet: ``name`` stays verifying, and its next heartbeat starts another."""
        p = self._peers[name]
        if p["status"] == VERIFYING:
            p["ask_again"] = True
            log.warning("challenge of %s: no verdict yet, asked again later %s", name, detail)

    @observed
    def challenge_abandoned(self, name, detail=""):
        """The peer became unreachable during the challenge: down, challenged when it answers."""
        p = self._peers[name]
        p["ask_again"] = False
        if p["status"] == VERIFYING:
            p["misses"] = max(p["misses"], self.misses_allowed)
            self._set(name, DOWN, detail)

    def note_challenge(self, challenger, co_held):
        """``challenger`` challenged this node's copies, ``co_held`` of them held with it."""
        if challenger in self._peers:
            seen = self._challenged.get(challenger, (0.0, 0))
            self._challenged[challenger] = (self.clock(), seen[1] + co_held)

    @observed
    def receive_verdict(self, challenger, passed, detail=""):
        """A peer's verdict on this node's copies: only from a peer that challenged it lately
        (``verdict_window``), and a failing one only about copies held with it (Forbidden
        otherwise): a node cannot fail a peer it has no copy in common with, nor pass one it
        never checked."""
        at, co_held = self._challenged.pop(challenger, (None, 0))
        if at is None or self.clock() - at > self.verdict_window:
            raise Forbidden(f"{challenger} sent a verdict without challenging this node",
                            code="unsolicited_verdict")
        if not passed and not co_held:
            raise Forbidden(f"{challenger} failed this node without a copy in common",
                            code="unsolicited_verdict")
        self.verdicts[challenger] = passed
        self._verdict_at[challenger] = self.clock()
        log.warning("verdict from %s: %s %s", challenger, "passed" if passed else "FAILED", detail)
        if not passed and self.self_status == RUNNING:
            # A verdict that comes in after the others passed this node (its challenger was
            # slow or unreachable for a moment) still counts: a bad copy must not be served.
            self.set_self(FAILED, detail or "a challenge failed")
            return
        self._reconsider_self(detail)

    def _reconsider_self(self, detail=""):
        if self.self_status != VERIFYING:
            return
        if any(v is False for v in self.verdicts.values()):
            self.set_self(FAILED, detail or "a challenge failed")
            return
        judges = [n for n, p in self._peers.items() if p["status"] not in (DOWN, FAILED)]
        if not judges or not all(self.verdicts.get(n) for n in judges):
            return
        # A judge may have written without this node until just before it judged: its
        # verdict counts once it has answered a beat sent after it (its records pulled).
        if any(self._peers[n].get("answered", -1.0) <= self._verdict_at[n] for n in judges):
            return
        # A peer seen down may be back already (a partition just healed) and still writing
        # without this node: it counts as unable to judge once a beat sent after the last
        # verdict has gone unanswered. (Seen from a nemesis run: a node ran on one peer's
        # verdict while the other, reachable again, wrote a file it then answered 404 for.)
        last = max(self._verdict_at[n] for n in judges)
        if any(p["status"] == DOWN and p.get("missed", -1.0) <= last
               for p in self._peers.values()):
            return
        self.set_self(RUNNING, "every reachable peer passed this node's copies")

    def set_self(self, status, detail=""):
        if status == self.self_status:
            return
        old, self.self_status, self.self_since = self.self_status, status, self.clock()
        if status == VERIFYING:
            self.verdicts, self._verdict_at = {}, {}
            self.round += 1
        log.warning("this node (%s): %s -> %s %s", self.self_name, old, status, detail)
        self.on_change(self.self_name, old, status, detail)
        self._reconsider_self()

    def snapshot(self):
        return [{"name": n, "status": p["status"], "since": p["since"]} for n, p in self._peers.items()]
