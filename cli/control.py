"""Commands the admin server answers: sharing, accounts, and (for administrators) servers.

Each prints a readable table or sentence, or with ``--json`` the server's JSON as is.
"""
import sys

from securifile.client.credentials import keep_login_after_password_change
from securifile.client.settings import LoginFolder, saved_admin_url
from securifile.common.admin_urls import parse_admin_urls

from .output import format_table, human_size, quota_text, to_json, usage_text, when

COMMANDS = ("whoami", "users", "share", "unshare", "grants", "shared", "passwd", "admin")


def membership_cell(server):
    """'member', or 'draining (N files left)' while a drain is under way."""
    state = server.get("membership", "member")
    left = server.get("files_left")
    return f"{state} ({left} files left)" if state == "draining" and left is not None else state


def _target_name(owner, path):
    return f"{owner}/{path}" if path else f"{owner}/"


def _enrolment_lines(result, whom):
    if result.get("email_sent"):
        until = when(result.get("enrolment_expires_at"))
        return [f"e-mailed to {whom}" + (f" (the enrolment code works once, until {until})"
                                          if result.get("enrolment_expires_at") else "")]
    lines = [f"the e-mail to {whom} was NOT sent: {result.get('email_error', 'unknown error')}"]
    if result.get("enrolment_code"):
        lines.append(f"enrolment code (give it to the user; it works once, until "
                     f"{when(result.get('enrolment_expires_at'))}): {result['enrolment_code']}")
    return lines


