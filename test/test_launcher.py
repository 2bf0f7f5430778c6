"""The README's first command as a user runs it: `securifile up`, the printed curl lines,
the README's curl examples, the CLI, and a clean stop on Ctrl-C."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from securifile.launcher.cluster import port_in_use

from .helpers import wait_for

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def readme_curl_examples():
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- curl-examples.*?```sh\n(.*?)```", text, re.S).group(1)
    return [c for c in block.replace("\\\n", " ").splitlines() if c.strip() and not c.startswith("#")]


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie that its parent has not reaped yet is gone for our purposes.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def free_port_run(count, worker):
    """A base port with ``count`` free ports after it (the README's 8441 when it is free).

    Parallel test workers start from different places, so that two launchers never pick
    the same free run before either has bound it.
    """
    n = int(worker[2:]) if worker.startswith("gw") else 0
    first = [8441] if n == 0 else []
    for base in first + list(range(20000 + 1000 * n, 30000, 97)):
        ports = [base - 1, base + 73] + [base + i for i in range(count)]  # admin, syslog, nodes
        if not any(port_in_use("127.0.0.1", p) for p in ports):
            return base
    raise AssertionError("no free run of loopback ports")


@pytest.fixture
def launched(tmp_path, worker_id):
    """`securifile up` as the README runs it (certs/ and var/ in the cwd).

    The launcher leads its own process group, which its servers join: whatever happens in
    the test, stopping it and then killing that group leaves no server behind.
    """
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}")
    base = free_port_run(3, worker_id)
    proc = subprocess.Popen([str(BIN / "securifile"), "up", "--servers", "3", "--replicas", "1",
                             "--base-port", str(base)],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True,
                            # started as a shell starts a background job (the CI script may
                            # be one): SIGINT ignored, which Python then leaves ignored
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
            if "Ctrl-C" in line:
                break
        assert lines and "Ctrl-C" in lines[-1], "\n".join(lines)
        yield proc, lines, tmp_path, env, base
    finally:
        stop_launcher(proc)


def stop_launcher(proc):
    """Stop ``securifile up`` as an operator would (SIGTERM), then kill what is left of its
    process group: servers it did not stop, and it too if it hung."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # the launcher stopped every server itself: nothing of the group is left
    proc.wait()
    proc.stdout.close()


def run(cmd, cwd, env):
    return subprocess.run(cmd, shell=True, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=60)


def test_up_prints_working_curl_and_stops_on_ctrl_c(launched):
    proc, lines, cwd, env, base = launched
    cluster = json.loads((cwd / "var" / "cluster.json").read_text())
    assert [s["url"] for s in cluster["servers"]] == [
        f"https://127.0.0.1:{base + i}" for i in range(3)]
    assert cluster["tls"] is True and Path(cluster["ca_cert"]).exists()
    assert oct(Path(cluster["user"]["token_file"]).stat().st_mode & 0o777) == "0o600"
    printed = [line.strip() for line in lines if line.strip().startswith("curl ")]
    assert len(printed) >= 3
    for cmd in printed:
        r = run(cmd + " --fail-with-body -sS", cwd, env)
        assert r.returncode == 0, (cmd, r.stdout, r.stderr)
    for cmd in readme_curl_examples():
        for i in range(-1, 3):  # the README's ports, where a busy machine made the test move
            cmd = cmd.replace(f"127.0.0.1:{8441 + i}/", f"127.0.0.1:{base + i}/")
        r = run(cmd + " --fail-with-body -sS", cwd, env)
        assert r.returncode == 0, (cmd, r.stdout, r.stderr)
    readme = (cwd / "README.md").read_bytes()
    assert (cwd / "README.copy").read_bytes() == readme

    proc.send_signal(signal.SIGINT)
    try:
        code = proc.wait(timeout=30)  # the launcher gives each server 10 s, then kills it
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the launcher did not stop: {hang_report(proc, cluster, cwd)}")
    assert code == 0
    for s in cluster["servers"]:
        wait_for(lambda: not pid_alive(s["pid"]), timeout=10, what=f"{s['name']} to exit")


def hang_report(proc, cluster, cwd):
    """What a launcher that does not stop, and its servers, are doing (for the failure)."""
    def state(pid):
        try:
            status = Path(f"/proc/{pid}/status").read_text().splitlines()
            wchan = Path(f"/proc/{pid}/wchan").read_text()
            stack = subprocess.run(["cat", f"/proc/{pid}/stack"], capture_output=True,
                                   text=True, timeout=5).stdout
        except OSError:
            return "gone"
        return f"{[line for line in status if line.startswith('State')]} wchan={wchan} {stack}"

    parts = [f"launcher {proc.pid}: {state(proc.pid)}"]
    pids = [(s["name"], s["pid"]) for s in cluster["servers"]]
    if cluster.get("admin", {}).get("pid"):
        pids.append(("admin", cluster["admin"]["pid"]))
    for name, pid in pids:
        parts.append(f"{name} {pid}: {state(pid)}")
    for log in sorted((cwd / "var" / "logs").glob("*.log")):
        parts.append(f"--- {log.name}: " + log.read_text(errors="replace")[-1500:])
    return "\n".join(parts)


def test_cli_against_the_launched_cluster(launched):
    _proc, _lines, cwd, env, _base = launched
    env = dict(env, SECURIFILE_CLUSTER=str(cwd / "var" / "cluster.json"))
    tree = cwd / "photos"
    (tree / "2024").mkdir(parents=True)
    (tree / "cat.jpg").write_bytes(os.urandom(3_000_000))
    (tree / "2024" / "dog.jpg").write_bytes(os.urandom(1000))
    r = run("securifile put photos alice/photos", cwd, env)
    assert r.returncode == 0, r.stderr
    r = run("securifile ls alice/photos/", cwd, env)
    assert r.returncode == 0 and "cat.jpg" in r.stdout and "2024/dog.jpg" in r.stdout, r.stdout
    r = run("securifile get alice/photos/ copy", cwd, env)
    assert r.returncode == 0, r.stderr
    for rel in ("cat.jpg", "2024/dog.jpg"):
        found = list((cwd / "copy").rglob(Path(rel).name))
        assert found and found[0].read_bytes() == (tree / rel).read_bytes()
    r = run("securifile rm alice/photos/cat.jpg", cwd, env)
    assert r.returncode == 0, r.stderr
    r = run("securifile stat alice/photos/cat.jpg", cwd, env)
    assert r.returncode != 0 and "not" in (r.stderr + r.stdout).lower()


def test_every_server_runs_on_uvloop(launched):
    """The nodes and the admin server run their event loop on uvloop (common/eventloop.py):
    its library is mapped into each process."""
    _proc, _lines, cwd, _env, _base = launched
    cluster = json.loads((cwd / "var" / "cluster.json").read_text())
    pids = [s["pid"] for s in cluster["servers"]] + [cluster["admin"]["pid"]]
    for pid in pids:
        maps = Path(f"/proc/{pid}/maps").read_text()
        assert "/uvloop/" in maps, f"process {pid} has not loaded uvloop"
