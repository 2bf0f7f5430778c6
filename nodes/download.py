"""One read this node serves: the file's record, its copy on disk, and its bytes checked as
they go out, against the copy's read checksums (``chunksums``) or its record's digest, so
that a bad copy is never sent whole."""
import logging
import os

from securifile.common.digests import new_hasher
from securifile.common.errors import Unavailable

from .buffers import read_views
from .challenge import stat_key_of
from .chunksums import CHUNK, ChunkSums, CopyCorrupt, checked, unpack
from .quarantine import quarantine_if_bad, write_under_way

log = logging.getLogger("securifile.node")


def verified(chunks, hasher, digest, sums=None, on_match=None):
    """``chunks``, each passed on only once the next one is read, the last only once the
    whole hashes to ``digest``; CopyCorrupt instead of the last chunk otherwise. One chunk
    is held at a time, so memory stays flat. ``sums`` (a ``ChunkSums``) is fed the same
    bytes; ``on_match()`` is called once the digest has matched. An empty chunk (a read
    still under way, ``buffers.read_views``) is passed on as it comes."""
    held = None
    for chunk in chunks:
        if not chunk:
            yield chunk
            continue
        hasher.update(chunk)
        if sums is not None:
            sums.update(chunk)
        if held is not None:
            yield held
        held = chunk
    if hasher.hexdigest() != digest:
        raise CopyCorrupt(f"the bytes hash to {hasher.hexdigest()}, not {digest}")
    if on_match is not None:
        on_match()
    if held is not None:
        yield held


class Download:
    """``StorageNode.begin_read``'s answer when this node serves the file: ``loc`` its
    current record, ``size`` the bytes of the copy here."""

    def __init__(self, node, loc, size):
        self.node = node
        self.loc = loc
        self.size = size
        self.by_sums = False  # checked against its read checksums, not its digest

    def chunks(self, start, end, chunk_size, verify, behind_read=None):
        """The bytes from ``start`` to ``end``; ``verify`` (a whole read): CopyCorrupt
        instead of the first chunk that does not match the copy's read checksums, or,
        without checksums for this very file, instead of the last chunk when the whole does
        not hash to the record's digest (the checksums are then taken on the way, for the
        next read). The chunks are views of reused buffers (``buffers.read_views``; once
        the disk has to be waited for, the next one is read by a worker thread while the
        caller sends this one; ``behind_read``, a ``buffers.ReadBehind``, points at that
        read): the caller sends each one before it asks for the next. A whole read that
        opens a version not recorded yet is refused before any byte
        (``_check_not_replaced``)."""
        store, fp = self.node.store, self.loc.file_path
        if not verify:
            return store.open_views(fp, start, end, chunk_size, behind_read)
        f = store.open_file(fp)
        try:
            st = os.fstat(f.fileno())
            key = stat_key_of(st)
            sums = (unpack(self.node.locations.chunk_sums(fp, key), st.st_size)
                    if chunk_size == CHUNK else None)
            if sums is None:  # checksums kept for this very file are its record's
                self._check_not_replaced(key)
        except BaseException:
            f.close()
            raise
        if sums is not None:
            self.by_sums = True
            return checked(read_views(f, start, end, chunk_size, ahead=True,
                                      behind_read=behind_read), sums)
        # The digest's check holds one chunk back: a third buffer for the one read ahead.
        views = read_views(f, start, end, chunk_size, buffers=3, ahead=True,
                           behind_read=behind_read)
        taken = ChunkSums() if chunk_size == CHUNK else None
        version = self.loc.version

        def keep():
            if taken is not None:
                self.node.locations.set_chunk_sums(fp, version, key, taken.packed())
        return verified(views, new_hasher(self.loc.algorithm), self.loc.digest, taken, keep)

    def _check_not_replaced(self, key):
        """Unavailable (503, ask again in a second) when the file opened is not the copy the
        record names because a write of it is under way: a commit renames the new version
        into place before it records it, and checking those bytes against the record being
        replaced would break the read off as corrupt."""
        node, fp = self.node, self.loc.file_path
        record = node.locations.copy_record(fp)
        if (record is not None and record.stat_key and record.stat_key != key
                and write_under_way(node, fp)):
            raise Unavailable(f"{fp.full} is being replaced on {node.name}: ask again in a "
                              "moment", code="being_replaced", headers={"Retry-After": "1"})

    async def quarantine(self, why):
        """The copy proved bad: moved aside and published stale, if a fresh read against
        the digest confirms it; if it does not, the checksums were what was wrong, and
        they go. Never raises: the transfer is broken off already, and the scrubber tries
        again."""
        try:
            if not await quarantine_if_bad(self.node, self.loc.file_path, why) and self.by_sums:
                self.node.locations.clear_chunk_sums(self.loc.file_path)
        except Exception:
            log.exception("quarantine of %s failed", self.loc.file_path)
