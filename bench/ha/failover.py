"""2. Failover reads: reads through the client library while the files' origin is dead."""
import io
import random
import threading
import time

from securifile.client.errors import ClientError
from securifile.client.settings import ClientSettings
from securifile.client.storage import Client

from .tools import BenchError, DOWN, summary


def upload_on(settings, server, url, files, size, rng, prefix):
    """Upload ``files`` new files through ``server`` (so it is their origin); name -> bytes."""
    client = Client([url], ca=settings.ca, cert=settings.cert, key=settings.key,
                    token=settings.token)
    contents = {}
    with client:
        for i in range(files):
            remote = f"{settings.username}/{prefix}/{i:04d}.bin"
            data = rng.randbytes(size)
            record = client.put_bytes(data, remote)
            if record.get("origin") != server:
                raise BenchError(f"{remote} landed on {record.get('origin')}, not {server}")
            contents[remote] = data
    return contents


class ReadLog:
    """Reads and their outcomes, from any number of threads."""

    def __init__(self):
        self._lock = threading.Lock()
        self.reads = []  # dicts: phase, offset, latency, server, error

    def add(self, **row):
        with self._lock:
            self.reads.append(row)


def one_read(settings, remote, expected, seed, log, phase, offset, victim_url):
    """One read by a fresh client that starts at a random server, as a new user session does."""
    client = Client.from_settings(settings, rng=random.Random(seed))
    try:
        client.refresh_servers()  # the admin server's list, as of now: not part of the read
        entry = client.current_server
        buf = io.BytesIO()
        started = time.monotonic()
        info = client.download(remote, buf)
        latency = time.monotonic() - started
        error = None if buf.getvalue() == expected else "wrong bytes"
        log.add(phase=phase, offset=offset, latency=latency,
                entry_is_victim=(entry or "").rstrip("/") == victim_url.rstrip("/"),
                server=info.get("server"), error=error)
    except (ClientError, OSError) as e:
        log.add(phase=phase, offset=offset, latency=None, entry_is_victim=False, server=None,
                error=f"{type(e).__name__}: {e}")
    finally:
        client.close()


def measure_failover(cluster, views, trials, reads, size, files=20, spacing=0.25, window=5.0):
    """Kill the origin of ``files`` files; read them before, while the cluster notices, after.

    Each read is a fresh client starting at a random server (as a new user session does).
    Reads launched every ``spacing`` s from the kill through ``window`` s show how long a
    read waits for the cluster to notice; ``reads`` more go after the database shows the
    origin down, and as many before the kill as a baseline.
    """
    settings = ClientSettings.from_cluster_file(cluster.data_dir / "cluster.json")
    log = ReadLog()
    rng = random.Random(7)
    seeds = iter(range(1, 10**9))
    kills = []
    for trial in range(trials):
        victim = cluster.names[trial % len(cluster.names)]
        victim_url = cluster.url(victim)
        peers = [n for n in cluster.names if n != victim]
        contents = upload_on(settings, victim, victim_url, files, size, rng, f"failover{trial}")
        names = sorted(contents)

        def read(phase, offset=None):
            remote = rng.choice(names)
            return (settings, remote, contents[remote], next(seeds), log, phase, offset, victim_url)

        for _ in range(reads):
            one_read(*read("healthy"))
        threads = []
        seen = {}
        started = time.monotonic()
        cluster.kill(victim)
        watcher = threading.Thread(target=lambda: seen.update(
            views.watch(victim, DOWN, peers, started, timeout=30)), daemon=True)
        watcher.start()
        for k in range(int(window / spacing)):
            offset = k * spacing
            time.sleep(max(0.0, started + offset - time.monotonic()))
            t = threading.Thread(target=one_read, args=read("during", offset), daemon=True)
            t.start()
            threads.append(t)
        watcher.join(timeout=max(0.1, started + 40 - time.monotonic()))
        if set(seen) != set(peers) | {"database"}:
            raise BenchError(f"{victim} was not seen down by every peer and the database")
        for t in threads:
            t.join(timeout=max(0.1, started + 90 - time.monotonic()))
        if any(t.is_alive() for t in threads):
            raise BenchError("a read did not finish within 90 s of the kill")
        noticed = max(seen[p] for p in peers)
        kills.append({"victim": victim, "peers_s": noticed, "database_s": seen["database"]})
        for _ in range(reads):
            one_read(*read("after"))
        failed = sum(1 for r in log.reads if r["error"])
        print(f"  origin {victim} dead: peers noticed after {noticed:.2f} s, the database after "
              f"{seen['database']:.2f} s; {failed} failed reads so far", flush=True)
        cluster.restart(victim, timeout=60)
        views.settle(victim)
    ok = lambda phase: [r["latency"] for r in log.reads  # noqa: E731
                        if r["phase"] == phase and not r["error"]]
    return {
        "file_size": size, "trials": trials, "kills": kills,
        "healthy": summary(ok("healthy")),
        "after_kill": summary(ok("during")),
        "after_detection": summary(ok("after")),
        "failures": [r for r in log.reads if r["error"]],
        "failure_count": sum(1 for r in log.reads if r["error"]),
        "reads": len(log.reads),
        # Reads after the kill whose client first tried the dead origin itself.
        "entered_at_dead_origin": sum(1 for r in log.reads
                                      if r["entry_is_victim"] and r["phase"] != "healthy"),
        "after_kill_by_offset": sorted(
            [r["offset"], r["latency"]] for r in log.reads if r["phase"] == "during"
            and not r["error"]),
    }


# -- 3. verification on return ---------------------------------------------------------------
