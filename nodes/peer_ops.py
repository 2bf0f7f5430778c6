"""What a peer asks of this node, free of the transport: the write lock, the location
records a coordinator pushes, and a small file's copy with its record. Each op takes the
node, the calling node's name and the JSON object asked (a copy also its bytes), and returns
the JSON object answered (or raises an ApiError). The HTTP routes (``/peer/locks``,
``/peer/locations``, ``/peer/replicas/...``) and the kept peer channel (``/peer/channel``)
both call these, so a message means the same whichever way it came."""
from securifile.common.errors import ApiError
from securifile.common.paths import parse_path


def lock(node, caller, body):
    """Take, renew or (``release``) give back ``body``'s file lock for ``caller``."""
    fp = parse_path(f"{body.get('owner')}/{body.get('path')}")
    if body.get("release"):
        node.give_back_lock(fp, body.get("token"))
        return {"ok": True}
    if node.membership is not None:
        node.membership.check_coordinator(body.get("epoch"))
    stamp = body.get("stamp")
    try:
        lease, known = float(body.get("lease", 30)), int(body.get("known", 0))
        stamp = None if stamp is None else int(stamp)
    except (TypeError, ValueError):
        raise ApiError("lease, known and stamp must be numbers", code="bad_lock") from None
    return node.grant_lock(fp, str(body.get("holder")), caller, str(body.get("token")),
                           lease, known, stamp)


def push_locations(node, caller, body):
    """Apply the records ``caller`` coordinated, and give back the locks they end."""
    records = body.get("records", [])
    node.receive_locations(caller, records, body.get("release", ()), span(body, "seq"),
                           span(body, "numbered"))
    return {"applied": len(records)}


def record(node, caller, body):
    """This node's record of ``body``'s file (a tombstone too), for a peer that doubts its
    own is the newest (``nodes/doubted_reads.py``)."""
    fp = parse_path(f"{body.get('owner')}/{body.get('path')}")
    loc = node.locations.get(fp, include_deleted=True)
    return {"record": None if loc is None else loc.to_json()}


def span(body, key):
    """``body[key]`` as (before, after) numbers; None when absent."""
    value = body.get(key)
    if value is None:
        return None
    try:
        return int(value[0]), int(value[1])
    except (TypeError, ValueError, IndexError, KeyError):
        raise ApiError(f"{key} must be [before, after]", code="bad_record") from None


async def finish_copy(node, caller, fp, writer, expected, version, length, publish):
    """A copy whose bytes have all arrived: checked against ``expected`` (None: the digest
    computed is answered, for the origin to compare), committed, recorded, and the record
    sent with it (``publish``, a small upload's) applied."""
    with node.store.changing(fp):  # until the copy's record names the bytes renamed in
        digest = await writer.commit_async(expected, length)
        node.accept_copy(fp, version, digest, writer.size, writer.sums.packed())
    if publish is not None:
        node.receive_copy_record(caller, fp, version, digest, publish)
    return {"server": node.name, "digest": digest, "size": writer.size}


async def store_copy(node, caller, body, data):
    """A small file's copy sent from memory with its record (``PeerClient.send_copy_bytes``)."""
    fp = parse_path(f"{body.get('owner')}/{body.get('path')}")
    try:
        version = int(body.get("version", 1))
    except (TypeError, ValueError):
        raise ApiError("version must be a number", code="bad_copy") from None
    writer = node.begin_copy(fp, str(body.get("algorithm", node.algorithm)), caller, len(data))
    try:
        writer.write(data)
        return await finish_copy(node, caller, fp, writer, body.get("digest"), version,
                                 len(data), body.get("publish"))
    finally:
        writer.abort()  # nothing once committed; a refused or cut-off copy leaves nothing


# The ops a peer may send over its channel, by name; BYTES_OPS carry bytes after their JSON.
OPS = {"lock": lock, "locations": push_locations, "record": record}
BYTES_OPS = {"copy": store_copy}
