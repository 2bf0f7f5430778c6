"""The event loop a server process runs on.

uvloop (libuv under asyncio's interface) unless the configuration says ``asyncio``. A node's
event loop is its bottleneck for small uploads: each one costs 50-odd callbacks and about 30
turns of the loop, and the peer channels' TLS runs in asyncio's pure-Python SSL protocol.
On a 3-node cluster one client's 4 KiB uploads at r=0 ran 1.07x faster on uvloop (twelve
alternating pairs; the origin's loop spent 13% less user time) and a 1 GiB download about
6% slower, for reasons not yet found (docs/PERFORMANCE.md, "uvloop, and three cheaper
pieces of each request"). ``event_loop = "asyncio"`` (or ``SECURIFILE_EVENT_LOOP=asyncio``)
keeps Python's own loop, for an operator who suspects the loop.
"""
import asyncio

LOOPS = ("uvloop", "asyncio")


def check(event_loop):
    """ValueError unless ``event_loop`` names a loop this module runs."""
    if event_loop not in LOOPS:
        raise ValueError(f"event_loop must be one of {', '.join(LOOPS)}, not {event_loop!r}")


def run(main, event_loop="uvloop"):
    """Run the coroutine ``main`` to its end on a new loop of the kind named."""
    check(event_loop)
    factory = None
    if event_loop == "uvloop":
        import uvloop
        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
