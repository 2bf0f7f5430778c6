"""docs/API.md names exactly the operations the servers' OpenAPI documents have."""
import re
from pathlib import Path

from securifile.admin.main import openapi_document
from securifile.nodes.http import load_openapi

DOC = Path(__file__).resolve().parent.parent / "docs" / "API.md"
METHODS = {"get", "put", "post", "delete", "patch", "head"}


def operations(doc):
    return {f"{m.upper()} {path}" for path, ops in doc["paths"].items() for m in ops if m in METHODS}


def documented(section):
    text = DOC.read_text().split(section, 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([A-Z]+ /[^`]*)` \|", text, re.M))


def test_the_admin_servers_operations_are_all_documented_and_no_others():
    assert documented("## Admin server") == operations(openapi_document())


def test_the_nodes_operations_are_all_documented_and_no_others():
    assert documented("## Storage node") == operations(load_openapi())
