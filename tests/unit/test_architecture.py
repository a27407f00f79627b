"""The layering rules of docs/architecture.md, read from the import graph of ``provisioning/``
(every import statement, type-only and function-local ones included), and the pinned public API."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import provisioning

PACKAGE = Path(provisioning.__file__).parent

#: transports sit below these: they report upward through callbacks they are given
ABOVE_TRANSPORTS = ("provisioning.machine", "provisioning.convergence", "provisioning.driver",
                    "provisioning.drivers", "provisioning.cluster", "provisioning.lifecycle",
                    "provisioning.registry", "provisioning.cli")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None



def _imported(node: ast.AST, package: str) -> tuple[str, list[str]] | None:
    """For an import statement: the module it names (relative ones made absolute) and the
    dotted names it imports (``import a.b``: ``a.b``; ``from a import b``: ``a.b``)."""
    if isinstance(node, ast.Import):
        return "", [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return None
    base = node.module or ""
    if node.level:
        parts = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join(parts + ([base] if base else []))
    return base, [f"{base}.{alias.name}" for alias in node.names]

def import_graph() -> dict[str, set[str]]:
    """module -> the provisioning modules it imports (the package facade left out: it imports
    everything lazily and nothing imports it but for ``__version__``)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            imported = _imported(node, package)
            if imported is None:
                continue
            base, names = imported
            for target in [base, *names] if isinstance(node, ast.ImportFrom) else names:
                if target.startswith("provisioning."):
                    resolved = _resolve(target, modules)
                    if resolved and resolved not in (name, "provisioning"):
                        targets.add(resolved)
        graph[name] = targets
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _inside(module: str, prefixes: tuple[str, ...] | str) -> bool:
    prefixes = (prefixes,) if isinstance(prefixes, str) else prefixes
    return any(module == p or module.startswith(p + ".") for p in prefixes)


#: the public API; a change here is a change for every user (and belongs in CHANGELOG.md)
PUBLIC_API = [
    "ActionHandler", "AuthenticationError", "Capabilities", "Cluster", "ClusterConflict",
    "CommandFailed", "CommandResult",
    "CommandTimeout", "Config", "ConfigError", "ConnectError", "ConvergenceContext",
    "ConvergenceFailed", "ConvergenceStrategy", "DamagedEntry", "Driver", "DriverNotFound", "Event",
    "ForwardedPort", "HostKeyMismatch", "ImageSpec", "InvalidDriverURL", "Kitchen", "Machine",
    "MachineNotFound", "MachineSpec", "MissingExtra", "OptionField", "Parallelizer",
    "PrefixedActionHandler", "ProviderError", "Provisioner", "ProvisioningError",
    "RecordingActionHandler", "Snapshot", "StalePlan", "StateConflict", "StateError", "StateLocked",
    "SyncedFolder", "TransferError", "TransportError", "UnixMachine", "UnsupportedOperation",
    "VerifyFailed", "WindowsMachine", "connect_to_machine", "driver_for_url", "known_schemes",
    "machine_for", "open_store", "register_driver", "register_strategy", "__version__", "errors",
]


def test_public_api_is_pinned_and_every_name_resolves():
    assert provisioning.__all__ == PUBLIC_API
    for name in provisioning.__all__:
        assert getattr(provisioning, name) is not None, name
    assert provisioning.errors.ProvisioningError is provisioning.ProvisioningError


def test_the_graph_sees_the_imports_it_judges():
    graph = import_graph()
    assert "provisioning.transports.base" in graph["provisioning.transports.local"]
    assert "provisioning.machine.base" in graph["provisioning.machine.unix"]
    assert len(graph) > 80


def test_no_import_cycle():
    assert _cycles(import_graph()) == []


def test_the_cycle_finder_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_transports_import_nothing_above_them():
    wrong = sorted((module, target) for module, targets in import_graph().items()
                   if _inside(module, "provisioning.transports")
                   for target in targets if _inside(target, ABOVE_TRANSPORTS))
    assert wrong == []


