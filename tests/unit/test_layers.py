"""The layers import one way only: models <- protocol <- dispatch <- transports <- server."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "simple_http_server"
TOP = "simple_http_server"

# module prefix -> package-internal prefixes it must never import
FORBIDDEN_INTERNAL = {
    "protocol": ("dispatch", "transport", "adapters", "server", "testing", "workers"),
    "dispatch": ("transport", "adapters", "server", "testing", "workers", "__main__"),
    "transport": ("adapters", "server", "testing", "workers", "__main__"),
    "models": ("dispatch", "transport", "adapters", "server", "protocol"),
    "errors": ("dispatch", "transport", "adapters", "server", "protocol"),
    "config": ("dispatch", "transport", "adapters", "server", "protocol"),
}
# module prefix -> stdlib modules it must never import (I/O belongs to transports)
FORBIDDEN_STDLIB = {
    "protocol": ("socket", "selectors", "asyncio", "threading", "ssl"),
    "dispatch": ("socket", "selectors", "ssl"),
}
ASYNCIO_ALLOWED_IN_DISPATCH = {"dispatch.invoke"}


def _modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).with_suffix("")
        name = ".".join(rel.parts)
        found.append((name.removesuffix(".__init__"), path))
    return found


def _runtime_imports(path: Path, module: str) -> set[str]:
    """Absolute names imported outside ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package_parts = module.split(".")
    if not path.name == "__init__.py":
        package_parts = package_parts[:-1]
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                names.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package_parts[: len(package_parts) - (child.level - 1)]
                    target = ".".join([TOP, *base, *([child.module] if child.module else [])])
                    target = target.replace(f"{TOP}.{TOP}", TOP)
                    names.add(target)
                    if not child.module:
                        names.update(f"{target}.{a.name}" for a in child.names)
                elif child.module:
                    names.add(child.module)
            visit(child)

    visit(tree)
    return names


@pytest.mark.parametrize(("module", "path"), _modules(), ids=[m for m, _ in _modules()])
def test_layer_rules(module: str, path: Path) -> None:
    imports = _runtime_imports(path, module)
    layer = module.split(".")[0]
    for banned in FORBIDDEN_INTERNAL.get(layer, ()):
        offenders = [
            i for i in imports if i == f"{TOP}.{banned}" or i.startswith(f"{TOP}.{banned}.")
        ]
        assert not offenders, f"{module} must not import {offenders}"
    for banned in FORBIDDEN_STDLIB.get(layer, ()):
        assert banned not in imports, f"{module} must not import {banned}"
    if layer == "dispatch" and module not in ASYNCIO_ALLOWED_IN_DISPATCH:
        assert "asyncio" not in imports, f"{module}: only dispatch/invoke.py may use asyncio"
