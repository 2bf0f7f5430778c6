"""``securifile login``, ``logout``, ``renew`` and ``enrol``: a password login that leaves a
short-lived certificate behind (renewed by the client), a logout that revokes the saved
credentials at the admin server, and setting the first password with an e-mailed code.

Login asks the admin server for a token, creates an EC key here (it never leaves this
machine), has a certificate request for it signed, and saves key, certificate, CA, token,
the admin URL and the server list in the user's config folder (see LoginFolder). Later
commands read that folder when no cluster file is given.
"""
import getpass
import sys
from datetime import datetime, timezone
from pathlib import Path

from securifile.client.admin import AdminClient
from securifile.client.credentials import (
    LoginFailed, certificate_dates, login_error, new_key_and_csr, renew, renewal_due,
    revoke_saved,
)
from securifile.client.errors import ClientError, ServerError
from securifile.client.settings import LoginFolder, saved_admin_url
from securifile.common.admin_urls import parse_admin_urls

from .output import UsageError, to_json, when


def read_password(username, from_stdin, stdin=None):
    """From a prompt on a terminal; from the first line of standard input otherwise."""
    stdin = stdin or sys.stdin
    if not from_stdin and stdin.isatty():
        password = getpass.getpass(f"password for {username}: ")
    else:
        password = stdin.readline().rstrip("\r\n")
    if not password:
        raise UsageError("no password given (pipe it in, or use --password-stdin)")
    return password


def read_secret(prompt, from_stdin, stdin=None):
    """One secret: from a prompt on a terminal, else the next line of standard input."""
    stdin = stdin or sys.stdin
    if not from_stdin and stdin.isatty():
        value = getpass.getpass(prompt)
    else:
        value = stdin.readline().rstrip("\r\n")
    if not value:
        raise UsageError(f"nothing given for the {prompt.rstrip(': ')}")
    return value


def read_new_password(from_stdin, stdin=None):
    """A new password: asked twice on a terminal, one line of standard input otherwise."""
    stdin = stdin or sys.stdin
    password = read_secret("new password (12+ characters, hard to guess): ", from_stdin, stdin)
    if not from_stdin and stdin.isatty() and getpass.getpass("again: ") != password:
        raise UsageError("the two passwords differ")
    return password


def warn_plain_text(url):
    """Always printed, whatever --quiet says: encryption is off."""
    print(f"WARNING: {url} is plain HTTP: encryption is disabled, passwords and tokens "
          f"cross the network in the clear", file=sys.stderr)


def enrol(args, env, out, stdin=None):
    """Set the first password with the enrolment code from the account e-mail."""
    folder = LoginFolder.default(env)
    saved = folder.read() if folder is not None and folder.exists() else {}
    admin_url = args.admin or saved_admin_url(saved)
    if not admin_url or not args.user:
        raise UsageError("give the admin server and your user name: --admin URL --user NAME "
                         "(both are in the account e-mail)")
    https = admin_url.lower().startswith("https:")
    if https and not args.ca:
        raise UsageError(f"{admin_url} uses TLS: give its CA certificate with --ca PEM")
    if not https:
        warn_plain_text(admin_url)
    code = read_secret("enrolment code: ", args.password_stdin, stdin)
    password = read_new_password(args.password_stdin, stdin)
    try:
        with AdminClient(admin_url, ca=args.ca, timeout=args.timeout) as admin:
            admin.enrol(args.user, code, password)
    except ServerError as e:
        raise LoginFailed(f"enrolment failed: {e.message} ({e.code})") from e
    except ClientError as e:
        raise login_error(e, admin_url, args.ca) from e
    if not args.quiet:
        print(f"password set for {args.user}; now run: securifile login --admin {admin_url} "
              f"--user {args.user}", file=out)
    return 0


def trusted_cas(given, returned):
    """The CA PEM to keep: the admin's answer, plus the --ca file when that differs."""
    returned = returned.strip() + "\n"
    if given:
        text = Path(given).read_text(encoding="ascii").strip() + "\n"
        if text != returned:
            return returned + text
    return returned


