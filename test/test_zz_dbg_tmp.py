import signal, json, time
from .helpers import Api, AdminApi, wait_for
from .test_faults import *
def test_dbg(make_cluster):
    cluster = make_cluster(servers=3, replicas=1)
    api, admin = Api(cluster), AdminApi(cluster)
    print(json.dumps(servers(admin), indent=1))
    cluster.signal("node2", signal.SIGSTOP)
    wait_seen(cluster, ["node1","node3"], "node2", "down")
    time.sleep(2)
    print(json.dumps(servers(admin), indent=1))
    print(json.dumps(history(admin, "node2"), indent=1))
    print(json.dumps(history(admin, "node1"), indent=1))
    cluster.signal("node2", signal.SIGCONT)
