"""The shape of the repository: services hold only services, imports run one way, and a
service neither reaches into another service's modules nor carries the benchmark's and the
evaluation's libraries."""

from __future__ import annotations

import ast
import contextlib
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("shared", "services", "suite", "bench", "evaluation")
SERVICES = ("features", "embedding", "retrieval", "trainer", "gateway")
# What the benchmark and the evaluation install (`make bench`, `make eval`), not a service.
TOOL_LIBRARIES = ("matplotlib", "scipy", "tqdm")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every first-party module `name` imports, at the top or inside a function."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return {m for m in found if m in known and m != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_services_holds_only_the_services_and_their_launcher() -> None:
    entries = {p.name for p in (ROOT / "services").iterdir() if p.name != "__pycache__"}
    assert entries == {*SERVICES, "__init__.py", "launcher.py"}


def test_no_import_circle() -> None:
    assert _cycles(_graph()) == []


# The services whose grpc-free domain code another service runs in its own process: the
# trainer ranks with the gateway's policy over features' and retrieval's code to tune the
# ranking it publishes (services/trainer/ranking_tuner.py), through their packages only.
USES_OTHER_SERVICES = {"trainer": {"gateway", "features", "retrieval"}}


def test_no_module_imports_another_services_internals() -> None:
    """Inside a service anything of its own; from outside, a service's package (its public
    entry point) and nothing under it, and from another service not even that, unless it
    is listed above; shared code imports no service at all."""
    wrong = []
    for name, targets in _graph().items():
        parts = name.split(".")
        own = parts[1] if parts[0] == "services" and len(parts) > 1 else None
        for target in targets:
            tparts = target.split(".")
            if tparts[0] != "services" or target in ("services", "services.launcher"):
                continue
            public = len(tparts) == 2
            allowed = (
                own is None
                and public
                or own == tparts[1]
                or public
                and tparts[1] in USES_OTHER_SERVICES.get(own or "", set())
            )
            if parts[0] == "shared" or not allowed:
                wrong.append(f"{name} -> {target}")
    assert wrong == []


def _core_requirements(distribution: str) -> list[Requirement]:
    """What installing `distribution` installs with it: its requirements outside extras."""
    requirements = [Requirement(r) for r in metadata.requires(distribution) or []]
    return [r for r in requirements if r.marker is None or r.marker.evaluate({"extra": ""})]


def test_the_services_installation_declares_none_of_the_tool_libraries() -> None:
    declared = {r.name for r in _core_requirements("recsys-suite")}
    assert declared.isdisjoint(TOOL_LIBRARIES)


def test_plotting_is_not_installed_with_the_services() -> None:
    """scipy and tqdm still come with the text encoder's sentence-transformers; the
    plotting library comes with nothing the services need."""
    installed, waiting = set(), ["recsys-suite"]
    while waiting:
        name = waiting.pop()
        if name.lower() in installed:
            continue
        installed.add(name.lower())
        with contextlib.suppress(metadata.PackageNotFoundError):
            waiting.extend(r.name for r in _core_requirements(name))
    assert "matplotlib" not in installed


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_loads_neither_plotting_nor_statistics(service: str) -> None:
    check = (
        f"import sys, services.{service}.__main__; "
        f"print(sorted(m for m in ('matplotlib', 'scipy') if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert loaded.stdout.strip() == "[]"
