"""The one binary message of a peer channel: a call that carries bytes (a small file's
copy) is the length of its JSON (4 bytes, big-endian), the JSON, then the bytes."""
import json


def join_call(call, data):
    """One binary message: a call's JSON and the bytes it carries."""
    head = json.dumps(call).encode()
    return len(head).to_bytes(4, "big") + head + data


def split_call(message):
    """(call, bytes) from a message ``join_call`` made; ValueError when it is not one."""
    size = int.from_bytes(message[:4], "big")
    if len(message) < 4 + size:
        raise ValueError("a call's JSON runs past its message")
    call = json.loads(message[4:4 + size])
    if not isinstance(call, dict):
        raise ValueError("a call is a JSON object")
    return call, message[4 + size:]
