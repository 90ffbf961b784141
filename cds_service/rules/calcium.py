"""Cause 1, calcium deficiency: the latest calcium, albumin-corrected, against the lab's range."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cds_service.fhir.data import Resource, clinical_time, items, quantity
from cds_service.rules.common import day
from cds_service.rules.evaluation import Evaluation, Finding, reference
from cds_service.units import Analyte, concentration

CALCIUM = Analyte("calcium", molar_mass_g_per_mol=40.08, valence=2)
ALBUMIN = Analyte("albumin", molar_mass_g_per_mol=66_500, valence=1)
MAGNESIUM = Analyte("magnesium", molar_mass_g_per_mol=24.305, valence=2)


@dataclass(frozen=True)
class CalciumReading:
    """The calcium result the rule judges, in the unit its thresholds use."""

    kind: str  # "total" (mg/dL, albumin-corrected when possible) or "ionized" (mmol/L)
    value: float  # the value compared with the thresholds
    measured: float  # the value as measured, same unit
    unit: str
    lower_limit: float
    limit_from_lab: bool
    corrected_with: float | None  # albumin g/dL used for the correction
    observation: Resource
    when: datetime | None


def evaluate(ev: Evaluation) -> tuple[list[Finding], bool]:
    """Calcium cards, and whether a low calcium points to this cause."""
    reading = latest_calcium(ev)
    if reading is None:
        return [_workup(ev)], False
    severe = ev.threshold(f"calcium-{reading.kind}-severe")
    if reading.value >= reading.lower_limit:
        return [], False
    takes_supplement = bool(ev.medicines("calcium-supplements"))
    facts: dict[str, object] = {
        "calcium": _fmt(reading.value),
        "unit": reading.unit,
        "calcium_kind": "corrected total calcium"
        if reading.corrected_with
        else ("total calcium" if reading.kind == "total" else "ionized calcium"),
        "date": day(reading.when),
        "lower_limit": _fmt(reading.lower_limit),
        "limit_source": "the laboratory's reference range"
        if reading.limit_from_lab
        else ("the default lower limit in cards/thresholds.yaml"),
        "severe_limit": _fmt(severe),
        "not_on_supplement": not takes_supplement,
        "supplement_status": "The patient already has a current calcium supplement order."
        if takes_supplement
        else "No current calcium + vitamin D supplement is on file.",
    }
    facts.update(_magnesium_and_vitamin_d(ev))
    evidence = [_line(reading)]
    kind = "calcium-low-severe" if reading.value < severe else "calcium-low"
    return [Finding(kind, facts, tuple(evidence))], True


def latest_calcium(ev: Evaluation) -> CalciumReading | None:
    """The newest usable total, corrected or ionized calcium in the look-back window, converted."""
    window = ev.threshold("calcium-lookback-days")
    for observation in ev.results("calcium-any"):
        if not ev.within(observation, window):
            return None  # newest first: everything after this is older still
        reading = _reading(ev, observation)
        if reading is not None:
            return reading
    return None


def _reading(ev: Evaluation, observation: Resource) -> CalciumReading | None:
    measured = quantity(observation.get("valueQuantity"))
    if measured is None:
        return None
    ionized = ev.coded(observation.get("code"), "calcium-ionized")
    corrected_by_lab = ev.coded(observation.get("code"), "calcium-corrected")
    unit = "mmol/L" if ionized else "mg/dL"
    value = concentration(measured, unit, CALCIUM)
    if value is None:
        return None
    low, from_lab = _lower_limit(observation, unit)
    if low is None:
        low = ev.threshold("calcium-ionized-low" if ionized else "calcium-total-low")
    albumin = None if (ionized or corrected_by_lab) else _albumin_near(ev, observation)
    judged = value
    if albumin is not None:
        # Payne's formula (cards/thresholds.yaml): Ca_corr = Ca + 0.8 x (4.0 - albumin g/dL)
        judged = value + ev.threshold("albumin-correction-factor") * (
            ev.threshold("albumin-reference") - albumin
        )
    return CalciumReading(
        kind="ionized" if ionized else "total",
        value=judged,
        measured=value,
        unit=unit,
        lower_limit=low,
        limit_from_lab=from_lab,
        corrected_with=albumin,
        observation=observation,
        when=clinical_time(observation),
    )


def _lower_limit(observation: Resource, unit: str) -> tuple[float | None, bool]:
    """The low end of the lab's own reference range, converted to `unit`, if it gives one."""
    for ref in items(observation.get("referenceRange")):
        if not isinstance(ref, dict):
            continue
        low = quantity(ref.get("low"))
        if low is None:
            continue
        if low.code is None and low.unit is None:
            # A bare number is read in the unit of the result itself.
            value_unit = quantity(observation.get("valueQuantity"))
            if value_unit is None:
                continue
            low = type(low)(low.value, value_unit.code, value_unit.unit)
        converted = concentration(low, unit, CALCIUM)
        if converted is not None:
            return converted, True
    return None, False


