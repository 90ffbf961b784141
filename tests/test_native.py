"""The compiled build: stale compiled modules are refused, and a compiled build is what the tests run."""

from __future__ import annotations

import importlib
import json
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

from cds_service import native

SUFFIX = EXTENSION_SUFFIXES[0]


def _package(tmp_path: Path, digest_of: dict[str, str] | None = None) -> Path:
    """A package `pkg` with a compiled `mod`, a compiled subpackage `sub` and the group library."""
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "mod.py").write_text("X = 1\n", encoding="utf-8")
    (package / "sub" / "__init__.py").write_text("Y = 2\n", encoding="utf-8")
    for extension in ("mod", "sub/__init__", native.GROUP_LIBRARY):
        (package / f"{extension}{SUFFIX}").write_bytes(b"")  # only the name matters here
    modules = {
        "pkg.mod": native.source_digest(package / "mod.py"),
        "pkg.sub": native.source_digest(package / "sub" / "__init__.py"),
        **(digest_of or {}),
    }
    (package / native.MANIFEST.name).write_text(json.dumps({"modules": modules}), encoding="utf-8")
    return package


def test_extensions_are_named_as_modules_and_the_group_library_is_not_one(tmp_path: Path) -> None:
    package = _package(tmp_path)

    assert sorted(native.extension_files(package)) == ["pkg.mod", "pkg.sub"]


def test_a_compile_of_the_current_source_is_not_stale(tmp_path: Path) -> None:
    package = _package(tmp_path)

    assert native.stale_modules(package) == []
    native.check(package)  # does not raise


def test_an_edited_source_makes_its_compiled_module_stale(tmp_path: Path) -> None:
    package = _package(tmp_path)
    (package / "mod.py").write_text("X = 2  # an edited rule\n", encoding="utf-8")

    assert native.stale_modules(package) == ["pkg.mod"]
    with pytest.raises(native.StaleCompiledModules, match=r"pkg\.mod.*make build"):
        native.check(package)


def test_a_compiled_module_the_manifest_does_not_vouch_for_is_stale(tmp_path: Path) -> None:
    package = _package(tmp_path, {"pkg.sub": "0" * 64})
    assert native.stale_modules(package) == ["pkg.sub"]

    (package / native.MANIFEST.name).unlink()  # compiled by hand, or a manifest lost
    assert native.stale_modules(package) == ["pkg.mod", "pkg.sub"]


def test_a_pure_python_package_has_nothing_to_check(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "mod.py").write_text("X = 1\n", encoding="utf-8")

    assert native.stale_modules(package) == []


def test_a_compiled_build_runs_every_module_it_compiled() -> None:
    # `make test` compiles first (`make build`); this says whether the suite ran that build.
    if not native.MANIFEST.exists():
        pytest.skip("pure Python build: no C compiler, or built without CDS_COMPILE")
    modules = sorted(json.loads(native.MANIFEST.read_text(encoding="utf-8"))["modules"])
    for name in modules:
        importlib.import_module(name)

    assert "cds_service.rules.orders" in modules
    assert native.compiled(modules) == modules
    assert native.stale_modules() == []


def test_the_start_up_line_says_how_much_is_compiled() -> None:
    line = native.summary()

    if native.MANIFEST.exists():
        modules = json.loads(native.MANIFEST.read_text(encoding="utf-8"))["modules"]
        assert line == f"{len(modules)} of {len(modules)} compiled modules in use (mypyc)"
    else:
        assert line.startswith("pure Python")
