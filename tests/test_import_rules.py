"""The import rules of docs/architecture.md, checked on the package as it is.

``lint-imports`` (run by scripts/test.sh) checks the contracts in pyproject.toml: the
layers, no circle between siblings, a core that knows nothing of IPython or Jupyter
Server. These tests add what those contracts do not say: no circle between *any* two
modules (a package's ``__init__`` and its own submodules included), and a core that stays
light at run time, not only in its import statements.
"""

from __future__ import annotations

import subprocess
import sys

import grimp

PACKAGE = "jupyter_secure_storage"


def circles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            module, successors = work[-1]
            advanced = False
            for successor in successors:
                if not successor.startswith(PACKAGE):
                    continue
                if successor not in index:
                    index[successor] = low[successor] = counter
                    counter += 1
                    stack.append(successor)
                    on_stack.add(successor)
                    imported = graph.find_modules_directly_imported_by(successor)
                    work.append((successor, iter(sorted(imported))))
                    advanced = True
                    break
                if successor in on_stack:
                    low[module] = min(low[module], index[successor])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[module])
            if low[module] == index[module]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == module:
                        break
                if len(group) > 1:
                    found.append(sorted(group))
    return found


def test_circle_finder_finds_a_planted_circle() -> None:
    graph = grimp.ImportGraph()
    for name in ("pkg_a", "pkg_b", "pkg_c", "pkg_d"):
        graph.add_module(f"{PACKAGE}.{name}")
    a, b, c, d = (f"{PACKAGE}.pkg_{x}" for x in "abcd")
    graph.add_import(importer=a, imported=b)
    graph.add_import(importer=b, imported=c)
    graph.add_import(importer=c, imported=a)
    graph.add_import(importer=c, imported=d)
    assert circles(graph) == [sorted([a, b, c])]


def test_no_module_of_the_package_imports_in_a_circle() -> None:
    graph = grimp.build_graph(PACKAGE, cache_dir=None)
    assert len(graph.modules) > 40  # the whole package was read, not an empty graph
    found = circles(graph)
    assert not found, "import circles: " + "; ".join(" <-> ".join(group) for group in found)


def test_writing_a_value_loads_no_front_end_scanner_or_bridge() -> None:
    # The facade's write keeps fingerprints beside the value; that must not pull in the
    # file scanner (numpy), the bridge or any Jupyter front end.
    code = (
        "import sys\n"
        "from jupyter_secure_storage import SecureStorage\n"
        "store = SecureStorage(backend='memory')\n"
        "store.write('K', 'a value long enough to fingerprint')\n"
        "assert store.read('K') is not None\n"
        "heavy = ('numpy', 'IPython', 'ipykernel', 'ipywidgets', 'tornado', 'jupyter_server',\n"
        "         'websockets', 'jupyter_secure_storage.scan', 'jupyter_secure_storage.bridge',\n"
        "         'jupyter_secure_storage.kernel', 'jupyter_secure_storage.cli')\n"
        "print(','.join(sorted(name for name in heavy if name in sys.modules)))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "", f"loaded by a write: {loaded}"


def test_a_command_loads_only_its_own_group() -> None:
    # `$(jupyter-secure-storage read KEY)` in a script must not pay for the scanner, the
    # bridge, asyncio or the vault's ciphers (the unlock agent holds the key).
    code = (
        "import sys\n"
        "from jupyter_secure_storage.cli.main import build_parser\n"
        "parser = build_parser('read')\n"
        "assert parser.parse_args(['read', 'K']).command == 'read'\n"
        "import jupyter_secure_storage.backends.vault\n"
        "heavy = ('asyncio', 'numpy', 'cryptography', 'jupyter_secure_storage.scan',\n"
        "         'jupyter_secure_storage.bridge', 'jupyter_secure_storage.agent',\n"
        "         'jupyter_secure_storage.known_values', 'jupyter_secure_storage.cli.scan')\n"
        "print(','.join(sorted(name for name in heavy if name in sys.modules)))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "", f"loaded for `read`: {loaded}"
