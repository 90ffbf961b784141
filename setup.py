"""Build hook: with CDS_COMPILE set, the pure modules of a hook call's path are compiled with mypyc.

CDS_COMPILE=1         compile; without a working C compiler, warn and stay pure Python.
CDS_COMPILE=required  compile or fail the build (the production image).
unset                 pure Python (the metadata lives in pyproject.toml either way).

The compiled modules are the same source, type-checked as `make typecheck` checks them (the project's
mypy settings); mypyc turns their type hints into C. `make build` compiles them in place; every
module's source digest goes to cds_service/native-build.json, and cds_service/native.py refuses to
run a compiled module whose source has changed since.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).parent
MODE = os.environ.get("CDS_COMPILE", "")
GROUP = "cds_service._native"  # one shared library for all of them (see cds_service/native.py)

# What a hook call runs between parsing the body and answering: reading the FHIR data, the rules,
# the card text, prefetch and request validation. HTTP (Flask), the database, logging, errors and
# start-up stay interpreted: little time is spent in them, and they lean on dynamic libraries.
NATIVE = [
    "cds_service/fhir/data.py",
    "cds_service/fhir/record.py",
    *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "cds_service" / "rules").glob("*.py")),
    "cds_service/render.py",
    "cds_service/knowledge/valuesets.py",
    "cds_service/knowledge/loader.py",
    "cds_service/hooks.py",
    "cds_service/prefetch.py",
    "cds_service/fatigue.py",
    "cds_service/protocol/schemas.py",
]


def module_name(path: str) -> str:
    name = path.removesuffix(".py").replace("/", ".")
    return name.removesuffix(".__init__")


# The sources as mypyc reads them: digested before it generates C, so a file edited during the
# build reads as stale afterwards instead of being vouched for.
DIGESTS = (
    {module_name(p): hashlib.sha256((ROOT / p).read_bytes()).hexdigest() for p in NATIVE}
    if MODE
    else {}
)


class BuildNative(build_ext):
    """build_ext that records what it compiled and, unless required, falls back to pure Python."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # compiler missing or failing: setuptools raises several kinds
            if MODE == "required":
                raise
            self._remove_outputs()
            print(
                f"warning: compiling with mypyc failed ({type(exc).__name__}: {exc}); "
                "the service runs as pure Python (slower, same behaviour)",
                file=sys.stderr,
            )
            return
        self._write_manifest()

    def _remove_outputs(self) -> None:
        # Half a build would be worse than none: shims without their shared library fail to import.
        for ext in self.extensions:
            Path(self.get_ext_fullpath(ext.name)).unlink(missing_ok=True)

    def _write_manifest(self) -> None:
        package = ROOT / "cds_service" if self.inplace else Path(self.build_lib) / "cds_service"
        (package / "native-build.json").write_text(
            json.dumps({"group": GROUP, "modules": DIGESTS}, indent=1, sort_keys=True) + "\n",
            encoding="utf-8",
        )


def ext_modules() -> list[Any]:
    if not MODE:
        return []
    try:
        from mypyc.build import mypycify

        return list(mypycify(NATIVE, group_name=GROUP))
    except (Exception, SystemExit) as exc:  # mypy missing, or a type error it reports by exiting
        if MODE == "required":
            raise
        print(f"warning: mypyc did not run ({exc!r}); pure Python", file=sys.stderr)
        return []


setup(ext_modules=ext_modules(), cmdclass={"build_ext": BuildNative})
