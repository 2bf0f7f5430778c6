"""Which event loop a server runs on (common/eventloop.py) and how the configuration picks it."""
import asyncio

import pytest
import uvloop

from securifile.common import eventloop
from securifile.common.config import load_config


async def loop_kind():
    return type(asyncio.get_running_loop())


def test_uvloop_by_default_and_asyncio_when_configured():
    assert load_config(env={}).event_loop == "uvloop"
    assert issubclass(eventloop.run(loop_kind()), uvloop.Loop)
    cfg = load_config(env={"SECURIFILE_EVENT_LOOP": "asyncio"})
    kind = eventloop.run(loop_kind(), cfg.event_loop)
    assert issubclass(kind, asyncio.BaseEventLoop) and not issubclass(kind, uvloop.Loop)


def test_an_unknown_loop_is_refused():
    with pytest.raises(ValueError, match="event_loop must be one of uvloop, asyncio"):
        load_config(env={"SECURIFILE_EVENT_LOOP": "trio"})
    never_run = loop_kind()
    with pytest.raises(ValueError, match="event_loop must be one of"):
        eventloop.run(never_run, "trio")
    never_run.close()
