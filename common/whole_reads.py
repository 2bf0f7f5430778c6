"""Streamed bodies read as all the bytes waiting, not one TLS record per trip up the stack.

Why: under TLS a socket read returns at most one 16 KiB record, and Tornado answers a
partial ``read_bytes`` (how it reads a streamed body, up to the server's ``chunk_size``)
after the first socket read that brings anything. Each 16 KiB then climbs the whole stack
on its own (Tornado's coroutines, the body guard, the handler, the upload, the disk
writer): 65,536 trips per GiB. A stream whose partial reads go on reading until the socket
has nothing more, or the read is full, hands a handler up to a body chunk (256 KiB on a
node) whenever the client sends faster than the server takes the bytes, and exactly what
is there otherwise: nothing waits longer than before. On the origin of a 1 GiB upload
this took the user CPU from 4.0-4.1 s to 2.9 s in alternating runs (docs/PERFORMANCE.md,
"Reading a body whole").

The loop overridden is Tornado's own (``BaseIOStream._read_to_buffer_loop``, private API):
setup.py keeps Tornado below 7, and test_whole_reads.py fails if the reads stop being
whole or start waiting for bytes that are not there.
"""
from tornado.iostream import IOStream, SSLIOStream


class _WholeReads:
    def _read_to_buffer_loop(self):
        if self._read_partial and self._read_bytes:
            # Read until the socket would block or the read is satisfied; then hand over
            # whatever came (Tornado's own loop stops after the first read that brings any).
            while not self.closed() and self._read_buffer_size < self._read_bytes:
                if self._read_to_buffer() == 0:
                    break
            return self._find_read_pos()
        return super()._read_to_buffer_loop()


class WholeReadsIOStream(_WholeReads, IOStream):
    """An ``IOStream`` whose partial reads take every byte waiting."""


class WholeReadsSSLIOStream(_WholeReads, SSLIOStream):
    """An ``SSLIOStream`` whose partial reads take every byte waiting."""


_WHOLE = {IOStream: WholeReadsIOStream, SSLIOStream: WholeReadsSSLIOStream}


def read_whole(stream):
    """Make a server's freshly accepted ``stream`` read bodies whole (see the module
    docstring); a stream of any other class is left as it is."""
    whole = _WHOLE.get(type(stream))
    if whole is not None:
        stream.__class__ = whole
