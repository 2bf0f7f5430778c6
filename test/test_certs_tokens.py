"""The system's CA, its certificates in a real TLS handshake on loopback, and bearer tokens."""
import datetime
import ipaddress
import socket
import ssl
import stat
import threading
import time

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from securifile.common.auth import VerifiedTokens
from securifile.common.certs import (ROLE_ADMIN, ROLE_NODE, ROLE_USER, CertificateAuthority,
                                     CertLayout, ensure_ca, ensure_server_cert, ensure_user_cert,
                                     subject_identity, write_cert_and_key)
from securifile.common.errors import Unauthenticated
from securifile.common.tls import client_context, server_context
from securifile.common.tokens import (load_private_key, load_public_key, mint_token,
                                      verify_token)

from .helpers import wait_for

UTC = datetime.timezone.utc


def now():
    return datetime.datetime.now(UTC)


@pytest.fixture(scope="module")
def ca():
    return CertificateAuthority.create(days=30)


@pytest.fixture(scope="module")
def foreign_ca():
    return CertificateAuthority.create("Somebody Else's CA")


def attr(name, oid):
    return [a.value for a in name.get_attributes_for_oid(oid)]


def eku(cert):
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


# -- the CA -----------------------------------------------------------------------------------

def test_ca_save_and_load_round_trip(ca, tmp_path):
    cert_path, key_path = tmp_path / "ca.crt", tmp_path / "private" / "ca.key"
    ca.save(cert_path, key_path)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    loaded = CertificateAuthority.load(cert_path, key_path)
    assert loaded.cert == ca.cert
    assert loaded.key.private_numbers() == ca.key.private_numbers()
    bc = loaded.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert bc.ca is True
    assert loaded.cert.subject == loaded.cert.issuer
    # The loaded CA issues certificates that verify against the original.
    cert, _key = loaded.issue_server("n1")
    cert.verify_directly_issued_by(ca.cert)


def test_ensure_ca_creates_once_then_loads(tmp_path):
    layout = CertLayout(tmp_path / "certs")
    first = ensure_ca(layout)
    token_key = layout.token_private_key.read_bytes()
    second = ensure_ca(layout)
    assert second.cert == first.cert
    assert layout.token_private_key.read_bytes() == token_key
    assert stat.S_IMODE(layout.token_private_key.stat().st_mode) == 0o600
    # The token key pair in the folder signs and verifies.
    token, _ = mint_token(load_private_key(layout.token_private_key), "alice")
    assert verify_token(load_public_key(layout.token_public_key), token)["sub"] == "alice"


def test_ensure_server_and_user_certs_do_not_reissue(tmp_path):
    layout = CertLayout(tmp_path / "certs")
    ca = ensure_ca(layout)
    cert_path, key_path = ensure_server_cert(layout, ca, "n1")
    pem = cert_path.read_bytes()
    assert ensure_server_cert(layout, ca, "n1") == (cert_path, key_path)
    assert cert_path.read_bytes() == pem
    ucert, _ukey = ensure_user_cert(layout, ca, "alice", now() + datetime.timedelta(days=5))
    assert subject_identity_of(x509.load_pem_x509_certificate(ucert.read_bytes())) == ("alice", ROLE_USER)


def test_a_server_certificate_is_issued_again_for_an_address_it_does_not_name(tmp_path):
    layout = CertLayout(tmp_path / "certs")
    ca = ensure_ca(layout)
    cert_path, _ = ensure_server_cert(layout, ca, "n4", hosts=("127.0.0.1",))
    first = cert_path.read_bytes()
    ensure_server_cert(layout, ca, "n4", hosts=("127.0.0.1", "10.0.0.4", "n4.example.org"))
    san = x509.load_pem_x509_certificate(cert_path.read_bytes()).extensions \
        .get_extension_for_class(x509.SubjectAlternativeName).value
    assert cert_path.read_bytes() != first
    assert ipaddress.ip_address("10.0.0.4") in san.get_values_for_type(x509.IPAddress)
    assert "n4.example.org" in san.get_values_for_type(x509.DNSName)
    again = cert_path.read_bytes()  # everything named already: kept
    ensure_server_cert(layout, ca, "n4", hosts=("10.0.0.4", "n4.example.org"))
    assert cert_path.read_bytes() == again


