"""Choosing replica servers and the server a user is sent to, and how many copies a file
wants: pure functions."""


def copies_wanted(replicas):
    """How many servers should hold a file: its origin and ``replicas`` replicas."""
    return replicas + 1


def under_replicated(loc, replicas):
    """Whether a live file has fewer current copies than it wants."""
    return not loc.deleted and len(loc.current_holders) < copies_wanted(replicas)


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
