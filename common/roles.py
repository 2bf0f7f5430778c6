"""Access roles and what each allows: the one statement of the rules that the admin server
enforces and the terminal client follows to offer only what will succeed.

A grant's ``path`` is a file path, a folder path ending in '/', or '' for the whole
namespace. A user's role on a file is the owner's if it is theirs, else the strongest grant
that covers it.
"""
OWNER = "owner"
ROLES = ("reader", "editor", "master")  # the roles an owner (or a master) grants
RANK = {None: 0, "reader": 1, "editor": 2, "master": 3, OWNER: 4}

# The operations, and the weakest role that may do each. Creating and deleting files is the
# owner's alone, as is everything about the owner's own grant.
NEEDS = {
    "read": "reader",
    "list": "reader",
    "write": "editor",
    "create": OWNER,
    "delete": OWNER,
    "grant": "master",
    "revoke": "master",
}


def covers(grant_path, path):
    """Whether a grant on ``grant_path`` applies to ``path`` (a file, or a folder 'x/')."""
    return grant_path in ("", path) or (grant_path.endswith("/") and path.startswith(grant_path))


def at_least(role, needed):
    """Whether ``role`` (None for no role) ranks as high as ``needed``."""
    return RANK.get(role, 0) >= RANK[needed]


def allowed(role, op):
    """Whether ``role`` may do the operation ``op`` (a key of ``NEEDS``)."""
    return at_least(role, NEEDS[op])


def strongest(roles):
    """The highest-ranking of ``roles`` (None among them, or none at all: None)."""
    best = None
    for role in roles:
        if RANK.get(role, 0) > RANK[best]:
            best = role
    return best


def role_on(username, grants, owner, path):
    """``username``'s role on ``owner/path`` ('' or 'dir/' for folders), given the grants
    others gave them (dicts with owner, path and role, as ``GET /api/shared`` lists them)."""
    if username == owner:
        return OWNER
    return strongest(g.get("role") for g in grants or ()
                     if g.get("owner") == owner and covers(g.get("path", ""), path))
