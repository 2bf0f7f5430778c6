"""Path rules: every name is checked here before it reaches a disk or a database."""
import pytest

from securifile.common.errors import InvalidPath
from securifile.common.paths import (MAX_DEPTH, MAX_PATH_BYTES, MAX_SEGMENT_BYTES, FilePath,
                                     check_username, file_url, parse_path)

LONG_OK = "a" * MAX_SEGMENT_BYTES
# Folders of 200 bytes each: no segment too long, the whole path over the limit.
LONG_PATH = "alice/" + "/".join(["d" * 200] * 6)
assert len(LONG_PATH.encode()) > MAX_PATH_BYTES


@pytest.mark.parametrize("text, owner, rel", [
    ("alice/report.pdf", "alice", "report.pdf"),
    ("alice/docs/2024/q1 final.txt", "alice", "docs/2024/q1 final.txt"),
    ("a/x", "a", "x"),
    ("a_b-c9/x", "a_b-c9", "x"),
    ("a" * 32 + "/x", "a" * 32, "x"),
    ("alice/R\u00e9sum\u00e9.txt", "alice", "R\u00e9sum\u00e9.txt"),  # NFC
    ("alice/\u65e5\u672c\u8a9e/\u30d5\u30a1\u30a4\u30eb.txt", "alice",
     "\u65e5\u672c\u8a9e/\u30d5\u30a1\u30a4\u30eb.txt"),
    ("alice/\U0001f600 smile.png", "alice", "\U0001f600 smile.png"),
    ("alice/.hidden", "alice", ".hidden"),
    ("alice/...", "alice", "..."),
    ("alice/a..b", "alice", "a..b"),
    ("alice/" + LONG_OK, "alice", LONG_OK),
    # A 255-byte segment of two-byte characters is still within the limit.
    ("alice/" + "\u00e9" * 127, "alice", "\u00e9" * 127),
    ("alice/" + "/".join(["d"] * MAX_DEPTH), "alice", "/".join(["d"] * MAX_DEPTH)),
])
def test_valid_paths_are_accepted(text, owner, rel):
    fp = parse_path(text)
    assert fp == FilePath(owner, rel)
    assert fp.full == text == str(fp)
    assert fp.segments == tuple(rel.split("/"))


def test_path_of_exactly_the_maximum_length_is_accepted():
    text = "alice/" + "x" * 200 + "/" + "y" * 200 + "/" + "z" * 200 + "/" + "w" * 200 + "/"
    text += "v" * (MAX_PATH_BYTES - len(text))
    assert len(text.encode()) == MAX_PATH_BYTES
    assert parse_path(text).owner == "alice"
    with pytest.raises(InvalidPath, match="longer than"):
        parse_path(text + "v")


@pytest.mark.parametrize("text", [
    "alice/..",
    "alice/../bob/secret",
    "alice/docs/../../bob/x",
    "alice/docs/..",
    "alice/.",
    "alice/./x",
    "alice/docs/.",
    "alice//x",
    "alice/a//b",
    "alice/docs/",           # trailing '/' names a folder: not without allow_folder
    "alice/",
    "alice",
    "/alice/x",              # absolute
    "//alice/x",
    "alice/a\\b",            # backslashes
    "alice/..\\..\\etc",
    "alice/nul\x00byte",
    "alice/new\nline",
    "alice/car\rreturn",
    "alice/tab\tname",
    "alice/del\x7fete",
    "alice/\x1b[31mred",
    "alice/evil\u202etxt.exe",  # right-to-left override, a format character
    "alice/zero\u200bwidth",    # zero-width space, a format character
    "alice/\ufeffbom",
    "alice/\ue000private",      # private use
    "alice/\ud800surrogate",    # a lone surrogate cannot even be encoded
    "alice/" + "a" * (MAX_SEGMENT_BYTES + 1),
    "alice/" + "\u00e9" * 128,  # 256 bytes in UTF-8 though only 128 characters
    LONG_PATH,
    "alice/" + "/".join(["d"] * (MAX_DEPTH + 1)),
    "alice/Re\u0301sume\u0301.txt",  # NFD: 'e' + combining acute
    "alice/\u212b",                  # ANGSTROM SIGN normalises to U+00C5
])
def test_invalid_paths_are_refused(text):
    with pytest.raises(InvalidPath) as e:
        parse_path(text)
    assert e.value.status == 400
    assert e.value.code == "invalid_path"


