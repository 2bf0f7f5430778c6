"""Choosing replica servers and the server a user is sent to: pure functions."""


def place_replicas(candidates, count, rng):
    """``count`` servers picked at random from ``candidates``, in priority order 1..count."""
    pool = sorted(candidates)
    rng.shuffle(pool)
    return pool[:count]


def serving_holder(loc, is_running):
    """The first holder, in origin-then-priority order, that is running; None if none is."""
    for name in loc.holders:
        if is_running(name):
            return name
    return None
