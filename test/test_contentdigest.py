"""Unit tests of the node's ``Content-Digest`` parsing and checking (RFC 9530)."""
import base64
import hashlib

import pytest

from securifile.common.digests import digest_members, parse_digest_field
from securifile.common.errors import ApiError
from securifile.nodes.contentdigest import DeclaredDigests, parse_content_digest
from securifile.nodes.diskfile import DigestMismatch

BODY = b"the bytes of an upload"


def b64(name, data=BODY):
    return base64.b64encode(hashlib.new(name, data).digest()).decode()


def error_code(header):
    with pytest.raises(ApiError) as e:
        parse_content_digest(header)
    assert e.value.status == 400
    return e.value.code


@pytest.mark.parametrize("token, name, hashname", [
    ("sha", "sha1", "sha1"), ("sha-256", "sha256", "sha256"), ("sha-512", "sha512", "sha512"),
    ("sha3-256", "sha3-256", "sha3_256")])
def test_each_supported_token_gives_its_hex_digest(token, name, hashname):
    assert parse_content_digest(f"{token}=:{b64(hashname)}:") == {
        name: hashlib.new(hashname, BODY).hexdigest()}


def test_several_members_unknown_ones_skipped_parameters_and_case_ignored():
    header = f"md5=:AAAA:, SHA-512=:{b64('sha512')}:;note=1 , crc32c=:x:,sha-256=:{b64('sha256')}:"
    assert parse_content_digest(header) == {"sha512": hashlib.sha512(BODY).hexdigest(),
                                            "sha256": hashlib.sha256(BODY).hexdigest()}


def test_no_supported_algorithm_is_unsupported_digest():
    assert error_code(f"md5=:{b64('md5')}:") == "unsupported_digest"
    assert error_code("sha-384=:AAAA:, unixsum=:1:") == "unsupported_digest"
    assert error_code("garbage") == "unsupported_digest"


@pytest.mark.parametrize("value", [
    "sha-256", "sha-256=abc", "sha-256=:not base64!:", "sha-256=:" + b64("sha1") + ":",
    f"sha-256=:{b64('sha256')}:, sha-256=:{b64('sha256', b'other')}:"])
def test_malformed_supported_member_is_invalid_digest(value):
    assert error_code(value) == "invalid_digest"


def test_node_and_client_read_digest_fields_through_one_parser():
    """The node refuses what the client's lenient reading skips, member by member."""
    members = list(digest_members(f"SHA-256=:{b64('sha256')}:;p=1, md5=:x:, sha=abc, sha-512=:!!:"))
    assert [(token, name) for token, name, _ in members] == [
        ("sha-256", "sha256"), ("md5", None), ("sha", "sha1"), ("sha-512", "sha512")]
    assert members[0][2] == hashlib.sha256(BODY).digest()
    assert [str(value) for _, _, value in members[2:]] == [
        "value must be ':base64:'", "value is not valid base64"]
    assert parse_digest_field(", ".join(["sha=abc", f"sha-256=:{b64('sha256')}:"])) == {
        "sha256": hashlib.sha256(BODY).hexdigest()}
    assert error_code("sha=abc") == "invalid_digest"


def feed(declared, data=BODY, chunk=5):
    for i in range(0, len(data), chunk):
        declared.update(data[i:i + chunk])


def test_own_algorithm_left_to_the_writer_others_hashed_here():
    header = f"sha-256=:{b64('sha256')}:, sha-512=:{b64('sha512')}:"
    declared = DeclaredDigests.from_header(header, "sha512")
    assert declared.own == hashlib.sha512(BODY).hexdigest()
    feed(declared)
    declared.check_others()  # sha-256 matches


def test_a_wrong_digest_in_another_algorithm_is_a_mismatch():
    declared = DeclaredDigests.from_header(f"sha-256=:{b64('sha256')}:", "sha3-256")
    assert declared.own is None
    feed(declared, BODY + b"!")
    with pytest.raises(DigestMismatch) as e:
        declared.check_others()
    assert e.value.status == 400 and e.value.code == "digest_mismatch"
    assert "sha256" in str(e.value)


def test_no_header_checks_nothing():
    declared = DeclaredDigests.from_header(None, "sha256")
    assert declared.own is None
    feed(declared)
    declared.check_others()