def subject_identity_of(cert):
    return (attr(cert.subject, NameOID.COMMON_NAME)[0],
            attr(cert.subject, NameOID.ORGANIZATIONAL_UNIT_NAME)[0])


# -- server and user certificates ---------------------------------------------------------

def test_server_certificate(ca):
    cert, key = ca.issue_server("n1")
    cert.verify_directly_issued_by(ca.cert)
    assert cert.public_key() == key.public_key()
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")}
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", "n1", "n1.node.securifile"}
    assert set(eku(cert)) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert subject_identity_of(cert) == ("n1", ROLE_NODE)
    assert attr(cert.subject, NameOID.ORGANIZATION_NAME) == ["SecuriFile"]
    assert cert.issuer == ca.cert.subject
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert cert.not_valid_after_utc <= ca.cert.not_valid_after_utc


def test_server_certificate_for_the_admin_role_and_extra_hosts(ca):
    cert, _ = ca.issue_server("admin", ROLE_ADMIN, hosts=("admin.example", "10.0.0.5"))
    assert subject_identity_of(cert) == ("admin", ROLE_ADMIN)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"admin", "admin.example",
                                                          "admin.admin.securifile"}
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.5")]


def test_user_certificate_lasts_no_longer_than_the_account(ca):
    until = now() + datetime.timedelta(days=3)
    cert, key = ca.issue_user("alice", until)
    cert.verify_directly_issued_by(ca.cert)
    assert subject_identity_of(cert) == ("alice", ROLE_USER)
    assert eku(cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert until - datetime.timedelta(seconds=1) <= cert.not_valid_after_utc <= until
    assert cert.not_valid_before_utc <= now()
    assert cert.public_key() == key.public_key()


def test_user_certificate_never_outlives_the_ca(ca):
    cert, _ = ca.issue_user("alice", now() + datetime.timedelta(days=3650))
    assert cert.not_valid_after_utc == ca.cert.not_valid_after_utc


def make_csr(common_name="root", ou=ROLE_NODE):
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([
               x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Evil Corp"),
               x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou),
               x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName("n1")]), critical=False)
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM), key


def test_sign_user_csr_sets_the_subject_itself(ca):
    csr_pem, key = make_csr("n1", ROLE_NODE)  # asks to be a node
    until = now() + datetime.timedelta(days=2)
    cert = ca.sign_user_csr(csr_pem, "bob", until)
    cert.verify_directly_issued_by(ca.cert)
    assert subject_identity_of(cert) == ("bob", ROLE_USER)
    assert attr(cert.subject, NameOID.ORGANIZATION_NAME) == ["SecuriFile"]
    assert cert.public_key() == key.public_key()
    assert eku(cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.not_valid_after_utc <= until
    with pytest.raises(x509.ExtensionNotFound):  # the CSR's SAN is not copied either
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)


def test_sign_user_csr_refuses_a_tampered_request(ca):
    csr_pem, _ = make_csr("bob", ROLE_USER)
    der = x509.load_pem_x509_csr(csr_pem).public_bytes(serialization.Encoding.DER)
    assert der.count(b"Evil Corp") == 1
    forged = x509.load_der_x509_csr(der.replace(b"Evil Corp", b"Evil Corq"))  # signed body changed
    with pytest.raises(ValueError, match="signature"):
        ca.sign_user_csr(forged.public_bytes(serialization.Encoding.PEM), "bob",
                         now() + datetime.timedelta(days=1))


# -- TLS on loopback ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def pki(tmp_path_factory, ca, foreign_ca):
    root = tmp_path_factory.mktemp("pki")
    files = {"ca": root / "ca.crt", "foreign_ca": root / "foreign-ca.crt"}
    ca.save(files["ca"], root / "ca.key")
    foreign_ca.save(files["foreign_ca"], root / "foreign-ca.key")
    until = now() + datetime.timedelta(days=1)
    for name, (cert, key) in {
        "server": ca.issue_server("n1"),
        "user": ca.issue_user("alice", until),
        "node": ca.issue_server("n2"),
        "foreign_user": foreign_ca.issue_user("alice", until),
        "foreign_server": foreign_ca.issue_server("n1"),
    }.items():
        files[name] = (root / f"{name}.crt", root / f"{name}.key")
        write_cert_and_key(*files[name], cert, key)
    return files


