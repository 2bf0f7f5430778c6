"""A 4-host cluster deployed as docs/DEPLOY.md says, from scripts/deploy/ and scripts/systemd/.

Five hosts, each a network namespace with a file system of its own (test/hosts.py): the admin
server's host and four node hosts on link-local addresses. Each host gets the `securifile`
user, its configuration written from the example files (only the addresses changed, and
mail to the outbox: there is no mail server here), and certificates issued on the admin host
for its address and copied over. There is no systemd in the container: every server runs the
exact ``ExecStart=`` of its unit, as the unit's user, under an approximation of the unit's
sandbox (test/hosts.py says which options). Then files go up through one host and come down
through another, a host is killed, the others serve on, and it comes back.
"""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from securifile.common.certnames import CertLayout
from securifile.common.config import load_config
from securifile.launcher.cluster import ADMIN_NAME

from .helpers import AdminApi, wait_for
from .hosts import Host, process_status, uid_of
from .netns import ADMIN_ADDRESS, NetnsCluster, lab_or_skip, server_address

REPO = Path(__file__).resolve().parent.parent
EXAMPLES, UNITS = REPO / "scripts" / "deploy", REPO / "scripts" / "systemd"
NODE_UNIT, ADMIN_UNIT = UNITS / "securifile-node@.service", UNITS / "securifile-admin.service"
VENV = Path(sys.prefix)  # the venv running the tests stands in for /opt/securifile/venv
CONFIG = "/etc/securifile/securifile.toml"
CERTS = "/etc/securifile/certs"
BIN = "/opt/securifile/venv/bin"
EXAMPLE_ADMIN, EXAMPLE_NODE = "192.0.2.10", "192.0.2.1{}"  # the addresses the examples use
NODES = 4
ADMIN_PASSWORD = "lantern quarry velvet 41"
READY = 60.0  # a loaded machine: start, verification, failure detection

# docs/DEPLOY.md, "Install on each host" (after pip install into /opt/securifile/venv).
INSTALL = """
id -u securifile >/dev/null 2>&1 || useradd --system --user-group \
    --home-dir /var/lib/securifile --no-create-home --shell /usr/sbin/nologin securifile
install -d -m 0755 /etc/securifile
install -d -o securifile -g securifile -m 0700 /etc/securifile/certs /var/lib/securifile
install -o root -g securifile -m 0640 {config} /etc/securifile/securifile.toml
"""
# docs/DEPLOY.md, "Certificates": on the admin host, one certificate per server address.
ISSUE = f"{BIN}/securifile-certs --dir {CERTS} server {{name}}{{role}} --host {{address}}"
# docs/DEPLOY.md, "Certificates": on each node host, the four files copied from the admin host.
RECEIVE = f"""
install -d -o securifile -g securifile -m 0700 {CERTS}/servers
install -o securifile -g securifile -m 0644 {{incoming}}/ca.crt {{incoming}}/token-signing.pub {CERTS}/
install -o securifile -g securifile -m 0600 {{incoming}}/{{name}}.crt {{incoming}}/{{name}}.key {CERTS}/servers/
"""
# docs/DEPLOY.md, "The first administrator".
ACCOUNT = (f"{BIN}/securifile-admin --config {CONFIG} user add admin --email admin@example.org "
           "--admin --password-stdin")


def host_config(example):
    """An example configuration with this lab's addresses (and mail to the outbox)."""
    text = example.read_text().replace(EXAMPLE_ADMIN, ADMIN_ADDRESS)
    for i in range(1, NODES + 1):
        text = text.replace(EXAMPLE_NODE.format(i), server_address(i))
    return re.sub(r'(?m)^mail_mode = "smtp"', 'mail_mode = "outbox"', text)


