"""AdminService's policy rules, called directly on SQLite and PostgreSQL (no HTTP, no process):
who a credential stands for, what a non-administrator may see of the user directory, whose
file lists and folders a caller may read, which node may report what, who creates accounts.
"""
import asyncio

import pytest

from securifile.admin.caller import Caller
from securifile.admin.models import User
from securifile.common.errors import ApiError, Forbidden, NotFound, Unauthenticated

from .admin_inprocess import (  # noqa: F401  (fixtures)
    add_user, admin_engine, caller, certs, file_report, principal_of, service)

NEW_PASSWORD = "another horse battery"


@pytest.fixture
def people(service):
    """root (administrator), alice and bob who share, carol who shares with nobody."""
    for name, admin in (("root", True), ("alice", False), ("bob", False), ("carol", False)):
        add_user(service, name, admin)
    service.acl.grant("alice", "alice", "docs/", "bob", "reader")
    return {name: caller(service, name) for name in ("root", "alice", "bob", "carol")}


def refused(call, *args, error=Forbidden, code=None):
    with pytest.raises(error) as e:
        call(*args)
    if code is not None:
        assert e.value.code == code
    return e.value


# -- identify: the account behind a credential -----------------------------------------------


def test_identify_gives_the_caller_of_a_live_credential(service, people):
    alice = service.identify(principal_of(service, "alice"))
    assert isinstance(alice, Caller) and (alice.name, alice.admin) == ("alice", False)
    assert people["root"].admin


def test_identify_refuses_a_removed_account_a_revoked_credential_and_a_disabled_account(
        service, people):
    gone = principal_of(service, "carol")
    service.accounts.remove("carol")
    refused(service.identify, gone, code="no_such_user")

    revoked = principal_of(service, "bob")
    service.logout(revoked)
    refused(service.identify, revoked, error=Unauthenticated, code="credential_revoked")

    disabled = principal_of(service, "alice")
    service.accounts.set_disabled("alice", True)
    refused(service.identify, disabled, code="account_disabled")


def test_the_databases_admin_flag_decides_not_the_credentials(service, people):
    people["root"].require_admin()
    refused(people["alice"].require_admin, code="admin_only")
    add_user(service, "root2", admin=True)
    token_of_an_admin = principal_of(service, "root2")
    with service.sessions.begin() as s:
        s.query(User).filter_by(username="root2").one().admin = False
    refused(service.identify(token_of_an_admin).require_admin, code="admin_only")


# -- the user directory ------------------------------------------------------------------------


def test_administrators_see_every_account_with_its_details(service, people):
    users = service.list_users(people["root"], 100)
    assert [u["username"] for u in users] == ["alice", "bob", "carol", "root"]
    assert {u["email"] for u in users} == {f"{n}@example.com" for n in ("alice", "bob", "carol", "root")}
    assert [u["username"] for u in service.list_users(people["root"], 2, after="alice")] == \
        ["bob", "carol"]


def test_anybody_else_sees_their_own_account_and_only_the_names_they_share_with(service, people):
    users = service.list_users(people["bob"], 100)
    assert users[0]["username"] == "alice" and users[0] == {"username": "alice"}
    assert users[1]["username"] == "bob" and users[1]["email"] == "bob@example.com"
    assert len(users) == 2
    assert service.list_users(people["carol"], 100) == [
        u for u in service.list_users(people["root"], 100) if u["username"] == "carol"]
    assert [u["username"] for u in service.list_users(people["bob"], 100, after="alice")] == ["bob"]


def test_a_non_administrator_learns_whether_a_name_exists_and_nothing_more(service, people):
    assert service.list_users(people["carol"], 100, wanted="root") == [{"username": "root"}]
    assert service.list_users(people["carol"], 100, wanted="nobody") == []
    assert service.list_users(people["root"], 100, wanted="carol")[0]["email"] == \
        "carol@example.com"


# -- owner or administrator: a user's file list ------------------------------------------------


def test_a_users_file_list_is_for_the_owner_and_administrators(service, people):
    service.apply_reports("node1", [file_report("node1", "alice", "docs/a.txt")])
    mine = service.user_files(people["alice"], "alice", 10)
    assert [f["path"] for f in mine["files"]] == ["docs/a.txt"] and mine["file_count"] == 1
    assert service.user_files(people["root"], "alice", 10)["files"] == mine["files"]
    refused(service.user_files, people["bob"], "alice", 10)  # a reader of docs/, not the owner
    refused(service.user_files, people["bob"], "nobody", 10)  # no hint whether it exists
    refused(service.user_files, people["root"], "nobody", 10, error=NotFound, code="no_such_user")