def test_only_the_cli_imports_the_cli():
    wrong = sorted((module, target) for module, targets in import_graph().items()
                   if not _inside(module, "provisioning.cli")
                   for target in targets if _inside(target, "provisioning.cli"))
    assert wrong == []


def test_nothing_imports_the_facade_but_for_its_version():
    wrong = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "provisioning" and any(
                    alias.name != "__version__" for alias in node.names):
                wrong.append(name)
    assert wrong == []


def test_the_package_uses_no_moved_module_name():
    """Old names of moved modules still import (with a warning) for code outside; inside, the
    new names are used."""
    moved = set(provisioning._MOVED)
    wrong = sorted((module, target) for module, path in _modules().items()
                   for target in _imported_names(path) if target in moved)
    assert wrong == []


def _imported_names(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_at_most_about_ten_modules_at_the_top():
    top = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert len(top) <= 10, top


def test_no_module_over_600_lines_without_a_reason_at_its_top():
    long = []
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        if text.count("\n") > 600 and "over 600 lines because" not in text[:2000]:
            long.append(str(path.relative_to(PACKAGE)))
    assert long == []


def test_tests_run_the_cli_one_way():
    """Every test runs ``converge`` through tests/cli_runner.py (the console script, or its
    entry point in-process), never a hand-made command line of its own."""
    tests = Path(__file__).resolve().parents[1]
    patterns = ('run(["converge"', 'Popen(["converge"', '"-m", "provisioning.cli.main"',
                '"converge"),', "CliRunner(")
    wrong = sorted(str(path.relative_to(tests)) for path in tests.rglob("*.py")
                   if path.name not in ("cli_runner.py", "test_architecture.py")
                   and any(p in path.read_text() for p in patterns))
    assert wrong == []


#: (module, our module it imports inside a function) -> why that import is deferred. Everything
#: else is imported at the top of its module: laziness for start-up comes from the declared
#: by-name tables of ``provisioning/lazy.py`` (drivers, strategies, stores, commands, the lazy
#: exports). No entry breaks an import cycle (``test_no_import_cycle`` counts these imports too).
LOCAL_IMPORTS_ALLOWED = {
    ("provisioning.store", "provisioning.store.postgres"):
        "psycopg2, an optional extra (provisioning[postgres]): its absence is a MissingExtra",
    ("provisioning.testing.pytest_plugin", "provisioning.cluster"):
        "pytest loads this plugin (entry point pytest11) in every session of every project "
        "that has provisioning installed; the cluster package loads only for a cluster test",
}


def function_local_imports() -> set[tuple[str, str]]:
    """(module, our module it imports) for each import of ours inside a function."""
    modules = _modules()
    found = set()
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(), str(path))
        for function in ast.walk(tree):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                imported = _imported(node, package)
                if imported is None:
                    continue
                base, names = imported
                for target in [base] if isinstance(node, ast.ImportFrom) else names:
                    if target == "provisioning" or target.startswith("provisioning."):
                        found.add((name, _resolve(target, modules) or target))
    return found


def test_function_local_imports_of_our_modules_are_only_the_allowed_ones():
    found = function_local_imports()
    assert sorted(found - set(LOCAL_IMPORTS_ALLOWED)) == []
    assert sorted(set(LOCAL_IMPORTS_ALLOWED) - found) == []  # a stale entry goes too
    assert all(reason for reason in LOCAL_IMPORTS_ALLOWED.values())


def test_the_local_import_finder_sees_an_import_inside_a_try_of_a_function():
    assert ("provisioning.store", "provisioning.store.postgres") in function_local_imports()


def test_every_dataclass_is_a_record():
    """``provisioning.inputs.records.record`` is the one way to declare a data class in the
    package: ``dataclasses.dataclass`` compiles an ``__eq__``, ``__repr__`` and ``__hash__``
    for each class at import, which made a third of ``converge status``'s start-up."""
    plain = re.compile(r"(?m)^\s*@(dataclasses\.)?dataclass\b")
    wrong = sorted(name for name, path in _modules().items() if plain.search(path.read_text()))
    assert wrong == []