class Deployment(NetnsCluster):
    """The deployed cluster, as seen from the client's namespace; servers start from their
    units on their own hosts (so Cluster's kill, restart and wait_ready work as usual)."""

    def __init__(self, lab, hosts, client_config, ca_folder):
        super().__init__(client_config.parent, client_config, {"username": "alice"}, lab)
        self.hosts = hosts
        self.layout = CertLayout(ca_folder)

    def start_node(self, name):
        unit = ADMIN_UNIT if name == ADMIN_NAME else NODE_UNIT
        instance = None if name == ADMIN_NAME else name
        self.procs[name] = self.hosts[name].spawn(unit, self.data_dir / "logs" / f"{name}.log",
                                                  instance)
        return self.procs[name]

    def start_admin(self, name=ADMIN_NAME):
        return self.start_node(name)


def provision(tmp, lab):
    """Install, configure and certify every host as docs/DEPLOY.md says; returns the hosts."""
    hosts = {ADMIN_NAME: Host(ADMIN_NAME, lab.admin, tmp / ADMIN_NAME, VENV)}
    hosts.update({f"node{i}": Host(f"node{i}", lab.nodes[i - 1], tmp / f"node{i}", VENV)
                  for i in range(1, NODES + 1)})
    for name, host in hosts.items():
        config = tmp / f"{name}.toml"
        config.write_text(host_config(EXAMPLES / ("admin.toml.example" if name == ADMIN_NAME
                                                  else "node.toml.example")))
        host.run(INSTALL.format(config=config))
    admin = hosts[ADMIN_NAME]
    admin.run(ISSUE.format(name=ADMIN_NAME, role=" --role admin", address=ADMIN_ADDRESS),
              user="securifile")
    for i in range(1, NODES + 1):
        name = f"node{i}"
        admin.run(ISSUE.format(name=name, role="", address=server_address(i)),
                  user="securifile")
        incoming = tmp / "transfer" / name  # scp from the admin host to the node host
        incoming.mkdir(parents=True)
        certs = admin.path(CERTS)
        for f in [certs / "ca.crt", certs / "token-signing.pub", certs / "servers" / f"{name}.crt",
                  certs / "servers" / f"{name}.key"]:
            shutil.copy(f, incoming / f.name)
        hosts[name].run(RECEIVE.format(incoming=incoming, name=name))
        shutil.rmtree(incoming)
    admin.run(ACCOUNT, user="securifile", input=ADMIN_PASSWORD + "\n")
    return hosts


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    if not VENV.joinpath("bin", "securifile-node").exists():
        pytest.skip(f"no installed SecuriFile in {VENV} to stand in for /opt/securifile/venv")
    lab = lab_or_skip(NODES)
    cluster = None
    try:
        tmp = tmp_path_factory.mktemp("deploy")
        hosts = provision(tmp, lab)
        client_config = tmp / "client.toml"
        client_config.write_text(host_config(EXAMPLES / "node.toml.example"))
        cluster = Deployment(lab, hosts, client_config, hosts[ADMIN_NAME].path(CERTS))
        cluster.start(timeout=READY)
        yield cluster
    finally:
        try:
            if cluster is not None:
                cluster.stop()
        finally:
            lab.remove()


def test_the_units_pass_systemd_analyze_verify(tmp_path):
    """Syntax, known options and an executable ExecStart (found in the host's /opt)."""
    if shutil.which("systemd-analyze") is None or shutil.which("unshare") is None:
        pytest.skip("systemd-analyze or unshare(1) not installed (Debian: systemd, util-linux)")
    host = Host("verify", None, tmp_path, VENV)
    r = host.run(f"systemd-analyze verify {NODE_UNIT} {ADMIN_UNIT}", check=False)
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr


def test_the_example_configurations_describe_one_cluster():
    node = load_config(EXAMPLES / "node.toml.example", env={})
    admin = load_config(EXAMPLES / "admin.toml.example", env={})
    for key in ("servers", "replicas", "digest", "admin_url", "syslog_port", "repair_after",
                "certs_dir", "data_dir", "tls"):
        assert getattr(node, key) == getattr(admin, key), key
    assert [s.url for s in node.servers] == [
        f"https://{EXAMPLE_NODE.format(i)}:8441" for i in range(1, NODES + 1)]


