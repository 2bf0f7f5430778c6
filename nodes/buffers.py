"""Reused buffers for the bytes a node streams to and from disk.

Why reused: a fresh object of about a MiB per MiB moved (the pieces of a body joined before
a write, a chunk read for a download) fragments glibc's heap at full speed. Once a freed
block of 1 MiB has raised glibc's dynamic mmap threshold, such blocks come from the heap,
and blocks of slightly different sizes freed and taken in turn leave holes that are never
given back. A node moving a 2 GiB file at 130 MB/s peaked 25-30 MiB above its resting
size while Python held 3-6 MiB of buffers at any moment (tracemalloc), and replaying that
allocation pattern alone grew a process by 15 MiB (3.6 MiB with the buffers below). One
buffer per transfer, filled again and again, keeps the peak near what is live.
"""

import asyncio
import concurrent.futures
import mmap
import os
from concurrent.futures import ThreadPoolExecutor

SMALL = 64 << 10  # a body shorter than this never gets a buffer: its pieces are joined
# Downloads read their next chunk in these threads (``readinto`` releases the GIL).
_READERS = ThreadPoolExecutor(2, thread_name_prefix="diskread")


class Gather:
    """Pieces of a body gathered and handed to ``put`` about ``capacity`` bytes at a time
    (one ``write(2)`` and one hash update per buffer rather than one per 16 KiB TLS read).

    A body below ``SMALL`` bytes keeps its pieces and never allocates the buffer (small
    uploads stay cheap); a bigger one copies its pieces into one ``bytearray`` reused for
    the rest of the body (allocated early, so that few pieces wait beside it). ``put`` gets
    a view that is valid only during the call; with ``buffers=2`` the full buffers alternate
    between two, so a full one stays valid until the ``put`` after it returns (a consumer
    that writes it behind, in a thread, must be done with it by then). A piece at least
    ``capacity`` long arriving on an empty buffer goes to ``put`` as it is, unless
    ``aligned``: then every full buffer is one of the page-aligned buffers (anonymous
    ``mmap``), as a write with ``O_DIRECT`` needs.
    """

    def __init__(self, capacity, put, buffers=1, aligned=False):
        self.capacity = capacity
        self.put = put
        self.aligned = aligned
        self.filled = 0  # bytes gathered and not yet put
        self._pieces = []  # while the body is under SMALL
        self._buffer = None
        self._pool = [None] * buffers  # allocated when first needed
        self._turn = 0

    def add(self, chunk):
        if not self.filled and len(chunk) >= self.capacity and not self.aligned:
            return self.put(chunk)  # a buffer's worth already: no copy
        if self._buffer is None:
            if self.filled + len(chunk) < min(SMALL, self.capacity):
                self._pieces.append(chunk)
                self.filled += len(chunk)
                return
            self._start_buffer()
        self._copy(chunk)

    def _start_buffer(self):
        """The first buffer, holding the pieces kept so far (less than SMALL: they fit)."""
        self._buffer = self._next_buffer()
        pieces, self._pieces, self.filled = self._pieces, [], 0
        for piece in pieces:
            self._copy(piece)

    def _copy(self, chunk):
        view = memoryview(chunk)
        while view:
            n = min(len(view), self.capacity - self.filled)
            self._buffer[self.filled:self.filled + n] = view[:n]
            view = view[n:]
            self.took(n)

    def _next_buffer(self):
        turn = self._turn
        self._turn = (turn + 1) % len(self._pool)
        if self._pool[turn] is None:
            self._pool[turn] = memoryview(mmap.mmap(-1, self.capacity) if self.aligned
                                          else bytearray(self.capacity))
        return self._pool[turn]

    def space(self):
        """The free part of the current buffer, for a reader to fill in place (then
        ``took``): a body read straight into it is never copied on the event loop."""
        if self._buffer is None:
            self._start_buffer()
        return self._buffer[self.filled:]

    def took(self, n):
        """``n`` bytes were written into the view ``space`` gave."""
        self.filled += n
        if self.filled == self.capacity:
            self.filled = 0
            full = self._buffer
            if len(self._pool) > 1:
                self._buffer = self._next_buffer()
            self.put(full)

    def drain(self):
        """Put what is gathered (the end of the body, or before a pause)."""
        if self._pieces:
            pieces, self._pieces, self.filled = self._pieces, [], 0
            self.put(pieces[0] if len(pieces) == 1 else b"".join(pieces))
        elif self.filled:
            filled, self.filled = self.filled, 0
            self.put(self._buffer[:filled])

    def clear(self):
        """Forget what is gathered (the body was thrown away or rewound)."""
        self._pieces, self.filled = [], 0


