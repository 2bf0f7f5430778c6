"""What peers ask of this node: locks, records, copies, heartbeats, challenges.

A peer this node counts down, or promised lately to refuse, gets 503 ``counted_down`` for
its locks and records (``nodes/refusals.py``): the other nodes may be relying on that
promise to read without asking. Its copies are taken (a copy without a record is an orphan
the repair loop removes).

A mixin of ``StorageNode``, which provides ``name``, ``store``, ``locations``, ``locks``,
``peers``, ``refusals``, ``counter``, ``pushed``, ``pulled_by``, ``membership``,
``quorum``, ``boot``, ``on_pushed``, ``record_copy`` and ``_drop_local``.
"""
import asyncio
from functools import partial

from securifile.common.digests import ALGORITHMS
from securifile.common.errors import ApiError, Forbidden, Unavailable
from securifile.common.paths import FilePath

from . import peer_ops
from .challenge import answer_challenge
from .locationmap import Location
from .observed import observed
from .peers import DOWN, OFFLINE, RUNNING, VERIFYING
from .quarantine import write_under_way

DIRECT_COPY = 16 << 20  # a replica's copy this big bypasses the page cache


class PeerRequests:
    """The answers to peers' calls (mixed into StorageNode)."""

    def grant_lock(self, fp, holder, node, token, lease, known, stamp=None):
        """A peer asks for ``fp``'s lock: the answer carries the stamp reserved here, and this
        node's record when it is newer than what the asker knows."""
        self.refusals.check(node, "locks")
        self.locks.acquire(fp, holder, node, token, lease)
        loc = self.locations.get(fp, include_deleted=True)
        own = loc.stamp if loc else 0
        if stamp is not None:
            self.locks.raise_reservation(fp, stamp)
            reserved = stamp
        else:
            reserved = self.locks.reserve(fp, max(known, own))
        answer = {"ok": True, "stamp": reserved}
        if loc is not None and own > known:
            answer["record"] = loc.to_json()
        return answer

    def receive_locations(self, sender, records, release=(), seq=None, numbered=None):
        """Records a peer pushed: each must be one ``sender`` coordinated (a node publishes
        only its own changes), and not while another node holds the file's lock here; each
        lock to give back must be one it holds. Forbidden, and nothing applied, otherwise.
        ``seq``: (before, after), the sender's map sequence around these records;
        ``numbered``: (before, after), the sender's own numbers of them (``OwnCounter``).

        A node that did not grant the lock (it was stopped or cut off during the lock round)
        still takes its coordinator's record: refusing it would leave this node answering
        404 for an acknowledged file until its next pull, and a pull from the same sender
        is trusted no more than its push. Unless this node counts the sender down, or
        promised lately to refuse it (``refusals``): the write is then acknowledged only
        by others, which this node does not count on (it doubts the sender). Refused for
        another writer's lock held here, the records may still be acknowledged by a
        majority: this node doubts the sender until its pulls have brought them."""
        self.refusals.check(sender, "records")
        try:
            locs = [Location.from_json(rec) for rec in records]
            fps = [FilePath(item["owner"], item["path"]) for item in release or ()]
        except (TypeError, KeyError, ValueError, AttributeError) as e:
            raise ApiError(f"malformed location record: {e}", code="bad_record") from None
        forged = [loc.file_path.full for loc in locs if loc.coordinator != sender
                  or ((lock := self.locks.held(loc.file_path)) is not None
                      and lock.node != sender)]
        if forged:
            self.peers.records_refused(sender)
            raise Forbidden(f"{sender} pushed records it did not coordinate: "
                            f"{', '.join(forged[:5])}", code="not_the_coordinator")
        foreign = [fp.full for fp in fps
                   if (lock := self.locks.held(fp)) is not None and lock.node != sender]
        if foreign:
            self.peers.records_refused(sender)
            raise Forbidden(f"{sender} does not hold the locks on {', '.join(foreign[:5])}",
                            code="not_the_coordinator")
        if numbered is not None:  # the sender numbered them in order (nodes/pushed.py)
            records = [{**rec, "cseq": numbered[0] + i} for i, rec in enumerate(records, 1)]
        self.apply_locations(records, release)
        if seq is not None:
            self.on_pushed(sender, *seq)
        if numbered is not None:
            self.pushed.pushed(sender, *numbered)

    def check_copy_sender(self, fp, sender):
        """Only the node coordinating a change of ``fp`` (it holds the file's lock here) or a
        current holder of ``fp`` (repairing a copy) sends or withdraws a copy of it."""
        lock = self.locks.held(fp)
        if lock is not None and lock.node == sender:
            return
        loc = self.locations.get(fp)
        if loc is not None and sender in loc.current_holders:
            return
        raise Forbidden(f"{sender} neither coordinates a change of {fp.full} nor holds it",
                        code="not_a_holder")

    def apply_locations(self, records, release=()):
        """Apply records from a peer; drop local copies that a newer record no longer names;
        then give back the locks ``release`` names (the change they guarded is done)."""
        for rec in records:
            loc = Location.from_json(rec)
            if not self.locations.apply(loc):
                continue
            fp = loc.file_path
            held = self.locations.copy_version(fp)
            if held is not None and (loc.deleted or self.name not in loc.holders) and held <= loc.version:
                self._drop_local(fp)
        for item in release or ():
            self.locks.release(FilePath(item["owner"], item["path"]), item["token"])

    def accept_copy(self, fp, version, digest, size, sums=None):
        self.record_copy(fp, version, digest, size, sums)

    def receive_copy_record(self, sender, fp, version, digest, publish):
        """The record sent with the copy just stored (``finish_small_upload``): applied, and
        the sender's lock given back, as a push of it would be. It must name this copy as
        current (its file, version and digest); else nothing is applied (ApiError) and the
        copy waits for a record like any other (the repair loop removes it if none comes)."""
        try:
            record, token = publish["record"], str(publish["token"])
            loc = Location.from_json(record)
            seq, numbered = peer_ops.span(publish, "seq"), peer_ops.span(publish, "numbered")
        except (TypeError, KeyError, ValueError, AttributeError, IndexError) as e:
            raise ApiError(f"malformed record sent with a copy: {e!r}", code="bad_record") from None
        if (loc.file_path != fp or loc.version != version or loc.digest != digest
                or loc.deleted or self.name not in loc.current_holders):
            raise ApiError("the record sent with a copy must name that copy as current",
                           code="bad_record")
        self.receive_locations(sender, [record], [{"owner": fp.owner, "path": fp.rel,
                                                   "token": token}], seq, numbered)

    def delete_copy(self, fp, version):
        held = self.locations.copy_version(fp)
        if held is not None and held < version:
            self._drop_local(fp)

    def begin_copy(self, fp, algorithm, sender, length=None):
        """The DiskWriter for a replica copy arriving from peer ``sender`` (``length``:
        announced); Forbidden when the sender has no part in the file."""
        if algorithm not in ALGORITHMS:
            raise ApiError(f"unknown digest algorithm {algorithm}", code="unsupported_digest")
        if length is not None:
            self.store.check_room(length)
        self.check_copy_sender(fp, sender)
        # A big copy is written around the page cache (``diskfile._open_direct``): the
        # origin serves reads, so a replica's copy is seldom read soon.
        direct = length is not None and length >= DIRECT_COPY
        return self.store.writer(fp, algorithm, direct)

    def give_back_lock(self, fp, token):
        """A coordinator is done with (or gave up) the lock it took here."""
        self.locks.release(fp, token)

    @observed
    def changes_since(self, since, limit, known=None):
        """Records changed here after sequence number ``since``, for a peer catching up
        (``known``: what it was pushed, sent as sequence numbers alone); ``own``: this run's
        numbers, every one of whose records a complete pull has brought."""
        return {"records": self.locations.changes_since(since, limit, known),
                "seq": self.locations.seq, "limit": limit, "own": list(self.counter.span())}

    def heartbeat_answer(self, caller, pulled, counted_down=None):
        """This node's state for ``caller``'s heartbeat; ``pulled``: the last of this node's
        sequence numbers it has applied (tombstones every peer has are purged);
        ``counted_down``: the caller, with the majority, counts this node down since it
        answered with that boot and round."""
        if self.peers.self_status == OFFLINE:
            raise Unavailable(f"{self.name} is offline", code="server_offline")
        if self.quorum is not None:
            # A node back from a hang learns it was cut off before it answers as running.
            self.quorum.has()
        if (counted_down and caller in self.urls and caller != self.name
                and self.peers.self_status == RUNNING
                and counted_down.get("boot") == self.boot
                and counted_down.get("round") == self.peers.round):
            # Its peers can count it down before its own window runs out (a hang shorter
            # than the window): they wrote without it all the same. Not when it has been
            # verified since (a later round: it knew it was cut off, and was passed), or
            # has restarted since (a new boot: its peers challenge it for that).
            self.peers.set_self(VERIFYING, f"cut off from the majority ({caller} counted it down)")
        if caller in self.urls:
            self.pulled_by[caller] = int(pulled)
        answer = {"name": self.name, "status": self.peers.self_status,
                  "seq": self.locations.seq, "boot": self.boot, "round": self.peers.round}
        if caller in self.urls:
            refusing = self.refusals.promise([p for p in self.peers.names
                                              if p != caller and self.peers.status(p) == DOWN])
            if refusing:
                answer["refusing"] = refusing
        if self.membership is not None:  # gossip: peers adopt a newer list from it
            answer["membership"] = self.membership.as_json()
        return answer

    async def answer_challenge(self, challenge, deep, challenger):
        """A peer checks this node's copies: answered from the disk, in a thread (it may
        take long). ChallengeRefused for a challenge it may not make."""
        # What entitles the challenger to a verdict: a challenge, and a failing one only
        # about copies this node holds with it (noted before the disk is read, so that a
        # challenge that times out still lets it fail this node).
        return await asyncio.to_thread(answer_challenge, self.store, self.locations, challenge,
                                       deep, challenger, self.peers.note_challenge,
                                       partial(write_under_way, self))

    def receive_verdict(self, challenger, passed, detail, hold=0.0):
        """A peer's verdict on this node's copies; this node's status after it. ``hold``:
        the challenger refuses this node's locks and records that much longer (it promised
        to, ``nodes/refusals.py``): writes this node would coordinate wait for it."""
        self.peers.receive_verdict(challenger, passed, detail)
        if passed and hold > 0:
            self.refusals.hold_writes(hold)
        return self.peers.self_status
