"""Simulated hosts for the deployment test: a network namespace and a file system of its own.

There is no systemd in the test container, so a host is made of what a unit needs: a network
namespace (test/netns.py) and, for every command run "on" the host, a fresh mount namespace
in which /etc, /var and /opt are overlays whose upper layers are that host's folder
(``root``). What an operator writes to /etc/securifile on one host (configuration, keys, the
``securifile`` user in /etc/passwd) is thus seen by that host's processes only, and by the
test as plain files under ``root``.

A unit's ``ExecStart=`` runs under an approximation of its sandbox, built from the unit file:
``User=``/``Group=`` and ``NoNewPrivileges=`` and an empty ``CapabilityBoundingSet=`` through
setpriv(1); ``ProtectSystem=strict`` as every mount read-only but ``StateDirectory=`` and
``ReadWritePaths=``; ``PrivateTmp=`` a tmpfs on /tmp and /var/tmp; ``ProtectHome=`` empty
/home and /root; ``UMask=``; a clean environment. The other options are checked by
``systemd-analyze verify`` only. One allowance: this machine's Python lives under
/root/.pyenv, so that folder alone is put back into the empty /root (on a host Python is in
/usr).
"""
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]  # the checkout whose venv stands in for the install

OVERLAID = ("etc", "var", "opt")


def read_unit(path):
    """The [Service] section of a unit file as {key: [values]} (a key may repeat)."""
    service, section = {}, None
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            key, _, value = line.partition("=")
            service.setdefault(key.strip(), []).append(value.strip())
    return service


def interpreter_prefix():
    """This machine's Python installation when it hides under /root or /home, else None."""
    prefix = Path(sys.base_prefix).resolve()
    return prefix if prefix.parts[1:2] in (("root",), ("home",)) else None


class Host:
    """One host: ``netns`` (None: the test's own network) and the folder of its files."""

    def __init__(self, name, netns, root, venv):
        self.name, self.netns, self.root, self.venv = name, netns, Path(root), Path(venv)
        for d in OVERLAID:
            (self.root / d).mkdir(parents=True, exist_ok=True)
            (self.root / ".work" / d).mkdir(parents=True, exist_ok=True)
        (self.root / "opt" / "securifile").mkdir(exist_ok=True)
        link = self.root / "opt" / "securifile" / "venv"
        if not link.is_symlink():
            link.symlink_to(self.venv)  # stands in for `python3 -m venv` + `pip install`

    def path(self, inside):
        """Where a file the host sees at ``inside`` (under /etc, /var or /opt) lies here."""
        return self.root / Path(inside).relative_to("/")

    def _mounts(self):
        lines = [f"mount -t overlay overlay -o lowerdir=/{d},upperdir={self.root / d},"
                 f"workdir={self.root / '.work' / d} /{d}" for d in OVERLAID]
        prefix = interpreter_prefix()
        if prefix is not None:
            top = "/" + prefix.parts[1]
            lines += [f"mount --bind {prefix} /opt/securifile",  # a stash while /root is covered
                      f"mount -t tmpfs -o mode=0755 tmpfs {top}", f"mkdir -p {prefix}",
                      f"mount --move /opt/securifile {prefix}"]
        return lines

    def _argv(self, script):
        shell = ["unshare", "--mount", "--propagation", "private", "sh", "-ec",
                 "\n".join(script)]
        return ["ip", "netns", "exec", self.netns, *shell] if self.netns else shell

    def run(self, command, user=None, input=None, timeout=60, check=True):
        """Run a shell command on the host, as root or as ``user``; returns CompletedProcess."""
        if user:
            command = f"runuser -u {user} -- sh -ec {shlex.quote(command)}"
        r = subprocess.run(self._argv([*self._mounts(), command]), input=input,
                           capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"on {self.name}: {command}\nexit {r.returncode}\n{r.stderr}")
        return r

    def sandbox(self, unit, instance=None):
        """The shell lines that set up ``unit``'s sandbox and exec its ExecStart (the PID
        stays the server's: kill reaches it)."""
        service = read_unit(unit)
        one = {k: v[-1] for k, v in service.items()}
        user, group = one["User"], one.get("Group", one["User"])
        writable = [f"/var/lib/{d}" for v in service.get("StateDirectory", []) for d in v.split()]
        lines = []
        under_tmp = one.get("PrivateTmp") == "yes" and (
            REPO.parts[1:2] == ("tmp",) or REPO.parts[1:3] == ("var", "tmp"))
        repo = shlex.quote(str(REPO))
        if under_tmp:  # stashed before the file systems turn read-only (see PrivateTmp below)
            lines.append(f"mount --bind {repo} /opt/securifile")
        for folder in writable:
            lines.append(f"install -d -o {user} -g {group} -m "
                         f"{one.get('StateDirectoryMode', '0755')} {folder}")
        writable += [p for v in service.get("ReadWritePaths", []) for p in v.split()]
        if one.get("ProtectSystem") == "strict":
            lines += [f"mount -o remount,bind,ro {m}" for m in ("/", "/etc", "/var", "/opt")]
            for folder in writable:
                lines += [f"mount --bind {folder} {folder}",
                          f"mount -o remount,bind,rw {folder}"]
        if one.get("PrivateTmp") == "yes":
            # The stand-in install (this checkout, its venv inside) may itself live under /tmp
            # (a CI clone): stashed on /opt/securifile while the tmpfs covers it, then put
            # back where the venv's paths expect it.
            lines += ["mount -t tmpfs -o mode=1777 tmpfs /tmp",
                      "mount -t tmpfs -o mode=1777 tmpfs /var/tmp"]
            if under_tmp:
                lines += [f"mkdir -p {repo}", f"mount --no-mtab --move /opt/securifile {repo}"]
        if one.get("ProtectHome") == "yes":
            prefix = interpreter_prefix()
            lines += [f"mount -t tmpfs -o ro,mode=0755 tmpfs {top}" for top in ("/home", "/root")
                      if prefix is None or prefix.parts[1] != top[1:]]
        if "UMask" in one:
            lines.append(f"umask {one['UMask']}")
        setpriv = ["setpriv", f"--reuid={user}", f"--regid={group}", "--init-groups"]
        if one.get("NoNewPrivileges") == "yes":
            setpriv.append("--no-new-privs")
        if "CapabilityBoundingSet" in one and not one["CapabilityBoundingSet"].strip():
            setpriv += ["--bounding-set=-all", "--inh-caps=-all"]
        command = one["ExecStart"].replace("%i", instance or "")
        env = ["env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8",
               f"USER={user}", f"LOGNAME={user}", f"HOME={self.passwd(user)[5]}"]
        lines.append(f"exec {shlex.join(env + setpriv)} -- {command}")
        return lines

    def passwd(self, user):
        """``user``'s fields in the host's own /etc/passwd."""
        for line in self.path("/etc/passwd").read_text().splitlines():
            fields = line.split(":")
            if fields[0] == user:
                return fields
        raise KeyError(f"no user {user} on {self.name}")

    def spawn(self, unit, log_path, instance=None):
        """Start ``unit``'s ExecStart on the host, its output (the journal) to ``log_path``."""
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            return subprocess.Popen(self._argv([*self._mounts(), *self.sandbox(unit, instance)]),
                                    stdout=log, stderr=log, stdin=subprocess.DEVNULL)


def uid_of(host, user):
    """``user``'s uid in the host's own /etc/passwd."""
    return int(host.passwd(user)[2])


def process_status(pid):
    """/proc/PID/status as {field: value}."""
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)

