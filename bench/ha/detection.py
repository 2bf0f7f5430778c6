"""1. Detection: how long until every peer and the admin server show a killed or hung node down."""
import signal
import time

from .tools import DOWN, summary


# -- 1. detection ----------------------------------------------------------------------------

def measure_detection(cluster, views, trials, hangs=0):
    """``trials`` SIGKILLs, then ``hangs`` SIGSTOPs (a hung server), each timed until every
    peer and the database show the server down; it is then brought back and waited for."""
    cfg = cluster.cfg
    target = cfg.heartbeat_interval * (cfg.heartbeat_misses + 1)
    rows = []
    for i in range(trials + hangs):
        how = "kill" if i < trials else "stop"
        victim = cluster.names[i % len(cluster.names)]
        peers = [n for n in cluster.names if n != victim]
        started = time.monotonic()
        if how == "kill":
            cluster.kill(victim)
        else:
            cluster.signal(victim, signal.SIGSTOP)
        try:
            seen = views.watch(victim, DOWN, peers, started, timeout=30)
        finally:
            if how == "stop":
                cluster.signal(victim, signal.SIGCONT)
        rows.append({"how": how, "victim": victim, "peers": {p: seen[p] for p in peers},
                     "database": seen["database"]})
        print(f"  {how} {victim}: peers {', '.join(f'{p} {seen[p]:.2f} s' for p in peers)}; "
              f"database {seen['database']:.2f} s", flush=True)
        if how == "kill":
            cluster.restart(victim, timeout=60)
        views.settle(victim)

    def stats(kind):
        chosen = [r for r in rows if r["how"] == kind]
        return {"first_peer": summary([min(r["peers"].values()) for r in chosen]),
                "all_peers": summary([max(r["peers"].values()) for r in chosen]),
                "database": summary([r["database"] for r in chosen])}

    def met(kind, key):
        chosen = [r for r in rows if r["how"] == kind]
        return bool(chosen) and all(
            (max(r["peers"].values()) if key == "peers" else r["database"]) <= target
            for r in chosen)

    return {"target_s": target, "trials": rows, **stats("kill"), "sigstop": stats("stop"),
            "met_by_peers": met("kill", "peers"), "met_by_database": met("kill", "database"),
            "sigstop_met_by_peers": met("stop", "peers"),
            "sigstop_met_by_database": met("stop", "database")}


# -- 2. failover reads -----------------------------------------------------------------------
