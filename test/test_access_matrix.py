"""Every role times every operation, on one real cluster (admin server and three nodes).

alice owns the files. On ``alice/folder/`` bob is master, carol editor and dave reader; erin
has no grant at all; oscar works in other namespaces (his own, and bob's folder where he is
master) but holds nothing in alice's. Each cell of the matrix is its own test id
(``modify-reader``, ``grant_owner-master``, ...) and asserts the exact status and error code,
then that a refused operation changed nothing.
"""
import hashlib
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import pytest


from .clusters import FAST, start_cluster
from .helpers import AdminApi, Api, wait_for

PASSWORD = "correct horse battery"
OWNER, MASTER, EDITOR, READER, NONE, OTHER = "owner", "master", "editor", "reader", "none", "other"
ROLES = [OWNER, MASTER, EDITOR, READER, NONE, OTHER]
USER_OF = {OWNER: "alice", MASTER: "bob", EDITOR: "carol", READER: "dave", NONE: "erin",
           OTHER: "oscar"}
# gina is the grantee of the grant and revoke cells; the rest serve the coverage tests.
EXTRA_USERS = ["gina", "fiona", "hank", "ivy", "kate"]
DOC = b"alice's document\n"
# conftest's fast settings, with more misses before a peer counts as down: this cluster lives
# for the whole module, and on a loaded machine a node that stalls for 0.6 s would be marked
# down and lose its replicas or redirects for a moment. Nothing here waits for a down mark.
STEADY = {**FAST, "heartbeat_misses": 10}


class Who:
    """One user, as the nodes see them (``node``) and as the admin server does (``admin``)."""

    def __init__(self, username, node, admin):
        self.username, self.node, self.admin = username, node, admin


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    cluster = start_cluster(tmp_path_factory, "matrix", **STEADY)
    try:
        yield _populate(cluster)
    finally:
        cluster.stop()


def _populate(cluster):
    probe = Api(cluster)
    wait_for(lambda: all(probe.sees(a, b, "running") for a in cluster.names for b in cluster.names
                         if a != b), timeout=20, what="every node to see every other running")
    root = AdminApi(cluster)
    names = [u for u in USER_OF.values() if u != "alice"] + EXTRA_USERS
    # Accounts and logins each cost a bcrypt hash: do them side by side, but fewer at once
    # than the login throttle's limit per address (5): an attempt in flight counts as a
    # failure until it is decided, and on a slow machine eight in flight got 429.
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(root.add_user, names))
        admins = dict(zip(names, pool.map(root.as_user, names)))
    admins["alice"] = AdminApi(cluster, "alice")
    people = {name: Who(name, admin.node_api(), admin) for name, admin in admins.items()}
    people["alice"].node = Api(cluster)  # the owner with her client certificate
    alice = people["alice"]
    for path, data in [("alice/folder/doc.txt", DOC), ("alice/folder/sub/deep.txt", b"deep"),
                       ("alice/folder2/sibling.txt", b"sibling"), ("alice/top.txt", b"top"),
                       ("alice/solo/one.txt", b"one"), ("alice/solo/two.txt", b"two")]:
        assert alice.node.put("node1", path, data).status == 201
    assert people["oscar"].node.put("node2", "oscar/folder/doc.txt", b"oscar's").status == 201
    for grantee, role in (("bob", "master"), ("carol", "editor"), ("dave", "reader")):
        grant(alice, "alice/folder/", grantee, role)
    grant(people["bob"], "bob/folder/", "oscar", "master")
    wait_for(lambda: alice.admin.get("/api/v1/users/alice/files").json()["file_count"] == 6,
             timeout=10, what="the admin server to catalogue alice's files")
    return {"cluster": cluster, "people": people, "root": root}


def acl_path(target):
    return "/api/v1/acl/" + quote(target, safe="/")


def grant(who, target, grantee, role):
    r = who.admin.call("PUT", acl_path(target), {"username": grantee, "role": role})
    assert r.status == 200, r
    return r


def grants_on(world, target):
    r = world["people"]["alice"].admin.get(acl_path(target))
    assert r.status == 200, r
    return {g["username"]: g["role"] for g in r.json()["grants"]}


def error_code(r):
    return r.json()["error"]["code"]


def version_of(world, path):
    r = world["people"]["alice"].node.follow("node1", "HEAD", path)[1]
    return int(r.headers["X-SecuriFile-Version"]) if r.status == 200 else None


