"""The garbage collector of a long-running server: settled once it serves, and watched.

A started server holds some 50,000 long-lived objects (modules, classes, functions, its
configuration and tables). CPython's full collection walks every one of them each time it
runs: under 16 concurrent clients it ran in every process of a 3-node cluster within the
same quarter second, 23-40 ms in each node and 74-118 ms in the admin server, a stall every
client felt at once. ``gc.freeze()`` moves what exists when the server starts serving into a
permanent generation that collections skip (cycles among objects made later are still
found), so a collection costs what the requests left behind, not the program itself.

The collections and the time they take are counted (``pauses``) for /metrics.
"""
import gc
import time


class Pauses:
    """Collections and the seconds they took, per generation, since ``settle``."""

    def __init__(self):
        self.count = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self._started = None

    def __call__(self, phase, info):  # a gc.callbacks entry
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started is not None:
            generation = info["generation"]
            self.count[generation] += 1
            self.seconds[generation] += time.perf_counter() - self._started
            self._started = None


pauses = Pauses()


def settle():
    """Call once, when the server serves: collect what starting left as garbage, freeze the
    rest, and count the collections from then on."""
    gc.collect()
    gc.freeze()
    if pauses not in gc.callbacks:
        gc.callbacks.append(pauses)


def frozen():
    """Objects out of the collector's reach (0 until ``settle``)."""
    return gc.get_freeze_count()
