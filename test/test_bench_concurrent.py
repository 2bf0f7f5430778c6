"""The bench's concurrent clients against a tiny HTTP server on loopback (real curl processes)."""
import http.server
import os
import threading

import pytest

from bench.concurrent import concurrent_big, concurrent_small, percentile
from bench.measure import BenchError, Target


class Store(http.server.ThreadingHTTPServer):
    """Keeps the size of every PUT body by path; answers ``status`` to each."""

    daemon_threads = True

    def __init__(self, status=201):
        super().__init__(("127.0.0.1", 0), PutHandler)
        self.status = status
        self.received = {}
        self.lock = threading.Lock()


class PutHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: one connection per client

    def do_PUT(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.server.lock:
            self.server.received[self.path] = len(body)
        self.send_response(self.server.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def store():
    servers = []

    def start(status=201):
        server = Store(status)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def target_for(server):
    return Target(name="tiny", base_url=f"http://127.0.0.1:{server.server_address[1]}/up",
                  curl_options=[], root_pids=[os.getpid()])


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))
    assert percentile(values, 50) == 50 and percentile(values, 99) == 99
    assert percentile(values, 100) == 100 and percentile([7], 99) == 7
    assert percentile([3, 1, 2], 50) == 2


def test_every_client_uploads_every_file_on_one_connection(store, tmp_path):
    server = store()
    paths = []
    for i in range(5):
        paths.append(tmp_path / f"{i}.bin")
        paths[-1].write_bytes(os.urandom(4096))
    result = concurrent_small([target_for(server)] * 3, [str(p) for p in paths], "run", 30,
                              str(tmp_path / "scratch"))
    assert sorted(server.received) == sorted(f"/up/run/c{c:02d}/{j:04d}.bin"
                                             for c in range(3) for j in range(5))
    assert set(server.received.values()) == {4096}
    assert result["clients"] == 3 and result["uploads"] == 15 and result["connections"] == 3
    assert 0 < result["p50_ms"] <= result["p99_ms"] <= result["max_ms"]
    # wall_s is rounded to the millisecond, and a few milliseconds is all this run takes.
    assert result["files_per_s"] == pytest.approx(15 / result["wall_s"], abs=15 / result["wall_s"] ** 2 * 0.0006)


def test_a_refused_upload_fails_the_measurement(store, tmp_path):
    server = store(status=500)
    (tmp_path / "f").write_bytes(b"x" * 10)
    with pytest.raises(BenchError):
        concurrent_small([target_for(server)] * 2, [str(tmp_path / "f")] * 2, "run", 30,
                         str(tmp_path / "scratch"))


def test_big_uploads_one_per_client(store, tmp_path):
    server = store()
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(300_000))
    result = concurrent_big([target_for(server)] * 2, str(big), 300_000, ["a.bin", "b.bin"], 30,
                            str(tmp_path / "scratch"))
    assert server.received == {"/up/a.bin": 300_000, "/up/b.bin": 300_000}
    assert result["bytes"] == 600_000 and result["p50_s"] <= result["max_s"]
