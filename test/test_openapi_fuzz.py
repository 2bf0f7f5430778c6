"""Issue 9, point 10: the served OpenAPI documents say what the servers accept and answer.

schemathesis (every check, bounded) runs against the admin server's and a node's
``/api/v1/openapi.json``, as a user and as an administrator, and must find nothing.
"""
import json
import re
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

import pytest

from securifile.common import openapi_parts

from .clusters import start_cluster
from .helpers import AdminApi

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
CONFIG = Path(__file__).parent / "fixtures" / "schemathesis.toml"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = start_cluster(tmp_path_factory, "openapi", servers=1, replicas=0)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def tokens(cluster):
    """Both identities log in first: fuzzing the login route soon throttles this address."""
    return {who: AdminApi(cluster, who).token for who in ("alice", "admin")}


@pytest.mark.parametrize("who", ["alice", "admin"])
@pytest.mark.parametrize("server", ["admin", "node1"])
def test_schemathesis_finds_no_mismatch(cluster, tokens, server, who, tmp_path):
    token = tokens[who]
    url = cluster.url(server)
    # --max-time is the bound that counts: the fuzzing phase goes round every operation again
    # until it runs out. In 20 s each run does all three phases (coverage of every operation
    # about 5 s, fuzzing rounds, stateful scenarios over the links): 1700 to 2400 cases.
    cmd = [str(SCHEMATHESIS), "--config-file", str(CONFIG), "--no-color", "run",
           url + "/api/v1/openapi.json", "--url", url, "--tls-verify", str(cluster.layout.ca_cert),
           "-H", f"Authorization: Bearer {token}", "--checks", "all", "--max-examples", "10",
           "--seed", "9", "--max-time", "20", "--request-timeout", "20",
           "--report", "ndjson", "--report-dir", str(tmp_path)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=400, cwd=tmp_path)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-8000:]
    assert "No issues found" in output or " passed" in output, output[-3000:]
    assert not re.search(r"\b[1-9]\d* failures?\b", output), output[-8000:]


def test_the_node_document_spells_the_shared_patterns():
    """nodes/openapi.json is a static file: its name and path patterns must be the shared ones."""
    doc = json.loads(files("securifile.nodes").joinpath("openapi.json").read_text())
    params = {(p["name"], p["schema"].get("pattern")) for op in doc["paths"]["/files/{owner}/{path}"].values()
              if isinstance(op, dict) for p in op.get("parameters", [])}
    assert ("owner", openapi_parts.USERNAME_PATTERN) in params
    assert ("path", openapi_parts.FILE_PATTERN) in params
    assert ("path", openapi_parts.PATH_OR_FOLDER_PATTERN) in params
