"""Progress bars for transfers: a tqdm bar fed by the client's ``progress(done, total)``."""
import sys

# Below this, a transfer ends before a bar is worth reading; above it a bar shows even when
# stderr is not a terminal (a log then gets a line every LOG_INTERVAL seconds).
LARGE_TRANSFER = 8 << 20
LOG_INTERVAL = 10.0


def wants_bar(mode, total, stream):
    """``mode``: True (always), False (never) or None (auto: a terminal, or a large transfer)."""
    if mode is not None:
        return mode
    tty = hasattr(stream, "isatty") and stream.isatty()
    return (tty and total >= (1 << 20)) or total >= LARGE_TRANSFER


class TransferProgress:
    """A ``progress(done, total)`` callback that opens a bar lazily, once the total is known."""

    def __init__(self, desc, mode=None, stream=None):
        self.desc, self.mode = desc, mode
        self.stream = stream or sys.stderr
        self._bar = None
        self._decided = False

    def __call__(self, done, total):
        if not self._decided:
            self._decided = True
            if total is not None and wants_bar(self.mode, total, self.stream):
                self._bar = self._open(total)
        if self._bar is not None:
            self._bar.update(done - self._bar.n)

    def describe(self, text):
        self.desc = text
        if self._bar is not None:
            self._bar.set_description_str(text, refresh=False)

    def _open(self, total):
        from tqdm import tqdm

        tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        return tqdm(total=total, desc=self.desc, unit="B", unit_scale=True, unit_divisor=1024,
                    file=self.stream, leave=not tty, dynamic_ncols=True,
                    mininterval=0.1 if tty else LOG_INTERVAL)

    def close(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
