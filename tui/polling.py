"""Polling that stops while its screen is out of sight, for screens and widgets that ask
the admin server every ``poll_seconds`` (a hidden screen's questions would only add load)."""


class PollWhileShown:
    """Mixed into a Textual screen or widget that has ``poll()`` and ``poll_seconds``."""

    _timer = None

    def start_polling(self):
        """Poll now and every ``poll_seconds``."""
        self.poll()
        self._timer = self.set_interval(self.poll_seconds, self.poll)

    def working(self, group):
        """Whether a worker of ``group`` that this node started is still running: a poll
        does not pile a request on one whose answer has not come."""
        return any(w.node is self and w.group == group and not w.is_finished
                   for w in self.workers)

    def pause_polling(self):
        if self._timer is not None:
            self._timer.pause()

    def resume_polling(self):
        """Back in sight: poll at once, then on the interval again."""
        if self._timer is not None:
            self._timer.resume()
            self.poll()
