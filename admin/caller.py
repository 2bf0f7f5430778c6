"""Who is asking the admin server: a user's account, checked once per request.

The transport resolves a credential into a ``Principal`` (common/auth.py); the service turns
a user's principal into a ``Caller`` only while the account exists, the credential is not
revoked and the account is active (``AdminService.identify``). The service's policy methods
take a ``Caller``, so a rule about who may see or change what reads in one place.
"""
from dataclasses import dataclass

from securifile.common.auth import Principal
from securifile.common.errors import Forbidden

from .models import User


@dataclass(frozen=True)
class Caller:
    principal: Principal
    user: User

    @property
    def name(self):
        return self.user.username

    @property
    def admin(self):
        return bool(self.user.admin)

    def require_admin(self):
        """The account's admin flag in the database decides, not the token's claim (an
        administrator demoted since the token was minted is refused at once)."""
        if not self.admin:
            raise Forbidden("administrators only", code="admin_only")

    def require_self_or_admin(self, username, message):
        """Owner-or-admin: ``username``'s own data, or any account's for administrators."""
        if username != self.name and not self.admin:
            raise Forbidden(message)
