"""The Files screen's listing model (tui/screens/files/listing.py), without widgets or servers:
what a page of the catalogue makes of the rows, and what the caller is offered."""
from securifile.tui.screens.files.listing import GONE_SECONDS, SHARED, FolderListing, FolderRef

from .tui_fakes import record


def listing_of(*records, folders=(), next=None):
    return {"files": list(records), "folders": list(folders), "next": next}


def test_a_refresh_of_a_partial_listing_keeps_the_later_pages():
    model = FolderListing("alice")
    first = listing_of(record("alice", "a.txt", 1), record("alice", "b.txt", 1), next="b.txt")
    removed, added, _ = model.merge(model.entries_from(FolderRef("alice"), first, "open", 0),
                                    complete=False, last="alice/b.txt")
    assert not removed and [e.key for e in added] == ["f:alice/a.txt", "f:alice/b.txt"]
    assert model.add_page(model.entries_from(
        FolderRef("alice"), listing_of(record("alice", "c.txt", 1)), "more", 0))
    # a.txt went away and b.txt changed; c.txt lies past what the refresh covered: it stays.
    fresh = listing_of(record("alice", "b.txt", 1, version=2), next="b.txt")
    removed, added, changed = model.merge(
        model.entries_from(FolderRef("alice"), fresh, "refresh", 0), complete=False,
        last="alice/b.txt")
    assert removed == ["f:alice/a.txt"] and not added
    assert [(old.record["version"], new.record["version"]) for old, new in changed] == [(1, 2)]
    assert set(model.entries) == {"f:alice/b.txt", "f:alice/c.txt"}
    assert "0 folders, 2 files" in model.summary() and model.file_count == 2


def test_a_deleted_file_stays_hidden_while_reports_lag():
    model = FolderListing("alice")
    page = listing_of(record("alice", "a.txt", 1))
    model.merge(model.entries_from(FolderRef("alice"), page, "open", 0), True, "")
    assert model.forget(["alice/a.txt"], now=100.0) == ["f:alice/a.txt"]
    assert not model.entries_from(FolderRef("alice"), page, "refresh", now=100.0)
    assert model.entries_from(FolderRef("alice"), page, "refresh", now=100.0 + GONE_SECONDS + 1)


def test_a_new_folder_is_pending_until_the_catalogue_has_a_file_in_it():
    model = FolderListing("alice")
    assert model.new_folder_problem("a/b") and model.new_folder_problem("..")
    reports = FolderRef("alice", "reports")
    model.pending.add(reports)
    rows = model.entries_from(FolderRef("alice"), listing_of(), "open", 0)
    assert [(e.key, e.pending) for e in rows] == [("d:alice/reports/", True)]
    model.merge(rows, True, "")
    assert model.new_folder_problem("reports") == "reports/ already exists here."
    assert model.keep_real(FolderRef("alice"), listing_of(folders=["reports"])) == {reports}
    assert not model.pending


def test_what_is_offered_follows_the_role():
    model = FolderListing("alice")
    model.shared = [{"owner": "carol", "path": "team/", "role": "editor"}]
    assert model.allows("upload_file", None, False) is True
    assert model.allows("delete", None, False) is None  # shown, with nothing highlighted
    model.open(FolderRef("carol", "team"))
    rows = model.entries_from(model.folder, listing_of(
        record("carol", "team/a.txt", 1, role="editor")), "open", 0)
    model.merge(rows, True, "")
    entry = model.entries["f:carol/team/a.txt"]
    assert model.allows("replace", entry, False) is True
    assert model.allows("delete", entry, False) is False
    assert model.allows("upload_file", entry, False) is False
    assert model.allows("parent", entry, False) is True
    model.open(SHARED)
    assert model.to_download(None) is None and model.allows("more", None, False) is False
