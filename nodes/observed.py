"""Methods whose calls another part may listen to, marked where they are defined.

The metrics count heartbeat misses, challenges, verdicts, replication and record
broadcasts; the storage and peer logic should not know of Prometheus. A method marked
``@observed`` tells each listener of its instance, once it returns, what it returned, its
arguments and how long it took; ``listen`` adds a listener and fails loudly when the method
is not marked (renamed, say), so a metric cannot silently stop counting.
"""
import functools
import inspect
import time


def observed(method):
    """Tell ``listener(result, args, seconds)`` of each call, for each listener that
    ``listen`` added on the instance."""
    name = method.__name__

    def tell(instance, result, args, started):
        for listener in instance.listeners.get(name, ()):
            listener(result, args, time.monotonic() - started)

    if inspect.iscoroutinefunction(method):
        @functools.wraps(method)
        async def wrapper(self, *args, **kwargs):
            started = time.monotonic()
            result = await method(self, *args, **kwargs)
            tell(self, result, args, started)
            return result
    else:
        @functools.wraps(method)
        def wrapper(self, *args, **kwargs):
            started = time.monotonic()
            result = method(self, *args, **kwargs)
            tell(self, result, args, started)
            return result

    wrapper.observed = True
    return wrapper


def listen(instance, name, listener):
    """Call ``listener(result, args, seconds)`` after each call of ``instance.name``."""
    if not getattr(getattr(type(instance), name), "observed", False):
        raise AttributeError(f"{type(instance).__name__}.{name} is not marked @observed")
    instance.listeners.setdefault(name, []).append(listener)
