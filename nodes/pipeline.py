"""Pipelined replication: an upload's bytes go on to its replicas while they still arrive.

The origin writes each piece of the body locally and puts it, batched, on one bounded queue
per replica (a fan-out, as Swift and MinIO do), each drained by a streamed PUT over the kept
connection to that replica. A full queue makes the origin wait before it reads more of the
client's body, so the slowest holder sets the pace and memory stays flat (``DEPTH`` batches
of ``BATCH`` bytes per upload, shared by its replicas).

Why a fan-out and not HDFS's chain (origin -> p1 -> p2): the chain saves the origin one
encryption but makes p1 decrypt, re-encrypt and relay every byte, and it needs a relaying
handler whose failure cuts off every replica after it. Built and measured on two cores, it
cost more CPU in all and gave the same rate (docs/PERFORMANCE.md, "Chain against fan-out").

No replica can commit before the origin: the last piece of the body is held back until the
origin has committed its own copy (and still holds the lock), and a replica commits only a
body of the announced length. A client that breaks off, or an origin that fails or dies,
leaves every replica with a cut body, which it throws away. Each replica answers the digest
of what it received; only those whose digest equals the origin's count as holders. A
replica that fails or stalls longer than ``stall`` seconds is dropped (its connection
closed) and the upload goes on without it.
"""
import asyncio
import logging

from .peerclient import PeerError

log = logging.getLogger("securifile.pipeline")

BATCH = 256 * 1024
DEPTH = 4


class ReplicaStream:
    """One replica's copy in flight: a bounded queue drained by a streamed PUT."""

    def __init__(self, client, name, base, fp, loc, size):
        self.name = name
        self.queue = asyncio.Queue(DEPTH)
        self.dropped = None  # why, once dropped
        self.task = asyncio.ensure_future(client.stream_copy(base, fp, loc, size, self._body()))
        self.task.add_done_callback(_consume)

    async def _body(self):
        while (chunk := await self.queue.get()) is not None:
            yield chunk

    async def send(self, chunk, stall):
        """Queue ``chunk`` (None ends the body), waiting at most ``stall`` seconds for room."""
        if self.dropped:
            return
        if self.task.done():
            return self.drop(f"it broke off the copy: {_outcome(self.task)}")
        try:
            self.queue.put_nowait(chunk)
            return
        except asyncio.QueueFull:
            pass
        put = asyncio.ensure_future(self.queue.put(chunk))
        done, _ = await asyncio.wait({put, self.task}, timeout=stall,
                                     return_when=asyncio.FIRST_COMPLETED)
        if put in done:
            return
        put.cancel()
        if self.task.done():
            self.drop(f"it broke off the copy: {_outcome(self.task)}")
        else:
            self.drop(f"it took no bytes for {stall:.1f} s")

    async def answer(self, timeout):
        """The replica's answer once the whole body went; None if it failed (dropped)."""
        if self.dropped:
            return None
        try:
            return await asyncio.wait_for(asyncio.shield(self.task), timeout)
        except asyncio.TimeoutError:
            self.drop(f"no answer within {timeout:.1f} s of the body's end")
        except PeerError as e:
            self.drop(str(e))
        return None

    def drop(self, why):
        if self.dropped is None:
            self.dropped = why
            self.task.cancel()  # closes the connection: the replica throws its temp file away


def _consume(task):
    if not task.cancelled():
        task.exception()  # retrieved here; reported where it matters


def _outcome(task):
    if task.cancelled():
        return "cancelled"
    return task.exception() or "answered early"


class Pipeline:
    """The body of one upload, sent on to ``targets`` while it arrives."""

    def __init__(self, client, urls, fp, loc, size, targets, stall, active=None):
        self.fp = fp
        self.size = size
        self.stall = stall
        self.streams = {slot: ReplicaStream(client, t, urls[t], fp, loc, size)
                        for slot, t in enumerate(targets)}
        self._pending = []
        self._pending_bytes = 0
        self._sent = 0
        self._active = active if active is not None else set()  # the node's live pipelines
        self._active.add(self)

    def drop_peer(self, name, why):
        for s in self.streams.values():
            if s.name == name and not s.dropped:
                log.warning("replica %s of %s dropped mid-stream: %s", name, self.fp, why)
                s.drop(why)

    def feed(self, chunk):
        """Take the next piece of the body; an awaitable when it must wait for the replicas
        (the caller awaits it before reading more: the back-pressure), else None."""
        self._pending.append(chunk)
        self._pending_bytes += len(chunk)
        if self._pending_bytes >= BATCH and self._sent + self._pending_bytes < self.size:
            return self._flush()  # never the last byte: that waits for the origin's commit
        return None

    async def _flush(self):
        batch = b"".join(self._pending) if len(self._pending) > 1 else self._pending[0]
        self._pending, self._pending_bytes = [], 0
        self._sent += len(batch)
        live = [s for s in self.streams.values() if not s.dropped]
        await asyncio.gather(*(s.send(batch, self.stall) for s in live))
        for s in live:
            if s.dropped:
                log.warning("replica %s of %s dropped mid-stream: %s", s.name, self.fp, s.dropped)

    async def finish(self, digest, answer_timeout):
        """Send the rest (the origin has committed), end the bodies; {slot: name} of the
        replicas that stored the whole body with the origin's ``digest``."""
        if self._pending:
            await self._flush()
        live = [s for s in self.streams.values() if not s.dropped]
        await asyncio.gather(*(s.send(None, self.stall) for s in live))
        answers = await asyncio.gather(*(s.answer(answer_timeout)
                                         for s in self.streams.values()))
        self._active.discard(self)
        confirmed = {}
        for (slot, s), answer in zip(self.streams.items(), answers):
            if answer is None:
                log.warning("replica %s of %s failed: %s", s.name, self.fp, s.dropped)
            elif answer.get("digest") != digest or answer.get("size") != self.size:
                log.warning("replica %s of %s stored digest %s (%s bytes), not %s: dropped",
                            s.name, self.fp, answer.get("digest"), answer.get("size"), digest)
            else:
                confirmed[slot] = s.name
        return confirmed

    def abort(self):
        """The upload failed or broke off: every replica sees its body cut."""
        self._active.discard(self)
        for s in self.streams.values():
            s.drop("the upload was aborted")
