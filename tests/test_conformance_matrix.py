"""docs/conformance.md against the CDS Hooks 2.0 requirement list and the test suite.

The matrix must list every requirement whose actors include Service, once and in ID order, with the
CSV's conformance level; each `tested` row must name tests that exist; `n/a` and `not yet` rows must
give a reason. "Exists" is checked on the source text (the file contains `def <name>(`, or
`class <Name>` for the class parts of a node id), not by collecting tests.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CSV_PATH = REPO / "fixtures" / "spec" / "cds-hooks-2.0-requirements.csv"
MATRIX = REPO / "docs" / "conformance.md"
SERVICE_REQUIREMENTS = 120  # Service rows of the CDS Hooks 2.0 CSV; a change means the CSV changed
STATUSES = ("tested", "n/a", "not yet")
HEADER = ["ID", "Requirement (short)", "Level", "Status", "Tests / reason"]
NODE_ID = re.compile(r"(tests/[\w./-]+?\.py)::([\w:]+)(\[[^\]`]*\])?")
TOTALS = re.compile(r"^Totals: (\d+) tested, (\d+) n/a, (\d+) not yet\.$", re.MULTILINE)


@dataclass(frozen=True)
class Requirement:
    """One CSV row: its ID and conformance level."""

    id: int
    level: str
    text: str


@dataclass(frozen=True)
class Row:
    """One row of the matrix table."""

    line: int
    id: str
    level: str
    status: str
    cell: str


def service_requirements(path: Path) -> dict[int, Requirement]:
    """The CSV's requirements whose Actors include Service, by ID."""
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    found = {}
    for row in rows:
        actors = {a.strip() for a in row["Actors*"].split(",")}
        if "Service" in actors:
            rid = int(row["ID*"])
            found[rid] = Requirement(rid, row["Conformance*"].strip(), row["Requirement*"])
    return found


def parse_matrix(text: str) -> tuple[list[Row], list[str]]:
    """The table rows under the `| ID | ...` header, and any lines that are not well-formed rows."""
    rows: list[Row] = []
    problems: list[str] = []
    in_table = False
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not in_table:
            if stripped.startswith("|") and _cells(stripped) == HEADER:
                in_table = True
            continue
        if not stripped.startswith("|"):
            break
        cells = _cells(stripped)
        if all(set(c) <= {"-", ":"} and c for c in cells):
            continue  # the separator line
        if len(cells) != len(HEADER):
            problems.append(f"line {number}: {len(cells)} columns, expected {len(HEADER)}: {line}")
            continue
        rid, _short, level, status, cell = cells
        rows.append(Row(number, rid, level, status, cell))
    if not in_table:
        problems.append(f"no table with the header | {' | '.join(HEADER)} |")
    return rows, problems


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def named_tests(cell: str) -> list[str]:
    """The pytest node ids named in a Tests / reason cell, as written."""
    return [m.group(0) for m in NODE_ID.finditer(cell)]


def reason_text(cell: str) -> str:
    """A cell with its node ids, backticks and punctuation removed: what is left is the reason."""
    return re.sub(r"[`,;:()\s]+", " ", NODE_ID.sub("", cell)).strip()


def missing_test(repo: Path, node_id: str) -> str | None:
    """Why node_id does not name an existing test, or None when it does."""
    match = NODE_ID.fullmatch(node_id)
    if match is None:
        return f"{node_id!r} is not a pytest node id (tests/<file>.py::<name>)"
    file, names, parameters = match.groups()
    if parameters:
        return f"{node_id}: name a parametrized test without its parameter part"
    path = (repo / file).resolve()
    if not path.is_relative_to(repo / "tests") or not path.is_file():
        return f"{node_id}: there is no file {file}"
    source = path.read_text(encoding="utf-8")
    *classes, function = names.split("::")
    for name in classes:
        if not re.search(rf"^\s*class {re.escape(name)}\b", source, re.MULTILINE):
            return f"{node_id}: {file} has no class {name}"
    if not re.search(rf"\bdef {re.escape(function)}\(", source):
        return f"{node_id}: {file} has no def {function}("
    return None


def matrix_problems(requirements: dict[int, Requirement], text: str, repo: Path) -> list[str]:
    """Everything wrong with a matrix text; [] when it is complete and every named test exists."""
    rows, problems = parse_matrix(text)
    seen: list[int] = []
    for row in rows:
        where = f"line {row.line} (ID {row.id})"
        if not row.id.isdigit():
            problems.append(f"{where}: the ID is not a number")
            continue
        rid = int(row.id)
        requirement = requirements.get(rid)
        if requirement is None:
            problems.append(f"{where}: ID {rid} is not a CDS Hooks requirement for the Service")
        elif row.level != requirement.level:
            problems.append(f"{where}: level {row.level!r}, but the CSV says {requirement.level!r}")
        if rid in seen:
            problems.append(f"{where}: ID {rid} is listed twice")
        elif seen and rid < seen[-1]:
            problems.append(
                f"{where}: ID {rid} comes after ID {seen[-1]}; keep the rows in ID order"
            )
        seen.append(rid)
        if row.status not in STATUSES:
            problems.append(f"{where}: status {row.status!r} is not one of {', '.join(STATUSES)}")
        tests = named_tests(row.cell)
        if row.status == "tested" and not tests:
            problems.append(f"{where}: status tested, but no test is named")
        if row.status in ("n/a", "not yet") and not reason_text(row.cell):
            problems.append(f"{where}: status {row.status}, but no reason is given")
        for node_id in tests:
            why = missing_test(repo, node_id)
            if why:
                problems.append(f"{where}: {why}")
    missing = sorted(set(requirements) - set(seen))
    if missing:
        problems.append(f"Service requirements missing from the matrix: {missing}")
    totals = TOTALS.search(text)
    if totals:
        counted = Counter(row.status for row in rows)
        stated = dict(zip(STATUSES, (int(n) for n in totals.groups()), strict=True))
        actual = {status: counted[status] for status in STATUSES}
        if stated != actual:
            problems.append(f"the Totals line says {stated}, the table has {actual}")
    return problems