def _albumin_near(ev: Evaluation, calcium: Resource) -> float | None:
    """Serum albumin (g/dL) measured within the pairing window of the calcium result."""
    when = clinical_time(calcium)
    if when is None:
        return None
    days = ev.threshold("albumin-pairing-days")
    for albumin in ev.results("albumin"):
        taken = clinical_time(albumin)
        if taken is None or abs((taken - when).total_seconds()) > days * 86_400:
            continue
        measured = quantity(albumin.get("valueQuantity"))
        if measured is None:
            continue
        value = concentration(measured, "g/dL", ALBUMIN)
        if value is not None:
            return value
    return None


def _magnesium_and_vitamin_d(ev: Evaluation) -> dict[str, object]:
    """Facts about magnesium and 25-OH vitamin D, which the low-calcium card asks to check."""
    window = ev.threshold("calcium-lookback-days")
    mg = [o for o in ev.results("magnesium") if ev.within(o, window)]
    vit_d = [o for o in ev.results("vitamin-d-25oh") if ev.within(o, window)]
    mg_low = False
    mg_text = "No magnesium result in the look-back window."
    if mg:
        q = quantity(mg[0].get("valueQuantity"))
        low, _ = _lower_limit_any(mg[0], q)
        if q is not None:
            mg_text = f"Latest magnesium {_fmt(q.value)} {q.unit or q.code or ''} ({day(clinical_time(mg[0]))})."
            if low is not None and q.value < low:
                mg_low = True
                mg_text += " It is below the laboratory's range: low magnesium keeps calcium low."
    vit_text = (
        "No 25-OH vitamin D result in the look-back window."
        if not vit_d
        else (f"A 25-OH vitamin D result is on file ({day(clinical_time(vit_d[0]))}).")
    )
    return {
        "magnesium_status": mg_text,
        "vitamin_d_status": vit_text,
        "magnesium_low": mg_low,
        "needs_magnesium": not mg,
        "needs_vitamin_d": not vit_d,
    }


def _lower_limit_any(observation: Resource, value: object) -> tuple[float | None, bool]:
    for ref in items(observation.get("referenceRange")):
        if isinstance(ref, dict):
            low = quantity(ref.get("low"))
            if low is not None:
                return low.value, True
    return None, False


def _workup(ev: Evaluation) -> Finding:
    """No usable calcium result: recommend the labs, and a DXA for older adults without one."""
    age = ev.age
    has_dxa = bool(
        ev.results("dxa-t-score") or ev.reports("dxa-report") or ev.procedures_done("order-dxa")
    )
    osteoporosis = ev.conditions("osteoporosis", active_only=False)
    dxa_due = (
        age is not None
        and age >= ev.threshold("older-adult-age")
        and not has_dxa
        and not osteoporosis
    )
    window = int(ev.threshold("calcium-lookback-days"))
    facts = {
        "window_days": str(window),
        "dxa_due": dxa_due,
        "dxa_status": (
            f"The patient is {age}, with no bone density (DXA) result and no osteoporosis diagnosis "
            "on file: a DXA scan is suggested."
            if dxa_due
            else "A bone density (DXA) scan is not suggested here (under 65, age unknown, a DXA result "
            "or an osteoporosis diagnosis is already on file)."
        ),
    }
    return Finding("calcium-workup", facts)


def _line(reading: CalciumReading) -> str:
    obs = reading.observation
    text = f"- {reading.kind} calcium {_fmt(reading.measured)} {reading.unit} on {day(reading.when)} ({reference(obs)})"
    if reading.corrected_with is not None:
        text += (
            f"; corrected for albumin {_fmt(reading.corrected_with)} g/dL to {_fmt(reading.value)} "
            f"{reading.unit} (calculated)"
        )
    text += f"; lower limit {_fmt(reading.lower_limit)} {reading.unit}"
    return text


def _fmt(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")
