"""Which modules run compiled (mypyc, see setup.py), and a refusal to run a compile older than its source."""

from __future__ import annotations

import hashlib
import importlib
import json
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

PACKAGE = Path(__file__).parent
# Written by setup.py after a successful compile: module -> SHA-256 of the source it was built from.
MANIFEST = PACKAGE / "native-build.json"
# mypyc's shared library for the whole group (setup.py's group name): not a module of ours.
GROUP_LIBRARY = "_native__mypyc"


class StaleCompiledModules(ImportError):
    """A compiled module no longer matches its source: Python would run the old compiled code."""


def source_digest(path: Path) -> str:
    """The SHA-256 of a source file, as setup.py records it."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _module_name(extension: Path, package: Path) -> str:
    relative = extension.relative_to(package.parent)
    stem = relative.name.split(".", 1)[0]
    parts = [*relative.parent.parts, stem]
    return ".".join(parts[:-1] if stem == "__init__" else parts)


def extension_files(package: Path = PACKAGE) -> dict[str, Path]:
    """Compiled extension files in the package, by module name (the group library left out)."""
    found: dict[str, Path] = {}
    for suffix in EXTENSION_SUFFIXES:
        for extension in package.rglob(f"*{suffix}"):
            if not extension.name.startswith(GROUP_LIBRARY):
                found[_module_name(extension, package)] = extension
    return found


def built_modules(package: Path = PACKAGE) -> dict[str, str] | None:
    """The manifest of the last compile (module -> source digest), or None if there is none."""
    try:
        manifest = (package / MANIFEST.name).read_text(encoding="utf-8")
        modules: dict[str, str] = json.loads(manifest)["modules"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return modules


def stale_modules(package: Path = PACKAGE) -> list[str]:
    """Modules whose compiled extension was not built from the source now beside it."""
    built = built_modules(package) or {}
    stale = []
    for module, extension in sorted(extension_files(package).items()):
        source = extension.parent / (extension.name.split(".", 1)[0] + ".py")
        if not source.exists() or built.get(module) != source_digest(source):
            stale.append(module)
    return stale


def check(package: Path = PACKAGE) -> None:
    """Refuse to import the service when a compiled module is older than its source.

    Python prefers an extension module to the .py beside it, so an edited rule would otherwise
    be silently ignored: tests would pass against, and a server would run, the old rule.
    """
    stale = stale_modules(package)
    if stale:
        raise StaleCompiledModules(
            f"compiled modules do not match their source: {', '.join(stale)}. Rebuild them "
            "(`make build`, which `make run` and `make test` do for you) or remove them "
            "(`make clean-native`)."
        )


def compiled(modules: list[str]) -> list[str]:
    """Of the named (imported) modules, those running as compiled extensions."""
    return [
        name
        for name in modules
        if name in sys.modules
        and str(getattr(sys.modules[name], "__file__", "")).endswith(tuple(EXTENSION_SUFFIXES))
    ]


def summary() -> str:
    """One line for the start-up log: how many of the compiled modules are in use."""
    built = built_modules()
    if built is None:
        return "pure Python (no compiled modules; `make build` compiles them)"
    modules = sorted(built)
    for name in modules:  # all are imported by the app anyway; the count must not depend on it
        importlib.import_module(name)
    return f"{len(compiled(modules))} of {len(modules)} compiled modules in use (mypyc)"


# Runs as the package is imported (cds_service/__init__.py imports this module before any other).
check()
