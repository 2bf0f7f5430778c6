"""The role rules (common/roles.py) that the admin server enforces and the client follows."""
import pytest

from securifile.common.roles import NEEDS, OWNER, ROLES, allowed, at_least, covers, role_on, strongest


@pytest.mark.parametrize("role,may", [
    (OWNER, {"read", "list", "write", "create", "delete", "grant", "revoke"}),
    ("master", {"read", "list", "write", "grant", "revoke"}),
    ("editor", {"read", "list", "write"}),
    ("reader", {"read", "list"}),
    (None, set()),
    ("nonsense", set()),  # an unknown role allows nothing rather than failing
])
def test_what_each_role_may_do(role, may):
    assert {op for op in NEEDS if allowed(role, op)} == may


def test_grantable_roles_rank_below_the_owner():
    assert all(at_least(OWNER, r) and not at_least(r, OWNER) for r in ROLES)
    assert [r for r in ROLES if at_least(r, "editor")] == ["editor", "master"]


def test_a_grant_covers_its_file_its_folder_below_or_the_namespace():
    assert covers("", "a.txt") and covers("", "docs/")
    assert covers("docs/", "docs/a.txt") and covers("docs/", "docs/sub/")
    assert covers("docs/a.txt", "docs/a.txt")
    assert not covers("docs/a.txt", "docs/b.txt")
    assert not covers("docs", "docs/a.txt")  # a file grant named like a folder is a file's
    assert not covers("docs/", "docsx/a.txt")


def test_the_strongest_covering_grant_wins():
    grants = [{"owner": "carol", "path": "", "role": "reader"},
              {"owner": "carol", "path": "team/", "role": "master"},
              {"owner": "carol", "path": "team/a.txt", "role": "editor"},
              {"owner": "dave", "path": "", "role": "master"}]
    assert role_on("alice", grants, "carol", "team/a.txt") == "master"
    assert role_on("alice", grants, "carol", "other.txt") == "reader"
    assert role_on("alice", grants, "erin", "x") is None
    assert role_on("carol", grants, "carol", "x") == OWNER
    assert strongest([None, "reader", "nonsense", "editor"]) == "editor"
    assert strongest([]) is None
