"""The SecuriFile client library, used by the CLI, the TUI, the tests and the benchmarks.

Read from the top down:

- ``storage.Client``: the files (put, get, download, list, stat, delete, whole folders);
- ``failover.ClusterClient``: which server answers, failover, redirects to file holders;
- ``transport.Transport``: one request on the wire (kept-alive connections, 100-continue).

Beside them: ``errors`` (what is raised), ``servers`` (server choice), ``files`` (remote
names, local files written all or nothing, folder plans), ``settings`` (cluster file and
saved login) and ``admin.AdminClient`` (the admin server's REST API, on the same transport).
"""
