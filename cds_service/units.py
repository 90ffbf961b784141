"""Lab units: UCUM parsing (ucumvert/pint) plus the molar mass and valence an analyte needs."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from cds_service.fhir.data import Quantity

UCUM_SYSTEM = "http://unitsofmeasure.org"

# Unit texts seen in EHR data that are not valid UCUM, mapped to the UCUM code they mean.
_TEXT_FIXES = {
    "meq/l": "meq/L",
    "mg/dl": "mg/dL",
    "g/dl": "g/dL",
    "mmol/l": "mmol/L",
    "mg/l": "mg/L",
    "g/l": "g/L",
    "umol/l": "umol/L",
    "µmol/l": "umol/L",
    "ng/ml": "ng/mL",
    "nmol/l": "nmol/L",
}


@dataclass(frozen=True)
class Analyte:
    """What converting between mass, molar and equivalent concentrations of one substance needs."""

    name: str
    molar_mass_g_per_mol: float
    valence: int


@cache
def _registry() -> Any:
    from ucumvert import PintUcumRegistry  # imported lazily: building the registry takes ~0.5 s

    # pint caches its parsed unit definitions on disk, which halves the build on later starts.
    cache_dir = Path(tempfile.gettempdir()) / "cds-service-pint-cache"
    return PintUcumRegistry(cache_folder=str(cache_dir))


# Real UCUM codes are short ("mg/dL", "mL/min/{1.73_m2}"); parsing cost grows with length, so
# longer strings from bad or hostile data are not parsed at all.
MAX_UNIT_LENGTH = 40


@lru_cache(maxsize=512)
def _parse(ucum: str) -> Any:
    if len(ucum) > MAX_UNIT_LENGTH:
        raise ValueError("unit string too long")
    return _registry().from_ucum(ucum)


def _unit_of(q: Quantity) -> tuple[Any, bool] | None:
    """The pint unit of `q` and whether it is an equivalent (eq) unit; None if not understood."""
    candidates = []
    if q.code:
        candidates.append(q.code)
    if q.unit:
        candidates.append(q.unit.strip())
        fixed = _TEXT_FIXES.get(q.unit.strip().lower())
        if fixed:
            candidates.append(fixed)
    for candidate in candidates:
        try:
            unit = _parse(candidate)
        except Exception:  # ucumvert raises several exception types for invalid units
            continue
        return unit, "eq" in candidate.lower()
    return None


def concentration(q: Quantity, target: str, analyte: Analyte) -> float | None:
    """`q` in `target` units, or None when it cannot be converted (see _concentration)."""
    try:
        return _concentration(q, target, analyte)
    except (ArithmeticError, ValueError, TypeError):  # absurd magnitudes or units from bad data
        return None


def _concentration(q: Quantity, target: str, analyte: Analyte) -> float | None:
    """`q` expressed in `target` (a UCUM mass or molar concentration such as mg/dL or mmol/L).

    Mass <-> molar conversion uses the analyte's molar mass; equivalents are divided by its valence
    (1 mmol of Ca2+ is 2 mEq). None when the unit is missing or not a concentration.
    """
    found = _unit_of(q)
    if found is None:
        return None
    unit, is_equivalent = found
    value = q.value * unit
    if is_equivalent:
        value = value / analyte.valence
    target_unit = _parse(target)
    try:
        if value.dimensionality == target_unit.dimensionality:
            return float(value.to(target_unit).magnitude)
        molar_mass = analyte.molar_mass_g_per_mol * _parse("g/mol")
        for converted in (value * molar_mass, value / molar_mass):
            if converted.dimensionality == target_unit.dimensionality:
                return float(converted.to(target_unit).magnitude)
    except Exception:  # pint DimensionalityError and friends: a unit we cannot convert
        return None
    return None