def handshake(server_ctx, client_ctx, host="127.0.0.1"):
    """One TLS exchange on loopback; returns (server outcome, client outcome)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(5)
    server = {}

    def serve():
        try:
            conn, _ = listener.accept()
            conn.settimeout(5)
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                peer = tls.getpeercert()
                server["peer"] = subject_identity(peer) if peer else None
                server["version"] = tls.version()
                data = tls.recv(100)
                tls.sendall(b"echo:" + data)
        except (ssl.SSLError, OSError) as e:
            server["error"] = e

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client = {}
    try:
        with socket.create_connection(listener.getsockname(), timeout=5) as raw:
            with client_ctx.wrap_socket(raw, server_hostname=host) as tls:
                tls.sendall(b"hello")
                client["reply"] = tls.recv(100)
    except (ssl.SSLError, OSError) as e:
        client["error"] = e
    thread.join(5)
    listener.close()
    assert not thread.is_alive()
    return server, client


def test_tls_handshake_with_a_user_certificate(pki):
    server, client = handshake(server_context(*pki["server"], pki["ca"]),
                               client_context(pki["ca"], *pki["user"]))
    assert client == {"reply": b"echo:hello"}
    assert server["peer"] == ("alice", ROLE_USER)
    assert server["version"] in ("TLSv1.2", "TLSv1.3")


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "n1"])
def test_server_certificate_matches_each_of_its_names(pki, host):
    _server, client = handshake(server_context(*pki["server"], pki["ca"]),
                                client_context(pki["ca"], *pki["node"]), host=host)
    assert client == {"reply": b"echo:hello"}


def test_tls_handshake_between_nodes_identifies_the_peer_node(pki):
    server, _ = handshake(server_context(*pki["server"], pki["ca"]),
                          client_context(pki["ca"], *pki["node"]))
    assert server["peer"] == ("n2", ROLE_NODE)


def test_tls_without_a_client_certificate_is_allowed_for_token_users(pki):
    server, client = handshake(server_context(*pki["server"], pki["ca"]), client_context(pki["ca"]))
    assert client == {"reply": b"echo:hello"}
    assert server["peer"] is None


def test_tls_refuses_a_client_certificate_from_a_foreign_ca(pki):
    server, client = handshake(server_context(*pki["server"], pki["ca"]),
                               client_context(pki["ca"], *pki["foreign_user"]))
    assert isinstance(server.get("error"), ssl.SSLError)
    assert "peer" not in server
    assert "reply" not in client or client["reply"] == b""


def test_tls_client_refuses_a_server_from_a_foreign_ca(pki):
    server, client = handshake(server_context(*pki["foreign_server"], pki["foreign_ca"]),
                               client_context(pki["ca"], *pki["user"]))
    assert isinstance(client.get("error"), ssl.SSLCertVerificationError)
    assert "peer" not in server


def test_tls_client_checks_the_host_name(pki):
    _server, client = handshake(server_context(*pki["server"], pki["ca"]),
                                client_context(pki["ca"], *pki["user"]), host="n7")
    assert isinstance(client.get("error"), ssl.SSLCertVerificationError)


def test_tls_contexts_refuse_anything_below_tls_1_2(pki):
    assert server_context(*pki["server"], pki["ca"]).minimum_version == ssl.TLSVersion.TLSv1_2
    assert client_context(pki["ca"]).minimum_version == ssl.TLSVersion.TLSv1_2


# -- bearer tokens ------------------------------------------------------------------------

def pem_pair():
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


@pytest.fixture(scope="module")
def keys():
    return pem_pair()


def test_token_round_trip(keys):
    private, public = keys
    t0 = int(time.time())
    token, exp = mint_token(private, "alice", ttl_seconds=600)
    claims = verify_token(public, token)
    assert claims["sub"] == "alice" and claims["iss"] == "securifile"
    assert claims["exp"] == exp and t0 + 600 <= exp <= int(time.time()) + 600
    assert "adm" not in claims
    assert verify_token(public, mint_token(private, "root", admin=True)[0])["adm"] is True
    other, _ = mint_token(private, "alice", ttl_seconds=600)
    assert verify_token(public, other)["jti"] != claims["jti"]


def test_expired_token(keys):
    private, public = keys
    token, exp = mint_token(private, "alice", ttl_seconds=60, now=time.time() - 3600)
    assert exp < time.time()
    with pytest.raises(Unauthenticated) as e:
        verify_token(public, token)
    assert e.value.code == "token_expired" and e.value.status == 401


def test_token_signed_with_another_key_is_invalid(keys):
    _private, public = keys
    stranger, _ = pem_pair()
    token, _ = mint_token(stranger, "alice")
    with pytest.raises(Unauthenticated) as e:
        verify_token(public, token)
    assert e.value.code == "invalid_token"


@pytest.mark.parametrize("mangle", [
    lambda t: t[:-4] + ("AAAA" if not t.endswith("AAAA") else "BBBB"),  # signature changed
    lambda t: "x" + t,
    lambda t: "not a token",
    lambda t: "",
])
def test_mangled_tokens_are_invalid(keys, mangle):
    private, public = keys
    token, _ = mint_token(private, "alice")
    with pytest.raises(Unauthenticated) as e:
        verify_token(public, mangle(token))
    assert e.value.code == "invalid_token"


def test_unsigned_and_foreign_tokens_are_invalid(keys):
    _private, public = keys
    claims = {"iss": "securifile", "sub": "root", "adm": True, "exp": int(time.time()) + 600}
    for token in (jwt.encode(claims, None, algorithm="none"),
                  jwt.encode(claims, "a shared secret of at least 32 bytes!", algorithm="HS256"),
                  jwt.encode({**claims, "iss": "someone-else"}, keys[0], algorithm="EdDSA"),
                  jwt.encode({k: v for k, v in claims.items() if k != "exp"}, keys[0],
                             algorithm="EdDSA")):
        with pytest.raises(Unauthenticated) as e:
            verify_token(public, token)
        assert e.value.code == "invalid_token"


def test_not_after_caps_the_expiry(keys):
    private, public = keys
    t0 = int(time.time())
    token, exp = mint_token(private, "alice", ttl_seconds=86400, not_after=t0 + 120, now=t0)
    assert exp == t0 + 120
    assert verify_token(public, token)["exp"] == t0 + 120
    # A later account end does not stretch the token.
    _token, exp = mint_token(private, "alice", ttl_seconds=60, not_after=t0 + 10_000, now=t0)
    assert exp == t0 + 60
    # An account that has already ended yields a token that is already expired.
    token, _ = mint_token(private, "alice", ttl_seconds=600, not_after=t0 - 5, now=t0)
    with pytest.raises(Unauthenticated) as e:
        verify_token(public, token)
    assert e.value.code == "token_expired"


# -- verified tokens remembered (common/auth.py VerifiedTokens) ----------------------------

def test_a_remembered_token_still_expires(keys):
    private, public = keys
    tokens = VerifiedTokens(public)
    token, exp = mint_token(private, "alice", ttl_seconds=1)
    assert tokens.claims(token)["sub"] == "alice"
    assert tokens.claims(token)["exp"] == exp  # now from memory
    wait_for(lambda: time.time() >= exp, timeout=5, what="the token's expiry")
    with pytest.raises(Unauthenticated) as e:
        tokens.claims(token)
    assert e.value.code == "token_expired"


def test_only_the_very_token_verified_is_remembered(keys):
    private, public = keys
    tokens = VerifiedTokens(public)
    token, _ = mint_token(private, "alice")
    tokens.claims(token)
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    header, payload, signature = token.split(".")
    stranger, _ = pem_pair()
    forged, _ = mint_token(stranger, "alice")
    for bad in (tampered, ".".join([header, forged.split(".")[1], signature]), forged):
        with pytest.raises(Unauthenticated) as e:
            tokens.claims(bad)
        assert e.value.code == "invalid_token"
    tokens.claims(token)["sub"] = "mallory"  # a caller's copy: the memory keeps its own
    assert tokens.claims(token)["sub"] == "alice"


def test_the_memory_of_tokens_is_bounded(keys):
    private, public = keys
    tokens = VerifiedTokens(public, size=3)
    minted = [mint_token(private, f"u{i}")[0] for i in range(5)]
    for token in minted:
        tokens.claims(token)
    assert list(tokens._claims) == minted[2:]
    tokens.claims(minted[2])  # used again: the most recent
    tokens.claims(minted[0])
    assert list(tokens._claims) == [minted[4], minted[2], minted[0]]
