"""What a user may do with a file. Until the admin server decides roles, owners only."""
from securifile.common.errors import Forbidden

READ, WRITE, DELETE, LIST = "read", "write", "delete", "list"


class OwnerOnlyAuthoriser:
    """The owner may do anything in their own namespace; nobody else may do anything there."""

    async def role(self, principal, fp):
        return "owner" if principal.name == fp.owner else None

    async def check(self, principal, op, fp):
        role = await self.role(principal, fp)
        if role is None:
            raise Forbidden(f"{principal.name} has no access to {fp.full}")
        return role