class ControlCommands:
    """The subcommands, each given parsed arguments and an AdminClient."""

    def __init__(self, admin, args, settings, env=None, out=None):
        self.admin, self.args, self.settings = admin, args, settings
        self.env = env
        self.out = out or sys.stdout

    def run(self):
        name = self.args.command
        if name == "admin":
            name = "admin_" + self.args.admin_command.replace("-", "_")
        return getattr(self, name)()

    def say(self, text):
        if not self.args.quiet:
            print(text, file=self.out, flush=True)

    def emit(self, value, text):
        """``value`` as JSON with --json, else ``text`` (a string, or a callable making one)."""
        if self.args.json:
            print(to_json(value), file=self.out)
        else:
            self.say(text() if callable(text) else text)
        return 0

    # -- everyone --

    def whoami(self):
        me = self.admin.me()
        me["admin_url"] = self.admin.url
        folder = LoginFolder.default(self.env)
        saved = folder.read() if folder is not None and folder.exists() else {}
        if parse_admin_urls(saved_admin_url(saved)) != self.admin.urls:
            saved = {}  # these credentials came from elsewhere (a cluster file)

        def text():
            lines = [f"{me['username']}{' (administrator)' if me.get('admin') else ''}",
                     f"  e-mail              {me.get('email') or '-'}",
                     f"  account valid until {when(me.get('valid_until'))}",
                     f"  storage used        {usage_text(me)}",
                     f"  admin server        {self.admin.url}"]
            if saved:
                lines.append(f"  token valid until   {when(saved.get('token_expires_at'))}")
                if saved.get("certificate_not_after"):
                    lines.append(f"  certificate until   {when(saved['certificate_not_after'])}")
                lines.append(f"  login saved in      {folder.path}")
            return "\n".join(lines)

        return self.emit(me, text)

    def passwd(self):
        from .login import read_new_password, read_secret
        stdin = sys.stdin
        current = read_secret("current password: ", self.args.password_stdin, stdin)
        new = read_new_password(self.args.password_stdin, stdin)
        answer = self.admin.change_password(current, new)
        # The change revoked every credential issued before, the saved ones too: keep this
        # device logged in with the fresh token (and a certificate signed with it).
        folder = LoginFolder.default(self.env)
        saved = folder is not None and folder.exists() and \
            (folder.read().get("admin_url"), folder.read().get("username")) == \
            (self.admin.url, answer.get("username"))
        if saved:
            keep_login_after_password_change(folder, answer, self.args.timeout)
        return self.emit(
            {"username": self.settings.username, "changed": True, "login_renewed": saved},
            "password changed; your other sessions and devices must log in again"
            + ("" if saved else " (so must this one: no saved login to renew)"))

    def users(self):
        if getattr(self.args, "name", None):
            found = self.admin.find_user(self.args.name)
            if found is None:
                print(f"securifile: no user {self.args.name}", file=sys.stderr)
                return 1
            users = [found]
        else:
            users = self.admin.users()
        return self.emit({"users": users}, lambda: format_table(
            ["user", "e-mail", "admin", "valid until", "files", "volume", "quota"],
            [[u["username"], u.get("email"), "yes" if u.get("admin") else "",
              when(u.get("valid_until")), u.get("file_count", 0), human_size(u.get("total_bytes")),
              quota_text(u.get("quota_bytes")) if "quota_bytes" in u else None]
             for u in users]))

    def share(self):
        a = self.args
        result = self.admin.grant(a.target, a.user, a.role)
        name = _target_name(result.get("owner"), result.get("path"))
        return self.emit(result, f"{name}: {a.user} is now {a.role}")

    def unshare(self):
        a = self.args
        self.admin.revoke(a.target, a.user)
        return self.emit({"target": a.target, "username": a.user, "revoked": True},
                         f"{a.target}: {a.user} no longer has access")

    def grants(self):
        result = self.admin.grants(self.args.target)
        name = _target_name(result.get("owner"), result.get("path"))

        def text():
            lines = [f"{name}  (owner {result.get('owner')})"]
            if result.get("grants"):
                lines.append(format_table(["user", "role", "granted by"],
                                          [[g["username"], g["role"], g.get("granted_by")]
                                           for g in result["grants"]]))
            else:
                lines.append("no grants: only the owner has access")
            return "\n".join(lines)

        return self.emit(result, text)

    def shared(self):
        grants = self.admin.shared()
        if not grants and not self.args.json:
            self.say("nothing is shared with you")
            return 0
        return self.emit({"shared": grants}, lambda: format_table(
            ["shared", "role"], [[_target_name(g["owner"], g["path"]), g["role"]] for g in grants]))

    # -- administrators --

    def admin_user_add(self):
        a = self.args
        password = None
        if a.password_stdin:
            password = sys.stdin.readline().rstrip("\r\n") or None
        result = self.admin.add_user(a.name, a.email, a.valid_days, password=password,
                                     admin=a.admin, quota_bytes=a.quota)

        def text():
            lines = [f"created {result['username']}{' (administrator)' if result.get('admin') else ''}"
                     f", valid until {when(result.get('valid_until'))}, quota "
                     f"{quota_text(result.get('quota_bytes'))}"]
            lines += _enrolment_lines(result, result.get("email"))
            return "\n".join(lines)

        return self.emit(result, text)

    def admin_user_set_quota(self):
        result = self.admin.set_quota(self.args.name, self.args.size)
        return self.emit(result, f"{self.args.name}: quota {quota_text(result['quota_bytes'])}; "
                                 f"uses {usage_text(result)}")

    def admin_user_enrol(self):
        result = self.admin.reset_enrolment(self.args.name)
        return self.emit(result, lambda: "\n".join(
            [f"new enrolment code for {self.args.name}; older codes no longer work"]
            + _enrolment_lines(result, self.args.name)))

    def admin_user_remove(self):
        self.admin.remove_user(self.args.name)
        return self.emit({"username": self.args.name, "removed": True},
                         f"removed {self.args.name}")

    def admin_server_add(self):
        result = self.admin.add_server(self.args.name, self.args.url)
        return self.emit(result, f"{self.args.name} added (membership epoch {result['epoch']}); "
                                 f"start it, the others verify it, then it takes new copies")

    def admin_server_drain(self):
        result = self.admin.drain_server(self.args.name)
        return self.emit(result, f"{self.args.name} draining (membership epoch "
                                 f"{result['epoch']}); 'securifile admin servers' shows the "
                                 f"files left on it")

    def admin_server_remove(self):
        result = self.admin.remove_server(self.args.name)
        return self.emit(result, f"{self.args.name} removed (membership epoch {result['epoch']})")

    def admin_offline(self):
        result = self.admin.set_server_state(self.args.node, "offline")
        return self.emit(result, f"{self.args.node}: taken offline (it stops answering; the "
                                 f"others mark it down)")

    def admin_online(self):
        result = self.admin.set_server_state(self.args.node, "online")
        return self.emit(result, f"{self.args.node}: back online (the others check its files "
                                 f"before it serves users again)")

    def admin_servers(self):
        listing = self.admin.servers()

        def text():
            rows = [[s["name"], s["url"], s.get("status"), s.get("admin_state"), when(s.get("since")),
                     human_size(s.get("used_bytes")), human_size(s.get("available_bytes")),
                     str(s.get("under_replicated", 0)), membership_cell(s)]
                    for s in listing.get("servers", [])]
            lines = [format_table(["name", "url", "status", "admin", "since", "used", "available",
                                   "under-replicated", "membership"], rows),
                     f"replicas per file: {listing.get('replicas')}"]
            if "epoch" in listing:
                lines.append(f"membership epoch {listing['epoch']}"
                             + ("" if listing.get("committed") else
                                " (not yet known to a majority: changes wait)"))
            return "\n".join(lines)

        if listing.get("tls") is False:  # never hidden, not even by --quiet or --json
            print("WARNING: ENCRYPTION DISABLED (debug mode)", file=sys.stderr)
        return self.emit(listing, text)