def login(args, env, out, stdin=None):
    folder = LoginFolder.default(env)
    if folder is None:
        raise UsageError("no folder for the login: set HOME or XDG_CONFIG_HOME")
    saved = folder.read() if folder.exists() else {}
    admin_url = args.admin or saved_admin_url(saved)
    if not admin_url:
        raise UsageError("which admin server? give --admin URL (e.g. https://127.0.0.1:8440)")
    same_admin = parse_admin_urls(saved_admin_url(saved)) == parse_admin_urls(admin_url)
    username = args.user or (saved.get("username") if same_admin else None)
    if not username:
        raise UsageError("give your user name: --user NAME")
    https = admin_url.lower().startswith("https:")
    ca = args.ca
    if https and not ca and same_admin and folder.file(folder.CA).is_file():
        ca = str(folder.file(folder.CA))
    if https and not ca:
        raise UsageError(
            f"{admin_url} uses TLS: give the admin server's CA certificate with --ca PEM the "
            f"first time (the cluster's certs/ca.crt); after that the login keeps it. Only an "
            f"http:// admin URL (encryption disabled, for debugging) needs none")
    if ca and not Path(ca).is_file():
        raise UsageError(f"--ca {ca}: no such file")
    if not https:
        warn_plain_text(admin_url)
    password = read_password(username, args.password_stdin, stdin)
    try:
        with AdminClient(admin_url, ca=ca, timeout=args.timeout) as admin:
            account = admin.login(username, password)
            username = account.get("username", username)
            key_pem = cert_pem = ca_pem = None
            signed = {}
            if https:
                key_pem, csr_pem = new_key_and_csr(username)
                signed = admin.sign_csr(csr_pem)
                cert_pem, ca_pem = signed["certificate"], trusted_cas(args.ca, signed["ca"])
            try:
                servers = [s["url"] for s in admin.servers().get("servers", [])]
            except ClientError:
                servers = []
    except (ClientError, OSError) as e:
        if isinstance(e, OSError):  # the --ca file itself
            raise LoginFailed(f"cannot read {ca}: {e.strerror or e}") from e
        raise login_error(e, admin_url, ca) from e
    # The instance that answered first; every instance in admin_urls, for failover.
    info = {"admin_url": admin.url, "admin_urls": admin.urls, "username": username,
            "admin": bool(account.get("admin")),
            "token_expires_at": account.get("expires_at"),
            "account_valid_until": account.get("valid_until"),
            "certificate_not_after": signed.get("not_after"), "servers": servers,
            "logged_in_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    folder.save(info, account["token"], key_pem=key_pem, cert_pem=cert_pem, ca_pem=ca_pem)
    if args.json:
        print(to_json(info | {"folder": str(folder.path)}), file=out)
    elif not args.quiet:
        role = " (administrator)" if info["admin"] else ""
        print(f"logged in to {admin.url} as {username}{role}", file=out)
        print(f"  account valid until  {when(info['account_valid_until'])}", file=out)
        print(f"  token valid until    {when(info['token_expires_at'])}", file=out)
        if https:
            print(f"  certificate until    {when(info['certificate_not_after'])}", file=out)
        print(f"  saved in             {folder.path}", file=out)
    return 0


def logout(args, env, out):
    """Revoke the token and certificate at the admin server, then forget them here."""
    folder = LoginFolder.default(env)
    failed = []
    if folder is not None and folder.exists():
        try:
            failed = revoke_saved(folder, args.timeout)
        except ClientError as e:
            failed = [str(e)]
    gone = folder.remove() if folder is not None else []
    if failed:
        print("WARNING: the admin server did not revoke the saved "
              f"{'; '.join(failed)}: it stays valid until it expires", file=sys.stderr)
    if not args.quiet:
        if gone:
            print(f"logged out: revoked and removed {', '.join(gone)} from {folder.path}",
                  file=out)
        else:
            print("not logged in", file=out)
    return 1 if failed else 0


def renew_if_due(env, timeout, err):
    """Renew the saved certificate before a command when half its life is gone; a failure
    is a warning (the old certificate may still serve)."""
    folder = LoginFolder.default(env)
    if folder is None or not folder.exists():
        return None
    try:
        if not renewal_due(folder):
            return None
        return renew(folder, timeout)
    except (ClientError, ValueError, OSError) as e:
        try:
            _start, end = certificate_dates(folder.file(folder.CERT))
        except (ValueError, OSError):
            end = None
        if end is not None and end <= datetime.now(timezone.utc):
            raise LoginFailed(f"the saved client certificate ran out on {when(end.isoformat())} "
                              f"and could not be renewed ({e}): run 'securifile login' "
                              "again") from e
        print(f"WARNING: could not renew the client certificate: {e}", file=err)
        return None


def renew_command(args, env, out):
    """``securifile renew``: a fresh certificate now, whatever its age."""
    folder = LoginFolder.default(env)
    if folder is None or not folder.exists():
        raise UsageError("not logged in: run 'securifile login' first")
    if not folder.file(folder.CERT).is_file():
        raise UsageError("this login has no certificate (plain-HTTP admin server)")
    not_after = renew(folder, args.timeout)
    if not args.quiet:
        print(f"certificate renewed until {when(not_after)}", file=out)
    return 0