@pytest.mark.parametrize("text", ["alice/..", "alice//x", "alice/a\x00", "/alice/x"])
def test_allow_folder_does_not_relax_the_segment_rules(text):
    with pytest.raises(InvalidPath):
        parse_path(text, allow_folder=True)
    with pytest.raises(InvalidPath):
        parse_path(text + "/", allow_folder=True)


@pytest.mark.parametrize("owner", [
    "Alice",          # upper case
    "ALICE",
    "1alice",         # leading digit
    "_alice",
    "-alice",
    "a" * 33,         # too long
    "",               # empty
    "al ice",
    "al.ice",
    "alice\n",        # '$' in a regex would let a trailing newline through
    "\nalice",
    "al\u00efce",     # non-ASCII letter
    "..",
    ".",
])
def test_bad_usernames_are_refused(owner):
    with pytest.raises(InvalidPath) as e:
        check_username(owner)
    assert e.value.code == "invalid_username"
    with pytest.raises(InvalidPath) as e:
        parse_path(owner + "/file.txt")
    assert e.value.code in ("invalid_username", "invalid_path")


@pytest.mark.parametrize("name", [None, 42, b"alice"])
def test_usernames_and_paths_must_be_strings(name):
    with pytest.raises(InvalidPath):
        check_username(name)
    with pytest.raises(InvalidPath):
        parse_path(name)


@pytest.mark.parametrize("name", ["a", "alice", "bob_smith", "x-9", "a" * 32])
def test_good_usernames_are_returned_unchanged(name):
    assert check_username(name) == name


@pytest.mark.parametrize("text, rel", [
    ("alice", ""),
    ("alice/", ""),
    ("alice/docs", "docs"),
    ("alice/docs/", "docs"),
    ("alice/docs/2024/", "docs/2024"),
    ("alice/report.pdf", "report.pdf"),
])
def test_allow_folder_names_folders_and_the_namespace_root(text, rel):
    fp = parse_path(text, allow_folder=True)
    assert fp == FilePath("alice", rel)


@pytest.mark.parametrize("text", ["alice//", "alice/docs//", "alice/docs//x/"])
def test_allow_folder_strips_one_trailing_slash_only(text):
    with pytest.raises(InvalidPath, match="empty path segment"):
        parse_path(text, allow_folder=True)


def test_filepaths_sort_by_owner_then_path():
    paths = [parse_path(t) for t in ("bob/a", "alice/b", "alice/a/z")]
    assert sorted(paths) == [FilePath("alice", "a/z"), FilePath("alice", "b"), FilePath("bob", "a")]


def test_file_url_encodes_each_segment_under_the_route_of_any_server():
    """One builder for the client's request paths, a node's redirects and its peer calls."""
    fp = parse_path("alice/a b/\u00fc?#%.txt")
    assert file_url(fp) == "/files/alice/a%20b/%C3%BC%3F%23%25.txt"
    assert file_url(fp, "https://n2.test:8442/") == "https://n2.test:8442/files/alice/a%20b/%C3%BC%3F%23%25.txt"
    assert file_url(fp, "https://n2.test:8442", "/peer/replicas/") == (
        "https://n2.test:8442/peer/replicas/alice/a%20b/%C3%BC%3F%23%25.txt")
    assert file_url(parse_path("alice", allow_folder=True)) == "/files/alice/"