def test_the_guide_shows_the_commands_this_test_runs():
    guide = (REPO / "docs" / "DEPLOY.md").read_text().replace("$SF/", BIN + "/")
    guide = re.sub(r"\\\n\s*", "", guide)  # continued lines joined
    commands = [*INSTALL.format(config="node.toml").strip().split("\n"),
                *RECEIVE.format(incoming="incoming", name="node1").strip().split("\n"),
                ISSUE.format(name="admin", role=" --role admin", address=EXAMPLE_ADMIN),
                ISSUE.format(name="node1", role="", address=EXAMPLE_NODE.format(1)), ACCOUNT]
    for command in commands:
        assert " ".join(command.split()) in " ".join(guide.split()), command


def test_servers_run_as_the_units_user_without_privileges(deployment):
    for name, host in deployment.hosts.items():
        uid = uid_of(host, "securifile")
        assert uid != 0
        status = process_status(deployment.procs[name].pid)
        assert status["Uid"].split()[0] == str(uid), (name, status["Uid"])
        assert status["NoNewPrivs"] == "1" and int(status["CapBnd"], 16) == 0, (name, status)
        data = host.path("/var/lib/securifile")
        assert data.stat().st_uid == uid and data.stat().st_mode & 0o777 == 0o700
    key = deployment.hosts["node2"].path(f"{CERTS}/servers/node2.key")
    assert key.stat().st_mode & 0o777 == 0o600
    assert not deployment.hosts["node2"].path(f"{CERTS}/ca.key").exists()
    assert not deployment.hosts["node2"].path(f"{CERTS}/servers/node1.key").exists()


def test_upload_download_and_failover_across_hosts(deployment):
    admin = AdminApi(deployment, "admin", ADMIN_PASSWORD)
    admin.add_user("alice")
    api = admin.as_user("alice").node_api()
    data, later = os.urandom(300_000), os.urandom(70_000)
    r = api.put("node1", "alice/deploy/a.bin", data)
    assert r.status == 201, r
    holders = [r.json()["origin"], *(c["server"] for c in r.json()["replicas"])]
    assert len(holders) == 3 and not r.json().get("under_replicated"), r.json()
    for node in deployment.names:  # downloads through every host
        _, got = api.follow(node, "GET", "alice/deploy/a.bin")
        assert got.status == 200 and got.body == data, (node, got)
    for node in holders:  # the bytes on each holder's own disk
        host = deployment.hosts[node]
        assert host.path(f"/var/lib/securifile/nodes/{node}/files/alice/deploy/a.bin") \
            .read_bytes() == data

    victim = holders[0]
    others = [n for n in deployment.names if n != victim]
    deployment.kill(victim)
    wait_for(lambda: all(api.sees(o, victim, "down") for o in others), READY,
             what=f"{', '.join(others)} to see {victim} down")
    for node in others:
        _, got = api.follow(node, "GET", "alice/deploy/a.bin")
        assert got.status == 200 and got.body == data, (node, got)
    r = api.put(others[0], "alice/deploy/while-down.bin", later)
    assert r.status == 201, r
    assert api.follow(others[-1], "GET", "alice/deploy/while-down.bin")[1].body == later

    deployment.restart(victim, timeout=READY)
    wait_for(lambda: all(api.sees(o, victim, "running") for o in others), READY,
             what=f"{victim} running again in every view")
    for path, body in (("alice/deploy/a.bin", data), ("alice/deploy/while-down.bin", later)):
        _, got = api.follow(victim, "GET", path)
        assert got.status == 200 and got.body == body, (path, got)

    # Every node's audit records reach the admin host's receiver over TLS.
    audit = deployment.hosts[ADMIN_NAME].path("/var/lib/securifile/admin/audit.log")
    wait_for(lambda: audit.exists() and all(f" {n} securifile-node " in audit.read_text()
                                            for n in deployment.names), READY,
             what="audit records from every node host")


def test_a_server_certificate_names_its_hosts_address(deployment):
    cert = deployment.hosts["node3"].path(f"{CERTS}/servers/node3.crt")
    text = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", cert],
                          capture_output=True, text=True, check=True).stdout
    assert f"IP Address:{server_address(3)}" in text and "node3.node.securifile" in text
