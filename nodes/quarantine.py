"""A copy found bad: confirmed, moved aside, logged, and published stale to be repaired.

The scrubber and verified reads both come here. A fresh read confirms the damage first,
against the committed digest: a read can race a new version renamed into place, and a copy
that changed meanwhile (another inode, another committed version), or one whose file is
being written (its lock held here, or its commit between rename and record), is left
alone.
"""
import asyncio
import logging
import os

from securifile.common.digests import new_hasher
from securifile.common.syslog import integrity_event

log = logging.getLogger("securifile.quarantine")
CHUNK = 1 << 20


def hash_open_file(path, algorithm, chunk_size=CHUNK, pace=None, sums=None):
    """(hex digest, stat at open) of the file at ``path``, hashed through one descriptor;
    (None, None) if there is no file. ``pace(nbytes)`` is called after each chunk;
    ``sums`` (a ``ChunkSums``), if given, is fed the same bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except (FileNotFoundError, NotADirectoryError):
        return None, None
    with os.fdopen(fd, "rb", buffering=0) as f:
        st = os.fstat(f.fileno())
        h = new_hasher(algorithm)
        while chunk := f.read(chunk_size):
            h.update(chunk)
            if sums is not None:
                sums.update(chunk)
            if pace is not None:
                pace(len(chunk))
    return h.hexdigest(), st


def _current_inode(path):
    try:
        return os.stat(path).st_ino
    except (FileNotFoundError, NotADirectoryError):
        return None


def write_under_way(node, fp):
    """Whether a write of ``fp`` is under way here: its new version may lie at the name
    before its copy is recorded (a commit renames, syncs the folder, then records; the
    file's lock covers the rest of an upload), so bytes that do not match the record may
    be good ones the record does not name yet."""
    return node.locks.busy(fp) or node.store.being_changed(fp)


# What a look at this node's own copy found (``check_own_copy``).
QUARANTINED, GOOD, UNSETTLED = "quarantined", "good", "unsettled"


async def quarantine_if_bad(node, fp, reason):
    """Quarantine this node's copy of ``fp`` if its bytes do not hash to the committed
    digest, and tell the cluster the copy is lost. True when it was quarantined."""
    return await check_own_copy(node, fp, reason) == QUARANTINED


async def check_own_copy(node, fp, reason):
    """``quarantine_if_bad``, saying what it found: QUARANTINED, GOOD (the bytes hash to the
    committed digest) or UNSETTLED (no recorded copy, a write under way, or the copy
    replaced meanwhile: nothing to judge by now)."""
    record = node.locations.copy_record(fp)
    if record is None:
        return UNSETTLED
    loc = node.locations.get(fp)
    algorithm = loc.algorithm if loc is not None else node.algorithm
    path = node.store.path_for(fp)
    digest, st = await asyncio.to_thread(hash_open_file, path, algorithm)
    inode = st.st_ino if st is not None else None
    # Back on the loop: no commit can land between these checks and the move below.
    now = node.locations.copy_record(fp)
    if now is None or now[:2] != record[:2] or _current_inode(path) != inode:
        return UNSETTLED  # replaced or removed meanwhile: not the copy that was found bad
    if write_under_way(node, fp):
        return UNSETTLED  # the next read or scrub looks again once the write is over
    if digest == record.digest:
        return GOOD
    with node.store.changing(fp):  # a challenge answered meanwhile must not say missing
        node.locations.forget_copy(fp)  # first, as in StorageNode._drop_local
        moved = node.store.quarantine(fp)
    detail = (f"{reason}; the bytes hash to {digest or '(no file)'}, committed {record.digest}"
              f"; kept at {moved}" if moved else f"{reason}; the file is missing")
    log.warning("copy of %s quarantined: %s", fp.full, detail)
    node.quarantined += 1
    if node.audit is not None:
        node.audit.log_event(integrity_event(node.name, fp.full, "quarantined", detail))
    await node.copy_lost(fp, reason)
    return QUARANTINED
