"""Times as the API and the database hold them (common/times.py): a naive datetime is UTC."""
from datetime import datetime, timedelta, timezone

from securifile.common.times import aware, epoch, from_epoch, iso, utc

PARIS = timezone(timedelta(hours=1))


def test_a_naive_time_is_utc_and_an_aware_one_keeps_its_zone():
    naive = datetime(2026, 11, 20, 9, 30)
    assert aware(naive) == datetime(2026, 11, 20, 9, 30, tzinfo=timezone.utc)
    local = datetime(2026, 11, 20, 10, 30, tzinfo=PARIS)
    assert aware(local).utcoffset() == timedelta(hours=1)
    assert aware(None) is None
    assert utc(local).utcoffset() == timedelta(0) and utc(local) == aware(naive)


def test_iso_text_and_epoch_seconds_round_trip():
    moment = from_epoch("1795685400.25")  # as a report sends it
    assert moment.tzinfo is not None and epoch(moment) == 1795685400.25
    assert iso(datetime(2026, 11, 20, 9, 30)) == "2026-11-20T09:30:00+00:00"
    assert datetime.fromisoformat(iso(moment)) == moment
    assert iso(None) is None
    assert epoch(datetime(1970, 1, 1, 0, 1)) == 60
