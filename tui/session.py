"""Who the terminal client is talking to, and as whom: one storage client, one admin client.

Everything on screen comes from the admin server's REST API (which reads the SQL database);
file bytes go to and from the storage nodes through the shared client library. Both clients
are thread-safe, so screens call them from Textual thread workers.
"""
from dataclasses import dataclass

from securifile.client.admin import AdminClient
from securifile.client.credentials import keep_login_after_password_change
from securifile.client.resumable import resume_uploads
from securifile.client.settings import ClientSettings, LoginFolder
from securifile.client.storage import Client


@dataclass
class Session:
    client: Client
    admin: AdminClient
    username: str
    is_admin: bool
    admin_url: str
    # A password login of this session only: its token dies when the session logs out.
    owns_token: bool = False
    ca: str = None
    # The saved login this session came from (None: a password login or a cluster file).
    folder: LoginFolder = None
    usage: dict | None = None  # the last /api/v1/me: quota_bytes, used_bytes

    @classmethod
    def from_settings(cls, settings):
        """From a cluster file or a saved login; asks the admin server who we are."""
        client = Client.from_settings(settings)
        resume_uploads(client)  # an upload survives a broken connection or a server restart
        admin = client.admin
        me = admin.me()
        return cls(client, admin, me["username"], bool(me.get("admin")), settings.admin_url,
                   ca=settings.ca, usage=me)

    @classmethod
    def from_cluster_file(cls, path):
        return cls.from_settings(ClientSettings.from_cluster_file(path))

    @classmethod
    def from_saved_login(cls, folder=None):
        """The login ``securifile login`` saved (None when there is none)."""
        folder = folder or LoginFolder.default()
        if folder is None or not folder.exists():
            return None
        session = cls.from_settings(folder.settings())
        session.folder = folder
        return session

    @classmethod
    def login(cls, admin_url, username, password, ca=None):
        """A password login: a token for this session only (nothing is written to disk)."""
        admin = AdminClient(admin_url, ca=ca)
        answer = admin.login(username, password)
        settings = ClientSettings(servers=[], ca=ca, token=answer["token"],
                                  username=answer["username"], admin_url=admin_url)
        client = Client.from_settings(settings)
        resume_uploads(client)
        return cls(client, client.admin, answer["username"], bool(answer.get("admin")), admin_url,
                   owns_token=True, ca=ca)

    def change_password(self, current, new):
        """Change the password; it revokes every credential issued before, so carry on with
        the fresh token (and, for a saved login, save it and a certificate signed with it)."""
        answer = self.admin.change_password(current, new)
        cert = key = None
        if self.folder is not None and self.folder.exists():
            keep_login_after_password_change(self.folder, answer, self.client.timeout)
            settings = self.folder.settings()
            cert, key = settings.cert, settings.key
        self.client.set_credentials(answer["token"], ca=self.ca, cert=cert, key=key)
        return answer

    def logout(self):
        """Revoke this session's own token at the admin server (a saved login stays valid
        for the command line); best effort: the token dies at its expiry anyway."""
        if not self.owns_token:
            return
        try:
            self.admin.logout()
        except Exception:  # unreachable, or already refused: nothing more to do here
            pass

    def close(self):
        if self.client is not None:
            self.client.close()
