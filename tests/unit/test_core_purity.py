"""The core is sans-I/O (DESIGN §2): no module under `broker/core/` imports an I/O library or a
shell. Checked by parsing the source, so a lazy import inside a function is caught too."""

from __future__ import annotations

import ast
import pkgutil
from pathlib import Path

import pytest

import broker.core

FORBIDDEN_LIBRARIES = ("asyncio", "aiokafka", "fastapi", "starlette", "httpx", "uvicorn", "socket")
FORBIDDEN_SHELLS = ("broker.runtime", "broker.gateway", "broker.cli", "broker.commands")
FORBIDDEN = FORBIDDEN_LIBRARIES + FORBIDDEN_SHELLS
DYNAMIC_IMPORTERS = {"import_module", "__import__"}


def core_modules() -> dict[str, Path]:
    """Every module of the `broker.core` package, found on disk (nothing is imported)."""
    modules = {"broker.core": Path(broker.core.__file__)}
    for info in pkgutil.walk_packages(broker.core.__path__, prefix="broker.core."):
        spec = info.module_finder.find_spec(info.name, None)
        assert spec is not None and spec.origin is not None, info.name
        modules[info.name] = Path(spec.origin)
    return modules


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    """The absolute module name an ImportFrom refers to (relative imports resolved)."""
    if node.level == 0:
        return node.module or ""
    package = module if is_package else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def imported_names(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module name the source imports: `import a.b`, `from a import b` (as `a` and
    `a.b`, since b may be a submodule), relative imports, and import_module("...") calls."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, node, is_package)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
        elif isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if called in DYNAMIC_IMPORTERS and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    names.add(first.value)
    return names


def forbidden_in(names: set[str]) -> set[str]:
    return {
        name
        for name in names
        for banned in FORBIDDEN
        if name == banned or name.startswith(banned + ".")
    }


MODULES = core_modules()


def test_the_walk_finds_the_core_modules() -> None:
    assert {"broker.core.aggregation", "broker.core.messages"} <= set(MODULES)
    assert all(path.suffix == ".py" and path.is_file() for path in MODULES.values())


@pytest.mark.parametrize("module", sorted(MODULES))
def test_core_module_imports_no_io_and_no_shell(module: str) -> None:
    path = MODULES[module]
    names = imported_names(path.read_text(encoding="utf-8"), module, path.name == "__init__.py")
    assert forbidden_in(names) == set(), f"{path} imports I/O or a shell"


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("import asyncio", {"asyncio"}),
        ("import socket as s", {"socket"}),
        ("from aiokafka.errors import KafkaError", {"aiokafka.errors"}),
        ("from starlette import requests", {"starlette", "starlette.requests"}),
        ("def f():\n    import httpx\n", {"httpx"}),
        ("from broker.runtime.transport import Transport", {"broker.runtime.transport"}),
        ("from broker import gateway", {"broker.gateway"}),
        ("from .. import cli", {"broker.cli"}),
        ("from ..runtime import metrics", {"broker.runtime", "broker.runtime.metrics"}),
        ("import importlib\nimportlib.import_module('uvicorn')", {"uvicorn"}),
        ("__import__('fastapi')", {"fastapi"}),
    ],
)
def test_checker_catches_forbidden_imports(source: str, found: set[str]) -> None:
    """The check itself can fail: each of these would be reported."""
    assert found <= forbidden_in(imported_names(source, "broker.core.aggregation"))


@pytest.mark.parametrize(
    "source",
    [
        "import hashlib",
        "from broker.core.messages import Decision",
        "from .messages import Decision",
        "import broker.runtimes_are_not_runtime",
        "from asyncio_like import thing",
    ],
)
def test_checker_allows_pure_imports(source: str) -> None:
    assert forbidden_in(imported_names(source, "broker.core.aggregation")) == set()
