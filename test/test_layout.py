"""The code's floor plan, read from the source with ``ast`` (nothing is imported).

(a) The package's folders (``securifile.<folder>``) form layers: ``common`` at the bottom imports
none of the others; the servers (``nodes``, ``admin``) and the client library (``client``) stand
on ``common`` only and never import each other; the launcher (``securifile up``) starts servers
and so may import them; the user-facing programs (``cli``, ``tui``) use the client, the launcher
and ``common``, never a server's insides. No folder imports one above or beside it, and the
folder graph has no loops.
The package never imports the repository's folders that are not installed (``bench``,
``scripts``, ``test``).
(b) No Python file outside the tests and the database migrations is longer than MAX_LINES: a
file that long holds more than one job.
"""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "securifile"

# What each folder of the package may import besides itself; a folder not named here is no layer.
MAY_IMPORT = {
    "common": set(),
    "nodes": {"common"},
    "admin": {"common"},
    "client": {"common"},
    "launcher": {"common", "nodes", "admin", "client"},
    "cli": {"common", "client", "launcher"},
    "tui": {"common", "client", "launcher"},
}
# Folders of the repository that are not installed: the package must never import them.
NOT_INSTALLED = {"bench", "scripts", "test"}
MAX_LINES = 600
# Not product code, or not ours to shorten: the tests, generated migrations, tools' folders.
SKIP_DIRS = {"test", "build", "dist", "var", "certs", "__pycache__", "node_modules"}
SKIP_PATHS = {ROOT / "admin" / "migrations"}


def package_folders():
    """The folders setup.py installs as ``securifile.<name>`` (read from its PACKAGES dict)."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if (isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "PACKAGES"
                                                 for t in node.targets)):
            mapping = ast.literal_eval(node.value)
            return {name.split(".", 1)[1]: ROOT / folder for name, folder in mapping.items()
                    if name.startswith(PACKAGE + ".")}
    raise AssertionError("setup.py has no PACKAGES mapping")


def imported_modules(path, package):
    """(dotted module, line) for every import in ``path``, relative ones resolved against
    ``package`` (the file's own package as a list of names), lazy ones inside functions too."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                if node.module:
                    yield ".".join([*base, node.module]), node.lineno
                else:  # from .. import x: each name may be a module
                    for alias in node.names:
                        yield ".".join([*base, alias.name]), node.lineno
            else:
                yield node.module, node.lineno


def folder_imports(folders):
    """{(importer folder, imported folder): [file:line, ...]} across folders of the package."""
    arrows = {}
    for folder, root in folders.items():
        for path in sorted(root.rglob("*.py")):
            if any(skip in path.parents for skip in SKIP_PATHS):
                continue
            package = [PACKAGE, folder, *path.parent.relative_to(root).parts]
            for module, line in imported_modules(path, package):
                parts = module.split(".")
                if parts[0] in NOT_INSTALLED:
                    target = parts[0]
                elif parts[0] == PACKAGE and len(parts) > 1 and parts[1] != folder:
                    target = parts[1]
                else:
                    continue
                where = f"{path.relative_to(root.parent)}:{line}"
                arrows.setdefault((folder, target), []).append(where)
    return arrows


def loops(arrows):
    """Every cycle in the folder graph, each as a list of folders."""
    graph = {}
    for a, b in arrows:
        graph.setdefault(a, set()).add(b)
    found, state = [], {}

    def visit(node, trail):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(trail[trail.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = "done"

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    return found


def test_every_package_folder_has_a_layer():
    folders = package_folders()
    assert {"common", "nodes", "admin", "cli", "tui", "launcher"} <= set(folders)
    assert not set(folders) - set(MAY_IMPORT), "folders with no place in MAY_IMPORT"


def test_no_folder_imports_one_above_or_beside_it():
    arrows = folder_imports(package_folders())
    wrong = {f"{a} -> {b}": where for (a, b), where in arrows.items()
             if b not in MAY_IMPORT.get(a, set())}
    assert not wrong, wrong


def test_the_folder_graph_has_no_loops():
    assert loops(folder_imports(package_folders())) == []


def test_the_checks_see_what_they_look_for(tmp_path):
    """The parser resolves relative and lazy imports, and the loop finder finds a loop."""
    source = tmp_path / "m.py"
    source.write_text("from ..admin.db import x\nfrom . import y\n"
                      "def f():\n    import securifile.nodes.storage\n")
    got = list(imported_modules(source, [PACKAGE, "cli", "sub"]))
    assert got == [("securifile.cli.admin.db", 1), ("securifile.cli.sub.y", 2),
                   ("securifile.nodes.storage", 4)]
    assert loops({("a", "b"): [], ("b", "c"): [], ("c", "a"): []}) == [["a", "b", "c", "a"]]
    (tmp_path / "nodes" / "sub").mkdir(parents=True)
    (tmp_path / "nodes" / "sub" / "x.py").write_text(
        "from ...admin import db\nfrom .. import storage\nfrom bench.measure import t\n")
    assert folder_imports({"nodes": tmp_path / "nodes"}) == {
        ("nodes", "admin"): ["nodes/sub/x.py:1"], ("nodes", "bench"): ["nodes/sub/x.py:3"]}


def python_files():
    """Every .py file of the repository outside the tests, migrations and tool folders."""
    pending = [ROOT]
    for _ in range(10_000):  # bounded: a repository has far fewer folders
        if not pending:
            return
        folder = pending.pop()
        for entry in sorted(folder.iterdir()):
            if entry.is_dir():
                if (entry.name in SKIP_DIRS or entry.name.startswith(".")
                        or entry.name.endswith(".egg-info") or entry in SKIP_PATHS):
                    continue
                pending.append(entry)
            elif entry.suffix == ".py":
                yield entry
    raise AssertionError("too many folders under the repository root")


def test_no_file_is_over_the_line_limit():
    files = list(python_files())
    assert any(f.name == "setup.py" for f in files)
    long_files = {str(f.relative_to(ROOT)): n for f in files
                  if (n := len(f.read_text().splitlines())) > MAX_LINES}
    assert not long_files, f"files over {MAX_LINES} lines: {long_files}"

