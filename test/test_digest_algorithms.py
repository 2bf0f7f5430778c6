"""Probe tests: every digest algorithm a cluster can be configured with works end to end.

One cluster per algorithm (real processes, TLS). The CLI and the client (which the TUI uses)
always declare SHA-256; curl users declare what they like. The node checks each declared
algorithm it knows, stores its own, and the client verifies downloads in whatever algorithm
the node names in ``Repr-Digest``. Reads are not verified by the node here and the scrubber
is off, so a copy damaged on disk reaches the client, which must notice it.
"""
import base64
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from securifile.client.errors import DigestMismatch
from securifile.client.storage import Client

from .helpers import Api, disk_copy

CLI = Path(sys.executable).with_name("securifile")
HASHLIB = {"sha1": "sha1", "sha256": "sha256", "sha512": "sha512", "sha3-256": "sha3_256"}
TOKEN = {"sha1": "sha", "sha256": "sha-256", "sha512": "sha-512", "sha3-256": "sha3-256"}


def field(token, hashname, data):
    return f"{token}=:{base64.b64encode(hashlib.new(hashname, data).digest()).decode()}:"


def cli(cluster, *args):
    cmd = [str(CLI)] if CLI.exists() else [sys.executable, "-m", "securifile.cli.main"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECURIFILE_")}
    r = subprocess.run(cmd + ["--cluster", str(cluster.data_dir / "cluster.json"), "--no-progress",
                              *map(str, args)], capture_output=True, text=True, env=env,
                       timeout=60)
    assert r.returncode == 0, f"securifile {' '.join(map(str, args))}: {r.stderr}{r.stdout}"
    return r.stdout


def curl(cluster, node, remote, local, *headers):
    """``curl -T`` with the user's certificate; (status, JSON body)."""
    user = cluster.user
    cmd = ["curl", "-sS", "--cacert", str(cluster.layout.ca_cert), "--cert", user["cert"],
           "--key", user["key"], "-T", str(local), "-o", "-", "-w", "\n%{http_code}",
           f"{cluster.url(node)}/files/{remote}"]
    for h in headers:
        cmd[1:1] = ["-H", h]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
    body, _, status = out.rpartition("\n")
    return int(status), json.loads(body)


def client_for(cluster):
    return Client([cluster.url(n) for n in cluster.names], ca=str(cluster.layout.ca_cert),
                  cert=cluster.user["cert"], key=cluster.user["key"], connect_timeout=5)


def nothing_stored(cluster, api, rel):
    """No node has the file, in its namespace or half-written in its temp folder."""
    for node in cluster.names:
        assert not disk_copy(cluster, node, "alice", rel).exists(), node
        assert not any((cluster.cfg.node_data_dir(node) / "tmp").iterdir()), node
    return api.get("node1", f"alice/{rel}").status == 404


@pytest.mark.parametrize("algorithm", ["sha1", "sha256", "sha512", "sha3-256"])
def test_uploads_downloads_and_refusals_with_each_algorithm(make_cluster, tmp_path, algorithm):
    cluster = make_cluster(servers=3, replicas=1, digest=algorithm, verify_reads=False,
                           scrub_files_per_second=0)
    api = Api(cluster)
    hashname = HASHLIB[algorithm]

    # The CLI: upload declares SHA-256, download verifies in the cluster's algorithm.
    data = os.urandom(300_000)
    src = tmp_path / "cli.bin"
    src.write_bytes(data)
    record, = json.loads(cli(cluster, "put", src, "alice/cli.bin", "--json"))
    assert record["algorithm"] == algorithm
    assert record["digest"] == hashlib.new(hashname, data).hexdigest()
    assert len(record["replicas"]) == 1 and not record["under_replicated"]
    cli(cluster, "get", "alice/cli.bin", tmp_path / "cli.out")
    assert (tmp_path / "cli.out").read_bytes() == data
    for node in [record["origin"]] + [r["server"] for r in record["replicas"]]:
        assert disk_copy(cluster, node, "alice", "cli.bin").read_bytes() == data

    # The client, as the TUI calls it: put a file, download it verified in the algorithm.
    small = tmp_path / "tui.txt"
    small.write_bytes(b"typed in the terminal client\n" * 100)
    with client_for(cluster) as client:
        record = client.put(small, "alice/tui.txt")
        assert record["algorithm"] == algorithm
        got = tmp_path / "tui.out"
        info = client.get("alice/tui.txt", got)
        assert got.read_bytes() == small.read_bytes()
        assert info["algorithm"] == algorithm and info["verified"] is True
        assert info["digest"] == hashlib.new(hashname, small.read_bytes()).hexdigest()

        # A copy damaged on disk (same size) is caught by the client in that algorithm.
        for node in [record["origin"]] + [r["server"] for r in record["replicas"]]:
            path = disk_copy(cluster, node, "alice", "tui.txt")
            path.write_bytes(path.read_bytes().upper())
        with pytest.raises(DigestMismatch):
            client.get("alice/tui.txt", tmp_path / "damaged.out")
        assert not (tmp_path / "damaged.out").exists()

    # A wrong Content-Digest, in SHA-256 and in the cluster's own algorithm: refused, and
    # neither a new file nor a new version of an old one appears anywhere.
    body = b"the real bytes"
    for token, h in {("sha-256", "sha256"), (TOKEN[algorithm], hashname)}:
        r = api.put("node2", "alice/wrong.bin", body,
                    headers={"Content-Digest": field(token, h, b"other bytes")})
        assert r.status == 400 and r.json()["error"]["code"] == "digest_mismatch", (token, r)
        assert nothing_stored(cluster, api, "wrong.bin")
        _, r = api.follow("node2", "PUT", "alice/cli.bin", body=body,
                          headers={"Content-Digest": field(token, h, b"other bytes")})
        assert r.status == 400 and r.json()["error"]["code"] == "digest_mismatch"
    assert api.follow("node1", "GET", "alice/cli.bin")[1].body == data

    # Only unknown algorithms: refused as unsupported, nothing stored.
    r = api.put("node2", "alice/wrong.bin", body,
                headers={"Content-Digest": field("md5", "md5", body)})
    assert r.status == 400 and r.json()["error"]["code"] == "unsupported_digest"
    assert nothing_stored(cluster, api, "wrong.bin")

    # curl with a SHA-512 Content-Digest; with two listed, a wrong one refuses the upload.
    up = tmp_path / "curl.bin"
    up.write_bytes(os.urandom(70_000))
    sha512 = field("sha-512", "sha512", up.read_bytes())
    status, answer = curl(cluster, "node3", "alice/curl.bin", up,
                          f"Content-Digest: {field('sha-256', 'sha256', b'nope')}, {sha512}")
    assert status == 400 and answer["error"]["code"] == "digest_mismatch"
    assert nothing_stored(cluster, api, "curl.bin")
    status, answer = curl(cluster, "node3", "alice/curl.bin", up, f"Content-Digest: {sha512}")
    assert status == 201, answer
    assert answer["algorithm"] == algorithm
    assert answer["digest"] == hashlib.new(hashname, up.read_bytes()).hexdigest()
    with client_for(cluster) as client:
        assert client.get_bytes("alice/curl.bin") == up.read_bytes()