# -- the operations: each does its own setup, acts as ``who``, checks what must follow ----------


def op_read(world, who, ok):
    r = who.node.follow("node1", "GET", "alice/folder/doc.txt")[1]
    if ok:
        assert r.body == DOC
    return r


def op_modify(world, who, ok):
    path = f"alice/folder/modify-{who.username}.txt"
    alice = world["people"]["alice"]
    assert alice.node.put("node1", path, b"v1").status in (200, 201)
    before = version_of(world, path)
    r = who.node.follow("node1", "PUT", path, body=f"by {who.username}".encode())[1]
    after = alice.node.follow("node1", "GET", path)[1]
    if ok:
        assert r.json()["version"] == before + 1
        assert after.body == f"by {who.username}".encode()
    else:
        assert after.body == b"v1" and version_of(world, path) == before
    return r


def op_create(world, who, ok):
    path = f"alice/folder/created-by-{who.username}.txt"
    alice = world["people"]["alice"]
    if alice.node.get("node1", path).status != 404:
        assert alice.node.request("node1", "DELETE", path).status == 204
    r = who.node.put("node1", path, b"new")
    after = alice.node.follow("node1", "GET", path)[1]
    if ok:
        assert r.json()["version"] >= 1 and after.body == b"new"
    else:
        assert after.status == 404, after
    return r


def op_delete(world, who, ok):
    path = f"alice/folder/delete-{who.username}.txt"
    alice = world["people"]["alice"]
    assert alice.node.put("node1", path, b"doomed").status in (200, 201)
    r = who.node.request("node1", "DELETE", path)
    after = alice.node.follow("node1", "GET", path)[1]
    assert after.status == (404 if ok else 200), after
    return r


def op_list_admin(world, who, ok):
    r = who.admin.get("/api/v1/files?prefix=" + quote("alice/folder/"))
    if ok:
        body = r.json()
        assert "folder/doc.txt" in {f["path"] for f in body["files"]}
        assert "folder/sub" in body["folders"]
        role = "owner" if who.username == "alice" else ROLE_OF[who.username]
        assert {f["role"] for f in body["files"]} == {role}
    return r


def op_list_node(world, who, ok):
    r = who.node.request("node2", "GET", "/files/alice/folder/", raw_path=True)
    if ok:
        paths = {f["path"] for f in r.json()["files"]}
        assert {"folder/doc.txt", "folder/sub/deep.txt"} <= paths
        assert not any(p.startswith("folder2/") for p in paths)
    return r


def op_view_acl(world, who, ok):
    r = who.admin.get(acl_path("alice/folder/"))
    if ok:
        assert {"bob": "master", "carol": "editor", "dave": "reader"}.items() \
            <= {g["username"]: g["role"] for g in r.json()["grants"]}.items()
    return r


def op_grant(world, who, ok):
    target = "alice/folder/"
    alice = world["people"]["alice"]
    alice.admin.call("DELETE", acl_path(target) + "?username=gina")
    r = who.admin.call("PUT", acl_path(target), {"username": "gina", "role": "reader"})
    assert grants_on(world, target).get("gina") == ("reader" if ok else None)
    return r


def op_revoke(world, who, ok):
    target = "alice/folder/"
    grant(world["people"]["alice"], target, "gina", "editor")
    r = who.admin.call("DELETE", acl_path(target) + "?username=gina")
    assert grants_on(world, target).get("gina") == (None if ok else "editor")
    return r


def op_grant_owner(world, who, ok):
    target = "alice/folder/"
    r = who.admin.call("PUT", acl_path(target), {"username": "alice", "role": "reader"})
    assert "alice" not in grants_on(world, target)
    return r


def op_revoke_owner(world, who, ok):
    r = who.admin.call("DELETE", acl_path("alice/folder/") + "?username=alice")
    # The owner still does everything an owner does.
    assert world["people"]["alice"].node.follow("node1", "GET", "alice/folder/doc.txt")[1].status == 200
    return r


ROLE_OF = {"bob": "master", "carol": "editor", "dave": "reader"}
OPERATIONS = {
    "read": op_read, "modify": op_modify, "create": op_create, "delete": op_delete,
    "list_admin": op_list_admin, "list_node": op_list_node, "view_acl": op_view_acl,
    "grant": op_grant, "revoke": op_revoke, "grant_owner": op_grant_owner,
    "revoke_owner": op_revoke_owner,
}