class ReadBehind:
    """The worker's read that the next chunk of a ``read_views`` waits for, so that the
    event loop awaits it (``ready``) before it asks for that chunk, instead of waiting
    inside the generator: a download of a file not in the page cache then holds the loop
    for none of its disk time, and other requests are served meanwhile."""

    def __init__(self):
        self.future = None

    async def ready(self):
        future = self.future
        if future is not None and not future.done():
            await asyncio.wrap_future(future)


def read_views(f, start, end, chunk_size, buffers=2, ahead=False, behind_read=None):
    """The bytes ``[start, end)`` of the open file ``f`` (``end`` None: to its end), read
    into ``buffers`` buffers of ``chunk_size`` used in turn: each view yielded is
    overwritten ``buffers`` reads later, so a consumer must be done with a chunk before it
    asks for the one ``buffers`` after it (a download sends and flushes each chunk before
    it reads on; the verified read holds one back, hence two).

    With ``ahead``, a chunk the page cache holds is copied on the caller's thread, and once
    a read has had to wait for the disk, that read and every one after it are made by a
    worker thread, the next chunk's while the consumer sends this one (the disk's time then
    overlaps the sending); a view is then overwritten ``buffers - 1`` reads later. Handing
    every chunk to a worker cost more than the copy it took off the event loop: a cached
    1 GiB download ran 1,353-1,423 MB/s for 0.79-0.88 CPU-s with every chunk read in a
    worker, 1,484-1,517 for 0.69-0.72 without (docs/PERFORMANCE.md, "Downloads without
    Nagle's delay").

    ``behind_read`` (a ReadBehind) is kept pointing at the worker's read in flight; a
    consumer that passes one never waits for the disk inside this generator: when the read
    of the chunk asked for is still running, it gets an empty view instead, awaits
    ``behind_read.ready()`` and asks again. Without one, the generator waits. Closes ``f``,
    once no read is running behind."""
    with f:
        f.seek(start)
        pool = [memoryview(bytearray(chunk_size)) for _ in range(buffers)]
        remaining = None if end is None else end - start
        turn, pos = 0, start
        behind = None  # (view, bytes in it already, future of the worker's read of the rest)
        from_disk = False  # a read waited for the disk: read in a worker from now on
        try:
            while True:
                if behind is not None:
                    view, got, reading = behind
                    if behind_read is not None and not reading.done():
                        behind_read.future = reading
                        yield view[:0]  # awaited by the consumer, which then asks again
                        continue
                    behind = None
                    n = got + reading.result()
                elif remaining is None or remaining > 0:
                    view = _sized(pool[turn], remaining)
                    got = _read_cached(f, view, pos) if ahead and not from_disk else None
                    cached = got or 0
                    if cached == len(view):
                        n = cached
                    elif ahead and behind_read is not None and remaining is not None:
                        from_disk = True  # the rest of the chunk: a worker's read
                        behind = (view, cached, _READERS.submit(f.readinto, view[cached:]))
                        continue
                    else:  # (without an end, a short read may just have met it)
                        more = f.readinto(view[cached:])
                        n = cached + more
                        from_disk = from_disk or (ahead and (got is None or more > 0))
                else:
                    break
                if not n:
                    break
                pos += n
                if remaining is not None:
                    remaining -= n
                turn = (turn + 1) % buffers
                if from_disk and (remaining is None or remaining > 0):
                    nxt = _sized(pool[turn], remaining)
                    behind = (nxt, 0, _READERS.submit(f.readinto, nxt))
                    if behind_read is not None:
                        behind_read.future = behind[2]
                yield view[:n]
        finally:
            if behind is not None:  # the consumer stopped early: no read under the close
                concurrent.futures.wait([behind[2]])


def _read_cached(f, view, pos):
    """Fill what it can of ``view`` from ``f`` at ``pos`` (its position) with what the page
    cache holds, without waiting for the disk (``RWF_NOWAIT``); the bytes read (the file's
    position is moved past them), or None where the file system cannot read without
    waiting (then everything counts as the disk's)."""
    try:
        n = os.preadv(f.fileno(), [view], pos, os.RWF_NOWAIT)
    except BlockingIOError:
        n = 0
    except OSError:  # EOPNOTSUPP: this file system does not read without waiting
        return None
    f.seek(pos + n)
    return n


def _sized(view, remaining):
    return view if remaining is None or remaining >= len(view) else view[:remaining]
