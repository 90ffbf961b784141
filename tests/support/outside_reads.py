"""Pytest plugin: fails the run when a test reads a file outside the repository (a clone has no `../shared`).

A `sys.addaudithook` hook watches the interpreter's file-access audit events (open, os.open,
directory listings, glob, sqlite3.connect, shutil copies, process starts with path arguments).
Each path is made absolute against the current directory and resolved through symlinks and `..`,
then must lie in the repository or in a place any Python process reads: the virtualenv and
site-packages, the standard library, the temporary directory (pytest's tmp_path), /proc, /dev,
/sys, /etc (system configuration such as TLS roots and time zones) and the time-zone database.

A violation raises `OutsideRead` at the offending call (a RuntimeError, so the `except OSError`
that glob and friends use cannot swallow it) and is also recorded: the test that made it fails
in teardown, and a read during collection or in a fixture still fails the whole run at the end,
even if the code under test caught the exception.

Not seen (needs deliberate effort, not a path slip): reads made by C code without an audit event,
by a child process from paths it was not given as arguments, and `os.open(..., dir_fd=...)`.
"""

from __future__ import annotations

import os
import site
import ssl
import sys
import sysconfig
import tempfile
import threading
import zoneinfo
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

# Events whose first argument is a path that is read (or listed, or copied from).
_PATH_EVENTS = frozenset(
    {
        "open",
        "os.listdir",
        "os.scandir",
        "glob.glob",
        "shutil.copyfile",
        "shutil.copytree",
        "sqlite3.connect",
    }
)
_PROCESS_EVENTS = frozenset({"subprocess.Popen", "os.posix_spawn", "os.exec"})


class OutsideRead(RuntimeError):
    """A test touched a file outside the repository and the allowed system places."""


def _real(path: str | os.PathLike[str]) -> str:
    return os.path.realpath(os.path.abspath(path))


def allowed_roots() -> tuple[str, ...]:
    """Directories (resolved) where tests may read besides the repository."""
    paths = sysconfig.get_paths()
    verify = ssl.get_default_verify_paths()
    candidates = [
        sys.prefix,
        sys.exec_prefix,
        paths["stdlib"],
        paths["platstdlib"],
        paths["purelib"],
        paths["platlib"],
        *site.getsitepackages(),
        # The interpreter's own import path (python3XX.zip, lib-dynload), probed on every import.
        *(p for p in sys.path if p and p.startswith((sys.base_prefix, sys.prefix))),
        site.getusersitepackages(),
        tempfile.gettempdir(),
        "/proc",
        "/dev",
        "/sys",
        "/etc",
        *zoneinfo.TZPATH,
        *(p for p in (verify.cafile, verify.capath) if p),
    ]
    return tuple(sorted({_real(p) for p in candidates}))


_ALLOWED = allowed_roots()


_REPO = _real(REPO_ROOT)
# Where a checkout's neighbours (such as ../shared) live. When that is the temporary directory
# itself (a clone at /tmp/x), neighbours cannot be told from temporary files: no such rule then.
_PARENT = _real(REPO_ROOT.parent)
_BESIDE = _PARENT if _real(tempfile.gettempdir()) != _PARENT else None


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def is_outside(path: str | bytes | os.PathLike[Any], cwd: str | None = None) -> bool:
    """Whether `path` (relative to `cwd`, default the current directory) resolves outside the
    repository and every allowed root. A path beside the repository (under its parent directory)
    is outside even when a broad allowed root holds both (a clone in /tmp/ci/ with /tmp/ci/shared
    beside it). Nonexistent paths count too: trying to read one is the mistake being caught."""
    text = os.fsdecode(path)
    if not os.path.isabs(text):
        text = os.path.join(cwd or os.getcwd(), text)
    real = os.path.realpath(text)
    if _under(real, _REPO):
        return False
    beside = _BESIDE is not None and _under(real, _BESIDE)
    return not any(
        _under(real, root) and not (beside and _under(_BESIDE or "", root)) for root in _ALLOWED
    )