OK = {"read": 200, "modify": 200, "create": 201, "delete": 204, "list_admin": 200,
      "list_node": 200, "view_acl": 200, "grant": 200, "revoke": 204}
NO = (403, "forbidden")  # no role at all on the target
WEAK = (403, "role_too_weak")  # a role, but not enough for the operation
IMMUTABLE = (403, "owner_immutable")
# The exact answer for every cell; a bare status means success (no error code).
MATRIX = {
    #              owner          master        editor        reader        none  other
    "read":         [200,         200,          200,          200,          NO,   NO],
    "modify":       [200,         200,          200,          WEAK,         NO,   NO],
    # Only the owner creates in her namespace; the node says so to masters and editors.
    "create":       [201,         (403, "forbidden"), (403, "forbidden"), WEAK, NO, NO],
    "delete":       [204,         WEAK,         WEAK,         WEAK,         NO,   NO],
    "list_admin":   [200,         200,          200,          200,          NO,   NO],
    "list_node":    [200,         200,          200,          200,          NO,   NO],
    "view_acl":     [200,         200,          200,          200,          NO,   NO],
    "grant":        [200,         200,          WEAK,         WEAK,         NO,   NO],
    "revoke":       [204,         204,          WEAK,         WEAK,         NO,   NO],
    "grant_owner":  [IMMUTABLE,   IMMUTABLE,    WEAK,         WEAK,         NO,   NO],
    "revoke_owner": [IMMUTABLE,   IMMUTABLE,    WEAK,         WEAK,         NO,   NO],
}
CELLS = [(op, role, MATRIX[op][i]) for op in OPERATIONS for i, role in enumerate(ROLES)]


@pytest.mark.parametrize("op,role,expected", CELLS,
                         ids=[f"{op}-{role}" for op, role, _ in CELLS])
def test_access_matrix(world, op, role, expected):
    who = world["people"][USER_OF[role]]
    status, code = (expected, None) if isinstance(expected, int) else expected
    r = OPERATIONS[op](world, who, ok=code is None)
    assert r.status == status, r
    if code is None:
        return
    error = r.json()["error"]
    assert error["code"] == code, r
    if code == "role_too_weak":
        assert error["role"] == role and f"is {role} of alice/" in error["message"]
        assert " needs " in error["message"]


def test_every_operation_and_role_is_in_the_matrix():
    assert set(MATRIX) == set(OPERATIONS)
    assert all(len(row) == len(ROLES) for row in MATRIX.values())


# -- what a grant covers -----------------------------------------------------------------------


def test_folder_grant_covers_files_and_subfolders_not_siblings(world):
    dave = world["people"]["dave"]  # reader of alice/folder/
    for node in ("node1", "node2", "node3"):
        assert dave.node.follow(node, "GET", "alice/folder/sub/deep.txt")[1].body == b"deep"
        for sibling in ("alice/folder2/sibling.txt", "alice/top.txt", "alice/solo/one.txt"):
            r = dave.node.request(node, "GET", sibling)
            assert (r.status, error_code(r)) == (403, "forbidden"), (node, sibling, r)
    assert dave.admin.get("/api/v1/files?prefix=alice/folder/sub/").status == 200
    for prefix in ("alice/folder2/", "alice/solo/"):
        assert dave.admin.get("/api/v1/files?prefix=" + prefix).status == 403
        assert dave.node.request("node1", "GET", "/files/" + prefix, raw_path=True).status == 403
    # The namespace root lists only what leads to his folder.
    body = dave.admin.get("/api/v1/files?prefix=alice/").json()
    assert body["files"] == [] and body["folders"] == ["folder"]


def test_file_grant_covers_only_that_file(world):
    alice, fiona = world["people"]["alice"], world["people"]["fiona"]
    grant(alice, "alice/solo/one.txt", "fiona", "reader")
    assert wait_for(lambda: fiona.node.follow("node2", "GET", "alice/solo/one.txt")[1].body == b"one",
                    timeout=5, what="the new grant to work")
    for path in ("alice/solo/two.txt", "alice/solo/one.txt.bak", "alice/folder/doc.txt"):
        assert fiona.node.request("node1", "GET", path).status == 403, path
    r = fiona.node.follow("node1", "PUT", "alice/solo/one.txt", body=b"no")[1]
    assert (r.status, error_code(r)) == (403, "role_too_weak")
    # The admin lists the folder with just her file; the node does not list the folder at all.
    body = fiona.admin.get("/api/v1/files?prefix=alice/solo/").json()
    assert [(f["path"], f["role"]) for f in body["files"]] == [("solo/one.txt", "reader")]
    assert fiona.node.request("node1", "GET", "/files/alice/solo/", raw_path=True).status == 403


