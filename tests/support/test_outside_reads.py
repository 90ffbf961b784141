"""The guard against reading outside the repository (tests/support/outside_reads.py) catches real reads."""

from __future__ import annotations

import contextlib
import glob
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from .outside_reads import REPO_ROOT, WATCH, OutsideRead, is_outside

# Beside the repository: where `../shared` was; nothing of the project may be read from there.
BESIDE = REPO_ROOT.parent / "shared" / "spec" / "requirements.csv"


def test_the_guard_is_installed_and_on() -> None:
    assert WATCH.enabled


def test_repository_venv_and_tmp_are_inside(tmp_path: Path) -> None:
    assert not is_outside(REPO_ROOT / "fixtures" / "synthea")
    assert not is_outside(sys.prefix)
    assert not is_outside(tmp_path / "x.json")
    assert not is_outside(os.__file__)  # the standard library


def test_relative_and_dotted_paths_are_resolved() -> None:
    assert is_outside("../shared/data", cwd=str(REPO_ROOT))
    assert is_outside(str(REPO_ROOT / "fixtures" / ".." / ".." / "shared"))
    assert is_outside(os.fsencode(BESIDE))
    assert not is_outside("fixtures/spec", cwd=str(REPO_ROOT))


def test_open_outside_fails_at_the_call() -> None:
    with WATCH.expecting() as caught, pytest.raises(OutsideRead, match="outside the repository"):
        open(BESIDE, encoding="utf-8")  # noqa: SIM115 (never gets a file)
    assert len(caught) == 1


def test_a_caught_violation_is_still_recorded() -> None:
    # Code that swallows every exception cannot hide the read.
    with WATCH.expecting() as caught:
        for read in (
            lambda: BESIDE.read_text(encoding="utf-8"),
            lambda: glob.glob(str(BESIDE.parent / "*.csv")),
        ):
            with contextlib.suppress(Exception):  # the point of the test
                read()
    assert len(caught) == 2
    assert all(str(BESIDE.parent) in c for c in caught)


def test_a_symlink_inside_to_outside_is_followed(tmp_path: Path) -> None:
    link = tmp_path / "shared"
    link.symlink_to(BESIDE.parent, target_is_directory=True)
    with WATCH.expecting() as caught, pytest.raises(OutsideRead):
        (link / "requirements.csv").open(encoding="utf-8")
    assert caught


def test_os_open_listing_and_sqlite_are_watched() -> None:
    with WATCH.expecting() as caught:
        with pytest.raises(OutsideRead):
            os.open(BESIDE, os.O_RDONLY)
        with pytest.raises(OutsideRead):
            os.listdir(REPO_ROOT.parent)
        with pytest.raises(OutsideRead):
            sqlite3.connect(REPO_ROOT.parent / "cds.sqlite3")
        with pytest.raises(OutsideRead):
            sqlite3.connect(f"file:{REPO_ROOT.parent / 'cds.sqlite3'}?mode=ro", uri=True)
    assert len(caught) == 4


def test_a_child_process_given_a_path_outside_is_refused() -> None:
    # The parent directory exists in every checkout, so this names a real path outside.
    with WATCH.expecting() as caught, pytest.raises(OutsideRead):
        subprocess.run([sys.executable, "-c", "pass", f"--seed={REPO_ROOT.parent}"], check=True)
    assert caught


def test_beside_a_clone_in_the_temporary_directory_is_outside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A checkout at <tmp>/ci/repo with <tmp>/ci/shared beside it: the temporary directory is an
    # allowed root, but the checkout's neighbours are not.
    from . import outside_reads

    ci = tmp_path / "ci"
    monkeypatch.setattr(outside_reads, "_REPO", str(ci / "repo"))
    monkeypatch.setattr(outside_reads, "_BESIDE", str(ci))
    assert is_outside(ci / "shared" / "spec" / "requirements.csv")
    assert is_outside(ci)
    assert not is_outside(ci / "repo" / "fixtures" / "spec")
    assert not is_outside(tmp_path / "elsewhere.json")  # other temporary files stay allowed
