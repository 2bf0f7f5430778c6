"""Running a folder's transfers: one file after another, or several at a time.

One client's files one after another wait for each file's rounds between the nodes (lock,
copies, record) while the client and most of the cluster idle; several in flight overlap
those waits, as FTP clients (FileZilla's two transfers at once), ``lftp mirror --parallel``
and ``rclone --transfers`` do. The nodes cap one user's uploads at a time
(``max_uploads_per_user``, 16 by default), hence ``MAX_PARALLEL``.
"""
import contextlib
import threading

from .errors import TransferCancelled
from .transport import check_cancel

PARALLEL = 4  # files at a time for a folder, unless the caller says otherwise
MAX_PARALLEL = 16


def transfer_plan(plan, transfer, progress=None, on_file=None, *, parallel=1, cancel=None,
                  worker=None):
    """Run ``transfer(source, target, per_file_progress, cancel)`` over a plan of (source,
    target, size), up to ``parallel`` files at a time; the results in the plan's order.

    ``progress(done, total)`` counts bytes over the whole plan and ``on_file(source, target,
    result)`` follows each file; neither is ever called by two threads at once. The first
    error stops the plan: no file starts after it, the transfers under way are cancelled,
    and it is raised once they have ended (a file finished meanwhile was told to
    ``on_file``). ``cancel`` (an Event or a callable) stops it the same way from outside.
    With ``parallel`` above 1 the transfers run in worker threads, the n-th of them inside
    ``worker(n)`` (a context manager: the client's, which spreads the workers over the
    servers and closes each one's connections when it has no more files).
    """
    run = _PlanRun(plan, transfer, progress, on_file, cancel)
    workers = min(parallel, len(plan))
    if workers <= 1:
        for index in range(len(plan)):
            run.one(index)
        return run.results
    threads = [threading.Thread(target=run.work, args=(worker and worker(n),), daemon=True,
                                name=f"transfer-{n}") for n in range(workers)]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join()
    except BaseException:  # Ctrl-C: stop the workers before leaving
        run.stop.set()
        raise
    return run.finish()


class _PlanRun:
    def __init__(self, plan, transfer, progress, on_file, cancel):
        self.plan, self.transfer = plan, transfer
        self.progress, self.on_file, self.cancel = progress, on_file, cancel
        self.total = sum(size for _, _, size in plan)
        self.results = [None] * len(plan)
        self.stop = threading.Event()
        self.error = None
        self._lock = threading.Lock()
        self._next = 0
        self._finished_bytes = 0
        self._under_way = {}  # index -> bytes of that file sent or received so far

    def cancelled(self):
        """Raised by the caller, or by a failure elsewhere in the plan."""
        if self.stop.is_set():
            return True
        try:
            check_cancel(self.cancel)
        except TransferCancelled:
            return True
        return False

    def one(self, index):
        source, target, size = self.plan[index]

        def per_file(done, _total):
            if self.progress is None:
                return
            with self._lock:
                self._under_way[index] = done
                self.progress(self._finished_bytes + sum(self._under_way.values()), self.total)

        result = self.transfer(source, target, per_file, self.cancelled)
        with self._lock:
            self._under_way.pop(index, None)
            self._finished_bytes += size
            self.results[index] = result
            if self.on_file is not None:
                self.on_file(source, target, result)

    def work(self, context):
        with context or contextlib.nullcontext():
            while (index := self._take()) is not None:
                try:
                    self.one(index)
                except BaseException as e:
                    self._failed(e)

    def _take(self):
        with self._lock:
            if self.cancelled() or self._next >= len(self.plan):
                return None
            self._next += 1
            return self._next - 1

    def _failed(self, error):
        with self._lock:
            # A transfer cancelled because another failed is not the news.
            if self.error is None or isinstance(self.error, TransferCancelled):
                self.error = error
        self.stop.set()

    def finish(self):
        if self.error is not None:
            raise self.error
        check_cancel(self.cancel)  # cancelled before any file failed or started
        return self.results
