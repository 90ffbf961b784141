"""Lab unit conversion: UCUM codes and common unit texts, molar and equivalent units, junk."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cds_service.fhir.data import Quantity
from cds_service.rules.calcium import ALBUMIN
from cds_service.units import MAX_UNIT_LENGTH, Analyte, above, below, concentration

# Calcium as cards/thresholds.yaml gives it (calcium-molar-mass, CIAAW standard atomic weight).
CALCIUM = Analyte("calcium", molar_mass_g_per_mol=40.078, valence=2)


@pytest.mark.parametrize(
    ("value", "code", "unit", "target", "expected"),
    [
        (8.0, "mg/dL", "mg/dL", "mg/dL", 8.0),
        (2.0, "mmol/L", "mmol/L", "mg/dL", 8.0156),  # x 40.078 / 10
        (8.0156, "mg/dL", None, "mmol/L", 2.0),
        (80.0, "mg/L", "mg/L", "mg/dL", 8.0),
        (4.0, None, "mEq/L", "mmol/L", 2.0),  # calcium is divalent
        (4.0, "meq/L", None, "mg/dL", 8.0156),
        (9.1, None, "MG/DL", "mg/dL", 9.1),  # unit text (not UCUM) in capitals
        (9.1, None, "mg/dl", "mg/dL", 9.1),
    ],
)
def test_calcium_conversions(
    value: float, code: str | None, unit: str | None, target: str, expected: float | None
) -> None:
    result = concentration(Quantity(value, code, unit), target, CALCIUM)
    assert result == pytest.approx(expected) if expected is not None else result is None


def test_albumin_g_per_litre_to_g_per_decilitre() -> None:
    assert concentration(Quantity(35.0, "g/L", "g/L"), "g/dL", ALBUMIN) == pytest.approx(3.5)


@pytest.mark.parametrize(
    "unit", [None, "", "furlongs", "mg", "mg/" * 50, "1" * 400, "{" * (MAX_UNIT_LENGTH + 1)]
)
def test_units_that_are_not_concentrations_give_none(unit: str | None) -> None:
    assert concentration(Quantity(8.0, unit, unit), "mg/dL", CALCIUM) is None


def test_each_installation_has_its_own_pint_cache() -> None:
    # A shared cache sent one checkout's pint to another checkout's definition files.
    from cds_service.units import pint_cache_dir

    assert pint_cache_dir("/a/.venv") != pint_cache_dir("/b/.venv")
    assert pint_cache_dir("/a/.venv") == pint_cache_dir("/a/.venv")


MAGNESIUM = Analyte("magnesium", molar_mass_g_per_mol=24.305, valence=2)
VITAMIN_D = Analyte("25-OH vitamin D", molar_mass_g_per_mol=400.64, valence=1)


@pytest.mark.parametrize(
    ("value", "unit", "analyte", "target", "limit", "is_below"),
    [
        # magnesium-low 0.70 mmol/L = 1.7 mg/dL = 1.4 mEq/L: at, below and above in each unit
        (1.7, "mg/dL", MAGNESIUM, "mmol/L", 0.70, False),  # 0.6994: a conversion artefact
        (1.69, "mg/dL", MAGNESIUM, "mmol/L", 0.70, True),
        (1.6, "mg/dL", MAGNESIUM, "mmol/L", 0.70, True),
        (1.8, "mg/dL", MAGNESIUM, "mmol/L", 0.70, False),
        (0.70, "mmol/L", MAGNESIUM, "mmol/L", 0.70, False),
        (0.69, "mmol/L", MAGNESIUM, "mmol/L", 0.70, True),
        (1.4, "meq/L", MAGNESIUM, "mmol/L", 0.70, False),
        (1.3, "meq/L", MAGNESIUM, "mmol/L", 0.70, True),
        # calcium-total-low 8.5 mg/dL (2.12 mmol/L); calcium-total-severe 7.0 mg/dL (1.75 mmol/L)
        (2.12, "mmol/L", CALCIUM, "mg/dL", 8.5, False),  # 8.4966
        (2.11, "mmol/L", CALCIUM, "mg/dL", 8.5, True),
        (8.5, "mg/dL", CALCIUM, "mg/dL", 8.5, False),
        (8.49, "mg/dL", CALCIUM, "mg/dL", 8.5, True),
        (1.75, "mmol/L", CALCIUM, "mg/dL", 7.0, False),  # 7.0138
        (1.74, "mmol/L", CALCIUM, "mg/dL", 7.0, True),  # 6.9736
        # calcium-ionized-low 1.12 mmol/L (4.489 mg/dL)
        (4.49, "mg/dL", CALCIUM, "mmol/L", 1.12, False),
        (4.48, "mg/dL", CALCIUM, "mmol/L", 1.12, True),
        # vitamin-d-25oh-low 20 ng/mL (49.92 nmol/L); -deficient 12 ng/mL (29.95 nmol/L)
        (50, "nmol/L", VITAMIN_D, "ng/mL", 20, False),
        (49.9, "nmol/L", VITAMIN_D, "ng/mL", 20, True),
        (30, "nmol/L", VITAMIN_D, "ng/mL", 12, False),
        (29.9, "nmol/L", VITAMIN_D, "ng/mL", 12, True),
        (20, "ng/mL", VITAMIN_D, "ng/mL", 20, False),
        (19.9, "ng/mL", VITAMIN_D, "ng/mL", 20, True),
    ],
)
def test_below_a_limit_judged_in_the_results_unit(
    value: float, unit: str, analyte: Analyte, target: str, limit: float, is_below: bool
) -> None:
    converted = concentration(Quantity(value, unit, unit), target, analyte)
    assert converted is not None
    assert below(converted, limit, converted / value) is is_below


@pytest.mark.parametrize(
    ("value", "unit", "limit", "is_above"),
    [
        (2.62, "mmol/L", 10.5, False),  # calcium-total-high 10.5 mg/dL: 10.5007
        (2.63, "mmol/L", 10.5, True),  # 10.5405
        (10.5, "mg/dL", 10.5, False),
        (10.51, "mg/dL", 10.5, True),
    ],
)
def test_above_a_limit_judged_in_the_results_unit(
    value: float, unit: str, limit: float, is_above: bool
) -> None:
    converted = concentration(Quantity(value, unit, unit), "mg/dL", CALCIUM)
    assert converted is not None
    assert above(converted, limit, converted / value) is is_above


def test_a_lab_limit_converted_like_the_value_compares_exactly() -> None:
    # The lab's range in the result's unit, converted with the same factor: float noise only.
    low = concentration(Quantity(1.7, "mg/dL", "mg/dL"), "mmol/L", MAGNESIUM)
    assert low is not None
    assert not below(low, low, low / 1.7)
    assert below(low * 0.999, low, low / 1.7)


def test_without_a_conversion_the_limit_is_exact() -> None:
    assert below(59.99, 60) and not below(60, 60)  # eGFR, mL/min/1.73 m2 as reported
    assert below(8.499, 8.5) and not below(8.5, 8.5)


# Run in a fresh interpreter: the registry is built once per process, and this is about the first.
_FIRST_CONVERSIONS_AT_ONCE = """
import threading
from cds_service.fhir.data import Quantity
from cds_service.units import Analyte, concentration

calcium = Analyte("calcium", 40.078, 2)
units = ["mg/dL", "mmol/L", "meq/L", "umol/L", "g/dL", "mg/L", "ug/mL", "mol/L", "g/L", "ng/mL"]
start = threading.Barrier(8)

def convert(shift):
    start.wait()
    for unit in units[shift:] + units[:shift]:
        concentration(Quantity(8.1, unit, unit), "mg/dL", calcium)

threads = [threading.Thread(target=convert, args=(n,)) for n in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print([u for u in units if concentration(Quantity(8.1, u, u), "mg/dL", calcium) is None])
"""


def test_request_threads_converting_at_once_in_a_new_process_all_get_answers() -> None:
    """Request threads that are a process's first to convert units build the registry together:
    without a lock that failed, and the units they tried stayed "not understood" for good."""
    for _ in range(3):
        run = subprocess.run(
            [sys.executable, "-c", _FIRST_CONVERSIONS_AT_ONCE],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        assert run.stdout.strip() == "[]", run.stdout + run.stderr[-2000:]
