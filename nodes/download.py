"""One read this node serves: the file's record, its copy on disk, and its bytes checked
against the record's digest as they go out (so a bad copy is never sent whole)."""
import logging

from securifile.common.digests import new_hasher

from .quarantine import quarantine_if_bad

log = logging.getLogger("securifile.node")


class CopyCorrupt(Exception):
    """The bytes read from disk do not hash to the record's digest."""


def verified(chunks, hasher, digest):
    """``chunks``, each passed on only once the next one is read, the last only once the
    whole hashes to ``digest``; CopyCorrupt instead of the last chunk otherwise. One chunk
    is held at a time, so memory stays flat."""
    held = None
    for chunk in chunks:
        hasher.update(chunk)
        if held is not None:
            yield held
        held = chunk
    if hasher.hexdigest() != digest:
        raise CopyCorrupt(f"the bytes hash to {hasher.hexdigest()}, not {digest}")
    if held is not None:
        yield held


class Download:
    """``StorageNode.begin_read``'s answer when this node serves the file: ``loc`` its
    current record, ``size`` the bytes of the copy here."""

    def __init__(self, node, loc, size):
        self.node = node
        self.loc = loc
        self.size = size

    def chunks(self, start, end, chunk_size, verify):
        """The bytes from ``start`` to ``end``; ``verify``: a whole read raises CopyCorrupt
        instead of its last chunk when the copy does not match the record. The chunks are
        views of two reused buffers (``DiskStore.open_views``): the caller sends each one
        before it asks for the next."""
        chunks = self.node.store.open_views(self.loc.file_path, start, end, chunk_size)
        if verify:
            chunks = verified(chunks, new_hasher(self.loc.algorithm), self.loc.digest)
        return chunks

    async def quarantine(self, why):
        """The copy proved bad: moved aside and published stale, if a fresh read confirms it.
        Never raises: the transfer is broken off already, and the scrubber tries again."""
        try:
            await quarantine_if_bad(self.node, self.loc.file_path, why)
        except Exception:
            log.exception("quarantine of %s failed", self.loc.file_path)
