"""Test tiers with optional engines: with only the base dependencies installed, plain ``pytest`` must skip
what needs an engine instead of failing at collection.

``--doctest-modules`` imports every module under ``src/adaptivestep`` to collect its examples, and a module
whose top-level imports need an extra that is not installed (torch, transformers, llama_cpp, vllm, ray, ...)
would be a collection error. Such modules are left out here, by reading their top-level imports (without
importing them) and asking importlib whether each package is installed; the run's header lists them. Test
files guard themselves with ``pytest.importorskip``.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from functools import cache
from pathlib import Path

SRC = Path(__file__).resolve().parent / "src" / "adaptivestep"
_left_out: list[str] = []


@cache
def _installed(name: str) -> bool:
    return name in sys.stdlib_module_names or importlib.util.find_spec(name) is not None


def _module_file(package: Path, dotted: str) -> Path | None:
    """The file of module ``dotted`` (relative to the package folder ``package``), if it is in the project."""
    base = package.joinpath(*dotted.split(".")) if dotted else package
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


@cache
def _imports(path: Path) -> tuple[frozenset[str], tuple[Path, ...]]:
    """Module-level imports of ``path``: (third-party top-level packages, project module files)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return frozenset(), ()  # let pytest report it
    names: set[str] = set()
    internal: list[Path | None] = []
    for node in tree.body:  # module level only: imports inside functions or try blocks are optional
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                pkg = path.parent
                for _ in range(node.level - 1):
                    pkg = pkg.parent
                internal.append(_module_file(pkg, node.module or ""))
                internal += [_module_file(pkg, f"{node.module}.{a.name}" if node.module else a.name)
                             for a in node.names]
            elif node.module:
                names.add(node.module.split(".")[0])
                if node.module.startswith("adaptivestep."):
                    internal.append(_module_file(SRC, node.module.removeprefix("adaptivestep.")))
    names.discard("adaptivestep")
    return frozenset(names), tuple(f for f in internal if f is not None)


def _missing_imports(path: Path) -> list[str]:
    """Third-party packages that importing ``path`` needs (its module-level imports and those of the project
    modules it imports, transitively) and that are not installed."""
    missing: set[str] = set()
    seen, todo = {path}, [path]
    while todo:
        names, internal = _imports(todo.pop())
        missing.update(n for n in names if not _installed(n))
        for f in internal:
            if f not in seen:
                seen.add(f)
                todo.append(f)
    return sorted(missing)


def pytest_ignore_collect(collection_path: Path, config: object) -> bool | None:
    if collection_path.suffix != ".py" or SRC not in collection_path.parents:
        return None
    missing = _missing_imports(collection_path)
    if missing:
        _left_out.append(f"{collection_path.relative_to(SRC.parent)} (needs {', '.join(missing)})")
        return True
    return None


def pytest_report_collectionfinish(config: object) -> list[str]:
    if not _left_out:
        return []
    return [f"doctests skipped, engine not installed: {'; '.join(sorted(set(_left_out)))}"]
