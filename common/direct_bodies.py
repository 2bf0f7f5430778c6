"""Big bodies decrypted straight into the buffer that takes them to disk.

Why: Tornado hands a streamed body to its handler as bytes objects. Each TLS record (16 KiB)
is decrypted into a fresh bytearray, appended to the stream's read buffer and cut out of it
again as the piece the handler gets, which the node then copies into its 1 MiB write buffer:
three copies of every byte on the event loop, one allocation per record. A handler that
offers a *sink* gets a body of known length read in place instead: ``sink.space()`` is a
writable view of the free part of its write buffer, the stream decrypts into it
(``IOStream.read_into``, with the whole reads of ``whole_reads.py``) and ``sink.filled(n)``
says how much came (an awaitable from it is awaited before reading on: back-pressure). On
each replica of a 1 GiB upload at r=2 this took the CPU from 2.6-3.3 to 2.1-2.3 s, and on
the origin at r=0 the interpreter's samples fell by a third and ``memmove``'s by half
(docs/PERFORMANCE.md, "Upload bodies read in place").

``space()`` returning None (the upload was refused meanwhile) hands the rest of the body to
the handler's ``data_received``, as without a sink. Chunked bodies, small ones and handlers
without a sink are read as Tornado reads them.

The method overridden is Tornado's own (``HTTP1Connection._read_fixed_body``, private API),
as ``whole_reads`` overrides a stream's loop: setup.py keeps Tornado below 7, and
test_direct_bodies.py fails if a sink's body stops arriving in place or intact.
"""
import asyncio

from tornado.http1connection import HTTP1Connection

# Give other connections a turn after this many bytes read without a wait (Tornado yields
# every 256 KiB for the same reason: a fast client's reads can complete without one).
YIELD_EVERY = 1 << 20


class DirectBodyConnection(HTTP1Connection):
    """An ``HTTP1Connection`` that reads a fixed-length body into its delegate's sink."""

    async def _read_fixed_body(self, content_length, delegate):
        offer = getattr(delegate, "body_sink", None)
        sink = offer() if offer is not None else None
        if sink is None:
            return await super()._read_fixed_body(content_length, delegate)
        work = 0
        while content_length > 0:
            view = None if self._write_finished else sink.space()
            if view is None:
                return await super()._read_fixed_body(content_length, delegate)
            if len(view) > content_length:
                view = view[:content_length]
            n = await self.stream.read_into(view, partial=True)
            content_length -= n
            pending = sink.filled(n)
            if pending is not None:
                await pending
            work += n
            if work >= YIELD_EVERY:
                work = 0
                await asyncio.sleep(0)


def read_bodies_in_place(connection):
    """Make a server's ``connection`` (one request) read into sinks; a connection of any
    other class is left as it is."""
    if type(connection) is HTTP1Connection:
        connection.__class__ = DirectBodyConnection
