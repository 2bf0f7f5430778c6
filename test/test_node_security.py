"""Attacks and bad input against real nodes: paths, certificates, TLS versions, broken bodies."""
import json
import socket
import ssl
import subprocess
import time

import pytest

from securifile.common.certs import CertificateAuthority, certificate_uid, write_cert_and_key
from securifile.common.tls import client_context
from securifile.common.tokens import mint_token

from .helpers import Api, disk_copy, wait_for

BAD_TARGETS = [
    ("/files/alice/../bob/x", "invalid_path"),
    ("/files/alice/%2e%2e/bob/x", "invalid_path"),
    ("/files/alice/a/./b", "invalid_path"),
    ("/files/alice/a//b", "invalid_path"),
    ("/files/alice/a%00b", "invalid_path"),
    ("/files/alice/a%0Ab", "invalid_path"),
    ("/files/alice/a%5Cb", "invalid_path"),
    ("/files/alice/a%E2%80%AEb", "invalid_path"),
    ("/files//etc/passwd", "invalid_path"),
    ("/files/alice/" + "n" * 256, "invalid_path"),
    ("/files/alice/" + "d/" * 600 + "x", "invalid_path"),
    ("/files/..%2Fetc/passwd", "invalid_username"),
    ("/files/Alice/x", "invalid_username"),
]


@pytest.mark.parametrize("target,code", BAD_TARGETS)
def test_bad_paths_get_400_and_touch_nothing(cluster, target, code):
    api = Api(cluster)
    before = sorted(p.relative_to(cluster.data_dir) for p in cluster.data_dir.rglob("*"))
    for method, body in (("PUT", b"evil"), ("GET", None)):
        r = api.request("node1", method, target, body=body, raw_path=True)
        assert r.status == 400, (method, target, r)
        assert r.json()["error"]["code"] == code
    after = sorted(p.relative_to(cluster.data_dir) for p in cluster.data_dir.rglob("*")
                   if "logs" not in p.parts and not p.name.startswith("locations.sqlite3"))
    assert [p for p in after if p not in before] == []


def test_oversized_headers_are_refused(api):
    r = api.request("node1", "GET", "alice/x", headers={"X-Big": "a" * 100_000})
    assert r.status == 431 and r.json()["error"]["code"] == "headers_too_large"


def _raw_tls_socket(cluster, name):
    api = Api(cluster)
    u = cluster.cfg.server(name)
    raw = socket.create_connection((u.host, u.port), timeout=10)
    return api.ctx.wrap_socket(raw, server_hostname=u.host)


def test_broken_off_upload_leaves_no_trace_and_keeps_old_bytes(make_cluster):
    cluster = make_cluster(servers=2, replicas=1)
    api = Api(cluster)
    assert api.put("node1", "alice/doc.bin", b"old bytes").status == 201
    s = _raw_tls_socket(cluster, "node1")
    s.sendall(b"PUT /files/alice/doc.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n"
              b"Expect: 100-continue\r\n\r\n")
    assert b"100" in s.recv(100)
    s.sendall(b"n" * 1_000_000)
    tmp = cluster.cfg.node_data_dir("node1") / "tmp"
    wait_for(lambda: any(tmp.iterdir()), what="the upload to reach a temp file")
    s.close()
    wait_for(lambda: not any(tmp.iterdir()), what="the temp file to be removed")
    assert api.get("node1", "alice/doc.bin").body == b"old bytes"
    assert disk_copy(cluster, "node2", "alice", "doc.bin").read_bytes() == b"old bytes"
    # The lock went with the connection: the next writer is not refused.
    assert api.put("node1", "alice/doc.bin", b"new bytes").status == 200


def test_second_writer_gets_423_while_an_upload_runs(api):
    api.put("node1", "alice/busy.bin", b"v1")
    s = _raw_tls_socket(api.cluster, "node1")
    s.sendall(b"PUT /files/alice/busy.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
              b"Expect: 100-continue\r\n\r\n")
    assert b"100" in s.recv(100)
    s.sendall(b"x" * 10)
    wait_for(lambda: any((api.cluster.cfg.node_data_dir("node1") / "tmp").iterdir()),
             what="the first upload to start")
    r = api.put("node1", "alice/busy.bin", b"other")
    assert r.status == 423 and r.json()["error"]["holder"] == "alice"
    s.sendall(b"x" * 90)
    head, _, body = s.recv(65536).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    s.close()


