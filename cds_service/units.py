"""Lab units: UCUM parsing (ucumvert/pint) plus the molar mass and valence an analyte needs."""

from __future__ import annotations

import hashlib
import math
import sys
import tempfile
import threading
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


# Building a registry is not thread-safe (pint's definition loading shares state): two request
# threads building it at once got errors such as KeyError('bit'), and every unit they tried was
# then cached as not understood for the life of the process. One thread builds; the rest wait.
_REGISTRY_LOCK = threading.Lock()


def _registry() -> Any:
    with _REGISTRY_LOCK:
        return _build_registry()


@cache
def _build_registry() -> Any:
    from ucumvert import PintUcumRegistry  # imported lazily: building the registry takes ~0.5 s

    # pint caches its parsed unit definitions on disk (a start 0.25 s instead of 2-3 s).
    return PintUcumRegistry(cache_folder=str(pint_cache_dir(sys.prefix)))


def pint_cache_dir(prefix: str) -> Path:
    """pint's cache for the installation at `prefix`: the cache names the definition files it read,
    so a cache shared by two checkouts on one machine would send one to the other's files."""
    install = hashlib.sha256(prefix.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"cds-service-pint-cache-{install}"


# Real UCUM codes are short ("mg/dL", "mL/min/{1.73_m2}"); parsing cost grows with length, so
# longer strings from bad or hostile data are not parsed at all.
MAX_UNIT_LENGTH = 40


@lru_cache(maxsize=512)
def _parse(ucum: str) -> Any:
    if len(ucum) > MAX_UNIT_LENGTH:
        raise ValueError("unit string too long")
    return _registry().from_ucum(ucum)


def _unit_of(code: str | None, text: str | None) -> tuple[Any, bool] | None:
    """The pint unit of a quantity's code or unit text, and whether it is an equivalent (eq) unit;
    None if not understood."""
    candidates = []
    if code:
        candidates.append(code)
    if text:
        candidates.append(text.strip())
        fixed = _TEXT_FIXES.get(text.strip().lower())
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
    """`q` in `target` units, or None when it cannot be converted (see _conversion)."""
    try:
        conversion = _conversion(q.code, q.unit, target, analyte)
    except (ArithmeticError, ValueError, TypeError):  # absurd units from bad data
        return None
    return None if conversion is None else conversion.apply(q.value)


@dataclass(frozen=True)
class _Conversion:
    """How values in one unit become `target` units: the arithmetic pint does on the magnitude.

    Concentration units are linear, so the steps depend only on the units and are worked out
    once per unit; applying them repeats pint's float operations in pint's order, so the result is
    the same float pint would give.
    """

    scale: float  # the magnitude of the parsed unit itself (1 for plain units)
    divisor: int  # the valence for equivalent units, else 1
    molar_mass: float | None  # multiplied by (mass from molar) or divided by (molar from mass)
    multiply_by_molar_mass: bool
    factor: float | None  # pint's conversion factor to the target; None when already in it

    def apply(self, value: float) -> float:
        """`value` (in the source unit) in the target unit."""
        result = value * self.scale
        if self.divisor != 1:
            result = result / self.divisor
        if self.molar_mass is not None and self.multiply_by_molar_mass:
            result = result * self.molar_mass
        elif self.molar_mass is not None:
            result = result / self.molar_mass
        if self.factor is not None:
            result = result * self.factor
        return float(result)


# Bounded: unit strings come from outside (each is at most MAX_UNIT_LENGTH characters to parse).
@lru_cache(maxsize=1024)
def _conversion(
    code: str | None, text: str | None, target: str, analyte: Analyte
) -> _Conversion | None:
    """How to express a value with unit `code`/`text` in `target` (a UCUM mass or molar
    concentration such as mg/dL or mmol/L); None when the unit is missing or not a concentration.

    Mass <-> molar conversion uses the analyte's molar mass; equivalents are divided by its valence
    (1 mmol of Ca2+ is 2 mEq).
    """
    found = _unit_of(code, text)
    if found is None:
        return None
    unit, is_equivalent = found
    divisor = analyte.valence if is_equivalent else 1
    value = unit / divisor if is_equivalent else unit
    target_unit = _parse(target)
    try:
        if value.dimensionality == target_unit.dimensionality:
            return _Conversion(unit.magnitude, divisor, None, False, _factor(value, target_unit))
        molar_mass = analyte.molar_mass_g_per_mol * _parse("g/mol")
        for multiply, converted in ((True, value * molar_mass), (False, value / molar_mass)):
            if converted.dimensionality == target_unit.dimensionality:
                factor = _factor(converted, target_unit)
                return _Conversion(unit.magnitude, divisor, molar_mass.magnitude, multiply, factor)
    except Exception:  # pint DimensionalityError and friends: a unit we cannot convert
        return None
    return None


def _factor(value: Any, target_unit: Any) -> float | None:
    """pint's factor from `value`'s units to `target_unit`'s (None when the units are the same:
    pint then returns the magnitude untouched)."""
    one = value.__class__(1.0, value.units)
    if one.units == target_unit.units:
        return None
    return float(one.to(target_unit).magnitude)


# Digits kept of a number worked out in floating point (a limit or value divided by a
# conversion factor): enough for any lab value, few enough to drop float noise (1.6999999999999998).
_FLOAT_DIGITS = 12


def below(value: float, limit: float, scale: float = 1.0) -> bool:
    """Whether `value` is below `limit` (both in the rule's unit), judged in the result's own unit.

    `scale` is the factor that converted the result into the rule's unit (1 when it was reported
    in it). Limits are rounded numbers (0.70 mmol/L stands for 1.7 mg/dL, 20 ng/mL for 50 nmol/L),
    so a limit translated into the result's unit keeps one significant figure more than it is
    written with (0.70 mmol/L -> 1.7 mg/dL, 8.5 mg/dL -> 2.12 mmol/L, 20 ng/mL -> 49.92 nmol/L):
    a value at the limit in the lab's own unit is not beyond it, any value below it is. Strict:
    a value at the limit is not below it.
    """
    at, judged = _in_result_unit(value, limit, scale)
    return at < judged


def above(value: float, limit: float, scale: float = 1.0) -> bool:
    """Whether `value` is above `limit`, judged in the result's own unit (see `below`)."""
    at, judged = _in_result_unit(value, limit, scale)
    return at > judged


def _in_result_unit(value: float, limit: float, scale: float) -> tuple[float, float]:
    if not (math.isfinite(scale) and scale > 0):
        scale = 1.0
    digits = min(_significant_figures(limit) + 1, _FLOAT_DIGITS)
    return _round(value / scale, _FLOAT_DIGITS), _round(limit / scale, digits)


def _significant_figures(number: float) -> int:
    """The significant figures a limit is written with, as YAML gave it (7.0 -> 2, 0.70 -> 1)."""
    written = repr(float(number))
    if "e" in written or "n" in written:  # exponent, inf or nan: keep every digit
        return _FLOAT_DIGITS
    return max(len(written.lstrip("-").replace(".", "").lstrip("0")), 1)


def _round(number: float, figures: int) -> float:
    """`number` to `figures` significant figures."""
    if number == 0 or not math.isfinite(number):
        return number
    return round(number, figures - 1 - math.floor(math.log10(abs(number))))