# -- file listing access -----------------------------------------------------------------------


def test_a_folder_lists_for_a_role_on_it_or_a_grant_below_it_and_for_nobody_else(service, people):
    service.apply_reports("node1", [file_report("node1", "alice", "docs/a.txt", 1),
                                    file_report("node1", "alice", "private/b.txt", 2)])
    own = service.list_folder(people["alice"], "alice", "", 10)
    assert own["folders"] == ["docs", "private"]
    shared = service.list_folder(people["bob"], "alice", "docs/", 10)
    assert [(f["path"], f["role"]) for f in shared["files"]] == [("docs/a.txt", "reader")]
    way_down = service.list_folder(people["bob"], "alice", "", 10)  # the way to docs/
    assert way_down["folders"] == ["docs"] and way_down["files"] == []
    refused(service.list_folder, people["bob"], "alice", "private/", 10)
    refused(service.list_folder, people["carol"], "alice", "", 10)
    assert service.list_folder(people["carol"], "carol", "", 10)["files"] == []
    refused(service.list_folder, people["root"], "alice", "", 10)  # admins hold no role


def test_grants_are_shown_to_readers_of_the_path(service, people):
    assert service.grants(people["bob"], "alice", "docs/")["grants"] == [
        {"username": "bob", "role": "reader", "granted_by": "alice"}]
    refused(service.grants, people["carol"], "alice", "docs/")
    assert service.shared_with(people["bob"]) == [
        {"owner": "alice", "path": "docs/", "role": "reader"}]


# -- report ownership --------------------------------------------------------------------------


def test_a_node_reports_only_for_itself_and_what_came_before_a_wrong_report_stays(service, people):
    ok, wrong = file_report("node1", "alice", "x.txt"), file_report("node2", "alice", "y.txt")
    refused(service.apply_reports, "node1", [ok, wrong], code="wrong_reporter")
    assert [f["path"] for f in service.user_files(people["alice"], "alice", 10)["files"]] == \
        ["x.txt"]
    assert service.apply_reports("node2", [wrong]) == 1
    assert service.apply_reports("node2", [wrong]) == 0  # the same report again changes nothing


def test_a_node_without_tls_names_nobody_and_may_report_for_any_server(service, people):
    assert service.apply_reports("?", [file_report("node2", "bob", "z.txt")]) == 1


# -- accounts: administrators only, the body's types checked ---------------------------------


def test_only_administrators_create_accounts(service, people):
    with pytest.raises(Forbidden) as e:
        asyncio.run(service.add_user(people["alice"], "dave", "dave@example.com", 30, NEW_PASSWORD))
    assert e.value.code == "admin_only" and not service.accounts.exists("dave")
    made = asyncio.run(service.add_user(people["root"], "dave", "dave@example.com", 30, NEW_PASSWORD))
    assert made["username"] == "dave" and service.accounts.exists("dave")


@pytest.mark.parametrize("fields, code", [
    (dict(valid_days=True), "invalid_validity"),
    (dict(valid_days="30"), "invalid_validity"),
    (dict(admin="yes"), "bad_argument"),
    (dict(password=12345678), "weak_password"),
])
def test_account_fields_of_the_wrong_type_are_refused_and_nothing_is_made(
        service, people, fields, code):
    args = dict(valid_days=30, password=NEW_PASSWORD, admin=False) | fields
    with pytest.raises(ApiError) as e:
        asyncio.run(service.add_user(people["root"], "erin", "erin@example.com", **args))
    assert (e.value.status, e.value.code) == (400, code)
    assert not service.accounts.exists("erin")


# -- events: the caller's own for non-administrators -------------------------------------------


def test_non_administrators_see_their_own_events_administrators_all(service, people):
    everyone = {e["username"] for e in service.recent_events(people["root"], None, 100)["events"]}
    assert {"alice", "bob", "root"} <= everyone
    assert {e["username"] for e in service.recent_events(people["bob"], None, 100)["events"]} \
        == {"bob"}