def test_grants_do_not_cross_namespaces(world):
    oscar = world["people"]["oscar"]  # master of bob/folder/, nothing in alice's namespace
    assert grants_on(world, "alice/folder/").get("oscar") is None
    r = oscar.node.request("node1", "GET", "alice/folder/doc.txt")
    assert (r.status, error_code(r)) == (403, "forbidden")
    # His master role on bob's folder is real: he grants there, but not at the same path of alice.
    r = oscar.admin.call("PUT", acl_path("bob/folder/"), {"username": "kate", "role": "reader"})
    assert r.status == 200, r
    r = oscar.admin.call("PUT", acl_path("alice/folder/"), {"username": "kate", "role": "reader"})
    assert (r.status, error_code(r)) == (403, "forbidden")


# -- masters -----------------------------------------------------------------------------------


def test_master_grants_and_revokes_others_including_masters_never_the_owner(world):
    people = world["people"]
    alice, bob, hank = people["alice"], people["bob"], people["hank"]
    target = "alice/folder/"
    grant(alice, target, "ivy", "master")
    # bob (master) makes hank a master; hank, now master, revokes ivy, another master.
    grant(bob, target, "hank", "master")
    r = hank.admin.call("DELETE", acl_path(target) + "?username=ivy")
    assert r.status == 204, r
    # bob demotes hank, then removes him; the owner's access stays out of every master's reach.
    grant(bob, target, "hank", "reader")
    assert grants_on(world, target)["hank"] == "reader"
    assert bob.admin.call("DELETE", acl_path(target) + "?username=hank").status == 204
    assert "hank" not in grants_on(world, target) and "ivy" not in grants_on(world, target)
    for method, suffix, payload in (("PUT", "", {"username": "alice", "role": "reader"}),
                                    ("DELETE", "?username=alice", None)):
        for where in (target, "alice/folder/doc.txt", "alice/folder/sub/"):
            r = bob.admin.call(method, acl_path(where) + suffix, payload)
            assert (r.status, error_code(r)) == (403, "owner_immutable"), (method, where, r)
    # A master of a folder reaches nothing above it: not the grants on the whole namespace.
    grant(alice, "alice/", "kate", "reader")
    r = bob.admin.call("DELETE", acl_path("alice/") + "?username=kate")
    assert (r.status, error_code(r)) == (403, "forbidden")
    r = bob.admin.call("PUT", acl_path("alice/top.txt"), {"username": "kate", "role": "editor"})
    assert (r.status, error_code(r)) == (403, "forbidden")
    assert grants_on(world, "alice/")["kate"] == "reader"
    assert alice.admin.call("DELETE", acl_path("alice/") + "?username=kate").status == 204


def test_editor_modifying_bumps_the_version_and_the_owner_sees_the_new_bytes(world):
    alice, carol = world["people"]["alice"], world["people"]["carol"]
    path = "alice/folder/shared.txt"
    created = alice.node.put("node2", path, b"first draft")
    assert created.status == 201, created
    first = created.json()
    # carol asks another node: it sends her to the origin, which takes the new version.
    node, r = carol.node.follow("node3", "PUT", path, body=b"second draft, by carol")
    assert r.status == 200, r
    second = r.json()
    assert (node, second["version"], second["origin"]) == ("node2", first["version"] + 1, "node2")
    assert second["digest"] == hashlib.sha256(b"second draft, by carol").hexdigest()
    for node in ("node1", "node2", "node3"):
        got = alice.node.follow(node, "GET", path)[1]
        assert got.body == b"second draft, by carol"
        assert got.headers["X-SecuriFile-Version"] == str(second["version"])

    def catalogued():
        files = alice.admin.get("/api/v1/files?prefix=alice/folder/").json()["files"]
        entry = [f for f in files if f["path"] == "folder/shared.txt"]
        return entry and entry[0]["version"] == second["version"] and entry[0]
    entry = wait_for(catalogued, timeout=10, what="the admin to record the new version")
    assert entry["digest"] == second["digest"] and entry["size"] == len(b"second draft, by carol")
    assert entry["replicas"] == second["replicas"] and entry["origin"] == "node2"