def test_peer_endpoints_refuse_users_and_strangers(cluster):
    api = Api(cluster)
    r = api.request("node1", "POST", "/peer/heartbeat", body=b"{}", raw_path=True)
    assert r.status == 403 and r.json()["error"]["code"] == "not_a_node"
    anon = Api(cluster, cert=False)
    r = anon.request("node1", "PUT", "/peer/replicas/alice/x", body=b"evil", raw_path=True)
    assert r.status == 403
    layout = cluster.layout
    node = api.with_identity(layout.server_cert("node2"), layout.server_key("node2"))
    r = node.request("node1", "POST", "/peer/heartbeat", body=b"{}", raw_path=True,
                     headers={"Content-Type": "application/json"})
    assert r.status == 200 and "seq" in r.json()
    # A node certificate is not a user's: it cannot read users' files.
    assert node.get("node1", "alice/x").status == 403


def test_user_certificate_from_a_foreign_ca_is_refused(cluster, tmp_path):
    foreign = CertificateAuthority.create("Mallory CA")
    cert, key = foreign.issue_user("alice", foreign.cert.not_valid_after_utc)
    write_cert_and_key(tmp_path / "a.crt", tmp_path / "a.key", cert, key)
    api = Api(cluster).with_identity(tmp_path / "a.crt", tmp_path / "a.key")
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
        api.get("node1", "alice/")


def test_tls_below_1_2_is_refused_and_1_2_works(cluster):
    u = cluster.cfg.server("node1")
    for version, ok in ((ssl.TLSVersion.TLSv1_1, False), (ssl.TLSVersion.TLSv1_2, True)):
        ctx = client_context(cluster.layout.ca_cert)
        ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        ctx.maximum_version = version
        ctx.set_ciphers("ALL:@SECLEVEL=0")
        with socket.create_connection((u.host, u.port), timeout=5) as raw:
            if ok:
                with ctx.wrap_socket(raw, server_hostname=u.host) as s:
                    assert s.version() == "TLSv1.2"
            else:
                with pytest.raises(ssl.SSLError):
                    ctx.wrap_socket(raw, server_hostname=u.host)
    out = subprocess.run(["curl", "-sS", "--cacert", str(cluster.layout.ca_cert), "--tlsv1.0",
                          "--tls-max", "1.1", u.url + "/status"], capture_output=True, text=True)
    assert out.returncode != 0


def test_expired_and_forged_tokens_are_refused(cluster):
    layout = cluster.layout
    priv = layout.token_private_key.read_bytes()
    expired, _ = mint_token(priv, "alice", ttl_seconds=10, now=time.time() - 3600)
    r = Api(cluster, cert=False, token=expired).get("node1", "alice/")
    assert r.status == 401 and r.json()["error"]["code"] == "token_expired"
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519
    other = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    forged, _ = mint_token(other, "alice")
    r = Api(cluster, cert=False, token=forged).get("node1", "alice/")
    assert r.status == 401 and r.json()["error"]["code"] == "invalid_token"
    # A good token carries the account's id (the launcher put it in alice's certificate).
    good, _ = mint_token(priv, "alice", uid=certificate_uid(cluster.user["cert"]))
    assert Api(cluster, cert=False, token=good).get("node1", "alice/").status == 200
    anonymous, _ = mint_token(priv, "alice")  # well signed, but for no account id
    r = Api(cluster, cert=False, token=anonymous).get("node1", "alice/")
    assert r.status == 403 and r.json()["error"]["code"] == "account_inactive"


def test_no_tls_mode_works_end_to_end_with_curl(make_cluster, tmp_path):
    cluster = make_cluster(servers=3, replicas=1, tls=False)
    token = open(cluster.user["token_file"]).read().strip()
    auth = ["-H", f"Authorization: Bearer {token}"]
    src = tmp_path / "plain.txt"
    src.write_bytes(b"debugging in clear text\n" * 1000)
    url1, url3 = cluster.url("node1"), cluster.url("node3")
    assert url1.startswith("http://")
    up = subprocess.run(["curl", "-sS", "--fail-with-body", *auth, "-T", str(src),
                         f"{url1}/files/alice/plain.txt"], capture_output=True, text=True, check=True)
    body = json.loads(up.stdout)
    other = next(n for n in cluster.names if n not in [body["origin"]] + [r["server"] for r in body["replicas"]])
    down = subprocess.run(["curl", "-sS", "--fail-with-body", *auth, "--location-trusted",
                           f"{cluster.url(other)}/files/alice/plain.txt"],
                          capture_output=True, check=True)
    assert down.stdout == src.read_bytes()
    status = json.loads(subprocess.run(["curl", "-sS", f"{url3}/status"], capture_output=True,
                                       check=True).stdout)
    assert status["tls"] is False and "ENCRYPTION DISABLED" in status["warning"]
    # Without TLS, peers prove themselves with the cluster secret; a stranger cannot.
    r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
                        f"{url1}/peer/heartbeat"], capture_output=True, text=True)
    assert r.stdout == "403"
    log = (cluster.data_dir / "logs" / "node1.log").read_text()
    assert "ENCRYPTION IS DISABLED" in log