def _process_paths(argv: Any, cwd: Any) -> list[str]:
    """Arguments of a process start that name existing paths outside (argv[0], the program, aside)."""
    if isinstance(argv, (str, bytes)) or argv is None:
        return []
    base = os.fsdecode(cwd) if cwd is not None else os.getcwd()
    found = []
    for arg in list(argv)[1:]:
        if not isinstance(arg, (str, bytes, os.PathLike)):
            continue
        text = os.fsdecode(arg)
        # --seed=/some/path style options carry the path after "=".
        for candidate in (text, text.partition("=")[2]):
            if os.sep not in candidate:
                continue
            full = candidate if os.path.isabs(candidate) else os.path.join(base, candidate)
            if os.path.exists(full) and is_outside(full):
                found.append(candidate)
    return found


class _Watch:
    """The audit hook's state: whether it is on and what it has seen."""

    def __init__(self) -> None:
        self.enabled = False
        self.violations: list[str] = []
        self._local = threading.local()

    def hook(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.enabled or getattr(self._local, "busy", False):
            return
        if event not in _PATH_EVENTS and event not in _PROCESS_EVENTS:
            return
        self._local.busy = True  # the checks themselves must not re-enter
        try:
            problem = self._check(event, args)
        finally:
            self._local.busy = False
        if problem:
            self.violations.append(problem)
            raise OutsideRead(problem)

    def _check(self, event: str, args: tuple[Any, ...]) -> str | None:
        if event in _PROCESS_EVENTS:
            if event == "subprocess.Popen":
                argv, cwd = args[1], args[2]
            else:
                argv, cwd = args[1], None
            outside = _process_paths(argv, cwd)
            return f"{event} given paths outside the repository: {outside}" if outside else None
        path = args[0] if args else None
        if not isinstance(path, (str, bytes, os.PathLike)):
            return None  # a file descriptor: its opening was checked
        if event == "glob.glob":
            path = os.path.dirname(os.fsdecode(path).split("*")[0].split("?")[0]) or "."
        if event == "sqlite3.connect":
            name, _, query = os.fsdecode(path).removeprefix("file:").partition("?")
            if name in {":memory:", ""} or "mode=memory" in query:
                return None
            path = name
        if is_outside(path):
            return f"{event} {os.fsdecode(path)!r} is outside the repository {REPO_ROOT}"
        return None

    @contextmanager
    def expecting(self) -> Iterator[list[str]]:
        """For the plugin's own tests: violations inside the block are collected, not kept."""
        before = len(self.violations)
        caught: list[str] = []
        try:
            yield caught
        finally:
            caught.extend(self.violations[before:])
            del self.violations[before:]


WATCH = _Watch()


def pytest_configure(config: pytest.Config) -> None:
    sys.addaudithook(WATCH.hook)  # audit hooks cannot be removed: `enabled` turns it off
    WATCH.enabled = True


def pytest_unconfigure(config: pytest.Config) -> None:
    WATCH.enabled = False


@pytest.fixture(autouse=True)
def _no_reads_outside_repository() -> Iterator[None]:
    before = len(WATCH.violations)
    yield
    new = WATCH.violations[before:]
    if new:
        pytest.fail("read outside the repository:\n" + "\n".join(new), pytrace=False)


# Violations that pytest-xdist workers recorded outside any test (their exit status is not the run's).
_FROM_WORKERS: list[str] = []


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """In the xdist controller: take a finished worker's violations."""
    _FROM_WORKERS.extend(getattr(node, "workeroutput", {}).get("outside_reads", []))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    worker_output = getattr(session.config, "workeroutput", None)
    if worker_output is not None:  # an xdist worker: the controller reports them and fails the run
        worker_output["outside_reads"] = list(WATCH.violations)
        return
    violations = WATCH.violations + _FROM_WORKERS
    if violations:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line("reads outside the repository:", red=True)
            for violation in violations:
                reporter.write_line(f"  {violation}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
