"""Lab unit conversion: UCUM codes and common unit texts, molar and equivalent units, junk."""

from __future__ import annotations

import pytest

from cds_service.fhir.data import Quantity
from cds_service.rules.calcium import ALBUMIN
from cds_service.units import MAX_UNIT_LENGTH, Analyte, concentration

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
