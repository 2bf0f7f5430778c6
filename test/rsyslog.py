"""Runs the real rsyslog daemon with the shipped config (scripts/rsyslog.conf) for a test."""
import os
import re
import shutil
import signal
import socket
import subprocess
from pathlib import Path

from securifile.launcher.certs import rsyslog_permitted_peers

from .helpers import wait_for

TEMPLATE = Path(__file__).resolve().parent.parent / "scripts" / "rsyslog.conf"


def find_rsyslogd():
    """The rsyslogd binary, or None. Not always on a non-root PATH, hence /usr/sbin."""
    found = shutil.which("rsyslogd")
    if found:
        return found
    for candidate in ("/usr/sbin/rsyslogd", "/sbin/rsyslogd"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def has_gtls_driver():
    """The shipped config needs rsyslog's GnuTLS stream driver (Debian: rsyslog-gnutls)."""
    return any(Path(d).glob("**/lmnsd_gtls.so") for d in ("/usr/lib", "/usr/lib64")
               if Path(d).is_dir())


def render_config(template, **values):
    """Replace each @NAME@ with values[name.lower()]; every placeholder must be given."""
    def replace(m):
        key = m.group(1).lower()
        if key not in values:
            raise KeyError(f"no value for @{m.group(1)}@ in the rsyslog template")
        return str(values[key])
    return re.sub(r"@([A-Z_]+)@", replace, template)


def _free_port(host):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _accepts(host, port):
    # A bare TCP probe: rsyslogd logs a failed handshake for it, which is harmless.
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


class RsyslogDaemon:
    """``rsyslogd -n`` on a free loopback port, TLS with the given certificates."""

    def __init__(self, root, ca_file, cert_file, key_file, host="127.0.0.1", binary=None,
                 nodes=("node1",)):
        self.root = Path(root)
        self.host = host
        self.binary = binary or find_rsyslogd()
        self.ca_file, self.cert_file, self.key_file = ca_file, cert_file, key_file
        self.nodes = list(nodes)
        self.work_dir = self.root / "work"
        self.conf = self.root / "rsyslog.conf"
        self.pidfile = self.root / "rsyslog.pid"
        self.output = self.root / "audit.log"
        self.console = self.root / "rsyslogd.out"
        self.port = None
        self.proc = None

    def start(self, timeout=10.0):
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.port = _free_port(self.host)
        self.conf.write_text(render_config(
            TEMPLATE.read_text(), port=self.port, address=self.host, work_dir=self.work_dir,
            ca_file=self.ca_file, cert_file=self.cert_file, key_file=self.key_file,
            output_file=self.output, permitted_peers=rsyslog_permitted_peers(self.nodes)))
        check = subprocess.run([self.binary, "-N1", "-f", str(self.conf)],
                               capture_output=True, text=True, timeout=timeout)
        if check.returncode != 0:
            raise RuntimeError(f"rsyslogd rejects {self.conf}:\n{check.stdout}{check.stderr}")
        with open(self.console, "wb") as out:
            self.proc = subprocess.Popen(
                [self.binary, "-n", "-f", str(self.conf), "-i", str(self.pidfile)],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for(lambda: self.proc.poll() is not None or _accepts(self.host, self.port),
                     timeout=timeout, what=f"rsyslogd listening on {self.port}")
        except AssertionError:
            self.stop()
            raise
        if self.proc.poll() is not None:
            raise RuntimeError(f"rsyslogd exited with {self.proc.returncode}:\n{self.log()}")
        return self

    def log(self):
        """What rsyslogd printed (its own errors, e.g. a missing ossl driver)."""
        return self.console.read_text(errors="replace") if self.console.exists() else ""

    def lines(self):
        if not self.output.exists():
            return []
        return self.output.read_bytes().decode("utf-8", "replace").splitlines()

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