# --- the real matrix --------------------------------------------------------------------------


def test_csv_has_the_expected_service_requirements() -> None:
    requirements = service_requirements(CSV_PATH)
    assert len(requirements) == SERVICE_REQUIREMENTS, (
        f"{CSV_PATH} now has {len(requirements)} Service requirements, not {SERVICE_REQUIREMENTS}: "
        "review docs/conformance.md against the changed CSV, then update SERVICE_REQUIREMENTS"
    )


def test_conformance_matrix_is_complete_and_names_existing_tests() -> None:
    problems = matrix_problems(
        service_requirements(CSV_PATH), MATRIX.read_text(encoding="utf-8"), REPO
    )
    assert not problems, "docs/conformance.md:\n" + "\n".join(problems)


# --- the checker itself, on made-up matrices --------------------------------------------------

FAKE_REQUIREMENTS = {
    1: Requirement(1, "SHALL", "JSON"),
    4: Requirement(4, "SHALL", "discovery"),
    27: Requirement(27, "SHOULD", "fast"),
}


def fake_matrix(*rows: str) -> str:
    header = "| " + " | ".join(HEADER) + " |\n|---|---|---|---|---|\n"
    return "# Matrix\n\n" + header + "\n".join(rows) + "\n"


@pytest.fixture
def fake_repo(tmp_path: Path) -> Path:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text(
        "def test_json() -> None:\n    pass\n\n\nclass TestDiscovery:\n    def test_get(self) -> None:\n"
        "        pass\n",
        encoding="utf-8",
    )
    return tmp_path


GOOD_ROWS = (
    "| 1 | JSON | SHALL | tested | `tests/test_x.py::test_json` |",
    "| 4 | Discovery | SHALL | tested | `tests/test_x.py::TestDiscovery::test_get`; a note |",
    "| 27 | Fast | SHOULD | not yet | no timing test yet |",
)


def test_checker_accepts_a_complete_matrix(fake_repo: Path) -> None:
    text = fake_matrix(*GOOD_ROWS) + "\nTotals: 2 tested, 0 n/a, 1 not yet.\n"
    assert matrix_problems(FAKE_REQUIREMENTS, text, fake_repo) == []


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        (GOOD_ROWS[:2], "missing from the matrix: [27]"),
        (
            (*GOOD_ROWS, "| 2 | HTTPS | SHALL | n/a | proxy |"),
            "ID 2 is not a CDS Hooks requirement",
        ),
        ((GOOD_ROWS[1], GOOD_ROWS[0], GOOD_ROWS[2]), "keep the rows in ID order"),
        ((*GOOD_ROWS, GOOD_ROWS[2]), "ID 27 is listed twice"),
        (
            (
                GOOD_ROWS[0],
                "| 4 | Discovery | SHALL | tested | covered by the API tests |",
                GOOD_ROWS[2],
            ),
            "status tested, but no test is named",
        ),
        (
            (
                GOOD_ROWS[0],
                "| 4 | Discovery | SHALL | tested | `tests/test_x.py::test_gone` |",
                GOOD_ROWS[2],
            ),
            "tests/test_x.py has no def test_gone(",
        ),
        (
            (
                GOOD_ROWS[0],
                "| 4 | Discovery | SHALL | tested | `tests/test_y.py::test_get` |",
                GOOD_ROWS[2],
            ),
            "there is no file tests/test_y.py",
        ),
        (
            (
                GOOD_ROWS[0],
                "| 4 | D | SHALL | tested | `tests/test_x.py::TestOther::test_get` |",
                GOOD_ROWS[2],
            ),
            "has no class TestOther",
        ),
        (
            ("| 1 | JSON | SHALL | tested | `tests/test_x.py::test_json[a]` |", *GOOD_ROWS[1:]),
            "without its parameter part",
        ),
        ((*GOOD_ROWS[:2], "| 27 | Fast | SHOULD | n/a |  |"), "status n/a, but no reason is given"),
        ((*GOOD_ROWS[:2], "| 27 | Fast | SHOULD | todo | later |"), "status 'todo' is not one of"),
        ((*GOOD_ROWS[:2], "| 27 | Fast | MAY | not yet | later |"), "but the CSV says 'SHOULD'"),
        ((*GOOD_ROWS[:2], "| 27 | Fast | SHOULD | not yet |"), "4 columns, expected 5"),
    ],
)
def test_checker_reports_each_kind_of_problem(
    fake_repo: Path, rows: tuple[str, ...], expected: str
) -> None:
    problems = matrix_problems(FAKE_REQUIREMENTS, fake_matrix(*rows), fake_repo)
    assert any(expected in p for p in problems), problems


def test_checker_reports_a_wrong_totals_line(fake_repo: Path) -> None:
    text = fake_matrix(*GOOD_ROWS) + "\nTotals: 3 tested, 0 n/a, 0 not yet.\n"
    [problem] = matrix_problems(FAKE_REQUIREMENTS, text, fake_repo)
    assert "Totals line" in problem


def test_checker_needs_the_table_header(fake_repo: Path) -> None:
    problems = matrix_problems(FAKE_REQUIREMENTS, "# Matrix\n\nno table here\n", fake_repo)
    assert any("no table with the header" in p for p in problems)
