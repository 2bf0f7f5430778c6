"""A node's calls to the admin server, sent to each of its instances in turn."""
import logging

from tornado.httpclient import HTTPClientError

from securifile.common.admin_urls import MOVE_ON_STATUSES

log = logging.getLogger("securifile.admin_calls")


async def fetch_admin(http, admin, make_request):
    """``make_request(base_url)`` sent to each admin instance in turn until one answers
    (see AdminURLs); the last error when none does."""
    error = None
    for base in admin.order():
        try:
            resp = await http.fetch(make_request(base))
        except HTTPClientError as e:
            if e.code not in MOVE_ON_STATUSES:
                admin.answered(base)
                raise
            error = e
        except OSError as e:
            error = e
        else:
            admin.answered(base)
            return resp
        log.debug("admin server %s did not answer (%s); trying the next", base, error)
    raise error
