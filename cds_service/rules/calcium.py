"""Cause 1, calcium deficiency: calcium (ionized preferred), magnesium, 25-OH vitamin D and the DXA."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cds_service.fhir.data import Quantity, Resource, clinical_time, items, label, quantity
from cds_service.knowledge import Knowledge
from cds_service.knowledge.loader import fill
from cds_service.rules.common import condition_line, day, medicine_line, names
from cds_service.rules.evaluation import Evaluation, Finding, Medicine, reference
from cds_service.units import Analyte, above, below, concentration

# Albumin is converted between mass units only (g/L, g/dL), where its molar mass plays no part.
ALBUMIN = Analyte("albumin", molar_mass_g_per_mol=66_500, valence=1)
# Analytes converted between mass and molar units: (molar-mass threshold, valence).
_ANALYTES = {
    "calcium": ("calcium-molar-mass", 2),
    "magnesium": ("magnesium-molar-mass", 2),
    "25-OH vitamin D": ("vitamin-d-25oh-molar-mass", 1),
}

# The supplements that raise calcium (calcium, vitamin D alone or together): each is reviewed when
# calcium is high, whether ordered or continued.
RAISE_CALCIUM = "calcium-or-vitamin-d"

# The fact a card kind declares (cards/cards.yaml) when it can carry the bone-density-scan suggestion.
DXA_FACT = "dxa_due"


@dataclass(frozen=True)
class Reading:
    """A calcium, magnesium or 25-OH vitamin D result in the unit its thresholds use, judged
    there and shown in the unit the laboratory reported it in."""

    analyte: str  # "total" or "ionized" calcium, "magnesium", "vitamin D"
    value: float  # the value compared with the limits (albumin-corrected for a total calcium)
    measured: float  # the value as measured, same unit
    unit: str
    lab_unit: str  # the unit of the Observation's valueQuantity, as written there
    per_lab_unit: float  # one lab_unit in `unit` (concentration units are linear)
    lower_limit: float
    upper_limit: float | None
    limit_from_lab: bool
    corrected_with: float | None  # albumin g/dL used for the correction
    observation: Resource
    when: datetime | None

    @property
    def low(self) -> bool:
        return self.below(self.lower_limit)  # strict: a value at the limit is not low

    @property
    def high(self) -> bool:
        return self.upper_limit is not None and self.above(self.upper_limit)

    # Judged in the laboratory's unit at the precision the limit is written with (units.below):
    # 1.7 mg/dL magnesium is at the 0.70 mmol/L limit, not below it.
    def below(self, limit: float) -> bool:
        """Whether the judged value is below a limit given in `unit`."""
        return below(self.value, limit, self.per_lab_unit)

    def above(self, limit: float) -> bool:
        """Whether the judged value is above a limit given in `unit`."""
        return above(self.value, limit, self.per_lab_unit)

    def _in_lab_unit(self, value: float) -> float:
        return round(value / self.per_lab_unit, 2)

    def shown(self, value: float) -> str:
        """A value in `unit` written in the laboratory's unit, for card text."""
        return _fmt(self._in_lab_unit(value))


def evaluate(ev: Evaluation) -> tuple[list[Finding], bool]:
    """Calcium, magnesium and vitamin D cards, and whether they point to this cause."""
    findings: list[Finding] = []
    points = False
    reading = calcium_reading(ev)
    coded_low = ev.conditions("hypocalcemia", active_only=True)
    if reading is None:
        findings.append(_workup(ev, coded_low))
        points = bool(coded_low)  # documented hypocalcemia: the cause is known, the value is not
    elif reading.low:
        findings.append(_low(ev, reading))
        points = True
    elif reading.high:
        findings.extend(_high_on_supplement(ev, reading, ev.medicines(RAISE_CALCIUM)))
    # Vitamin D raises calcium: with a high calcium no vitamin D card proposes it.
    vitamin_d = None if reading is not None and reading.high else _vitamin_d(ev)
    for finding in (_magnesium(ev), vitamin_d):
        if finding is not None:
            findings.append(finding)
            points = True  # low magnesium or vitamin D is the calcium/electrolyte cause
    return findings, points


def supplement_ordered(
    ev: Evaluation,
    ordered: Medicine,
    base: dict[str, Any],
    evidence: tuple[str, ...],
    in_scope: bool,
) -> list[Finding]:
    """Ordering calcium + vitamin D: warn on a high calcium (whatever the scope: it is a safety
    warning); for a patient in scope, ask for a calcium when none is within the look-back."""
    reading = calcium_reading(ev)
    if reading is None:
        facts = {**base, "window_days": _window_days(ev), **supplement_facts(ev, [ordered])}
        return [Finding("calcium-order-without-result", facts, evidence)] if in_scope else []
    if reading.high:
        facts = {**base, **_calcium_facts(reading), **supplement_facts(ev, [ordered])}
        return [Finding("calcium-high", facts, (*evidence, _line(reading)))]
    return []


def supplement_with_high_calcium(ev: Evaluation) -> list[Finding]:
    """A high calcium while a calcium or vitamin D supplement continues, for any patient (the
    warning ordering gives whatever the cramp scope)."""
    reading = calcium_reading(ev)
    if reading is None or not reading.high:
        return []
    return _high_on_supplement(ev, reading, ev.medicines(RAISE_CALCIUM))


def offer_dxa(ev: Evaluation, findings: list[Finding]) -> list[Finding]:
    """The findings, with the DXA offered (when due) once: by the first whose card kind declares
    the `dxa_due` fact in cards/cards.yaml (calcium cards come first, the differential last)."""
    due = dxa_due(ev)
    offered: list[Finding] = []
    for finding in findings:
        if DXA_FACT in ev.knowledge.cards[finding.kind].facts:
            evidence = finding.evidence
            if due:
                line = fill(ev.knowledge.evidence_lines["dxa_due"], {"age": ev.age})
                evidence = (*evidence, line)
            finding = dataclasses.replace(
                finding, facts={**finding.facts, DXA_FACT: due}, evidence=evidence
            )
            due = False
        offered.append(finding)
    return offered


def dxa_due(ev: Evaluation) -> bool:
    """An older adult with no osteoporosis diagnosis and no DXA on file (any date)."""
    if ev.age is None or ev.age < ev.threshold("older-adult-age"):
        return False
    has_dxa = (
        ev.results("dxa-t-score") or ev.reports("dxa-report") or ev.procedures_done("order-dxa")
    )
    return not (has_dxa or ev.conditions("osteoporosis", active_only=False))


def analyte(knowledge: Knowledge, name: str) -> Analyte:
    """A unit-conversion analyte with its molar mass from cards/thresholds.yaml."""
    threshold_id, valence = _ANALYTES[name]
    return Analyte(name, knowledge.threshold(threshold_id), valence)


def calcium_reading(ev: Evaluation) -> Reading | None:
    """The calcium judged: the newest usable one in the look-back, unless an ionized calcium was
    drawn within the pairing window of that newest total (ionized needs no albumin correction)."""
    window = ev.threshold("calcium-lookback-days")
    readings = [
        r
        for r in (_calcium(ev, o) for o in ev.results("calcium-any") if ev.within(o, window))
        if r is not None
    ]
    if not readings:
        return None
    newest = readings[0]
    if newest.analyte == "ionized" or newest.when is None:
        return newest
    pairing = ev.threshold("calcium-ionized-pairing-hours") * 3600
    for other in readings:
        if (
            other.analyte == "ionized"
            and other.when is not None
            and abs((other.when - newest.when).total_seconds()) <= pairing
        ):
            return other
    return newest


def _calcium(ev: Evaluation, observation: Resource) -> Reading | None:
    measured = quantity(observation.get("valueQuantity"))
    if measured is None:
        return None
    ionized = ev.coded(observation.get("code"), "calcium-ionized")
    corrected_by_lab = ev.coded(observation.get("code"), "calcium-corrected")
    kind = "ionized" if ionized else "total"
    unit = "mmol/L" if ionized else "mg/dL"
    calcium = analyte(ev.knowledge, "calcium")
    value = concentration(measured, unit, calcium)
    per_lab_unit = _per_lab_unit(measured, unit, calcium)
    if value is None or per_lab_unit is None:
        return None
    low, high = _lab_range(observation, unit, calcium)
    albumin = None if (ionized or corrected_by_lab) else _albumin_near(ev, observation)
    judged = value
    if albumin is not None:
        # Payne's formula (cards/thresholds.yaml): Ca_corr = Ca + 0.8 x (4.0 - albumin g/dL)
        judged = value + ev.threshold("albumin-correction-factor") * (
            ev.threshold("albumin-reference") - albumin
        )
    return Reading(
        analyte=kind,
        value=judged,
        measured=value,
        unit=unit,
        lab_unit=_unit_text(measured),
        per_lab_unit=per_lab_unit,
        lower_limit=ev.threshold(f"calcium-{kind}-low") if low is None else low,
        upper_limit=ev.threshold(f"calcium-{kind}-high") if high is None else high,
        limit_from_lab=low is not None,
        corrected_with=albumin,
        observation=observation,
        when=clinical_time(observation),
    )


def _per_lab_unit(measured: Quantity, unit: str, substance: Analyte) -> float | None:
    """One of the result's own unit in `unit` (None when not convertible, or absurd)."""
    one = concentration(Quantity(1.0, measured.code, measured.unit), unit, substance)
    return one if one is not None and one > 0 else None


def _unit_text(measured: Quantity) -> str:
    return (measured.unit or measured.code or "").strip()


def _lab_range(
    observation: Resource, unit: str, analyte: Analyte
) -> tuple[float | None, float | None]:
    """The low and high ends of the lab's own reference range in `unit`, where it gives them."""
    value = quantity(observation.get("valueQuantity"))
    for ref in items(observation.get("referenceRange")):
        if not isinstance(ref, dict):
            continue
        ends = [_converted(quantity(ref.get(end)), value, unit, analyte) for end in ("low", "high")]
        if ends[0] is not None or ends[1] is not None:
            return ends[0], ends[1]
    return None, None


def _converted(
    end: Quantity | None, value: Quantity | None, unit: str, analyte: Analyte
) -> float | None:
    if end is None:
        return None
    if end.code is None and end.unit is None:
        if value is None:
            return None
        # A bare number is read in the unit of the result itself.
        end = Quantity(end.value, value.code, value.unit)
    return concentration(end, unit, analyte)


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


def _calcium_facts(reading: Reading) -> dict[str, object]:
    """The value and limits in the laboratory's unit; which calcium, and whose limits."""
    return {
        "ionized": reading.analyte == "ionized",
        "corrected": reading.corrected_with is not None,
        "limit_from_lab": reading.limit_from_lab,
        "calcium": reading.shown(reading.value),
        "unit": reading.lab_unit,
        "date": day(reading.when),
        "lower_limit": reading.shown(reading.lower_limit),
        "upper_limit": "" if reading.upper_limit is None else reading.shown(reading.upper_limit),
    }


def supplement_facts(ev: Evaluation, supplements: list[Medicine]) -> dict[str, bool]:
    """Which supplement is on file: none, calcium with vitamin D (a combination product, or vitamin
    D prescribed beside it), calcium alone, or vitamin D alone."""
    with_calcium = bool(ev.medicines("calcium-supplements", supplements))
    with_vitamin_d = bool(supplements) and bool(
        ev.medicines("calcium-vitamin-d", supplements) or ev.medicines("vitamin-d-products")
    )
    return {
        "not_on_supplement": not supplements,
        "on_calcium_with_vitamin_d": with_calcium and with_vitamin_d,
        "on_calcium_alone": with_calcium and not with_vitamin_d,
        "on_vitamin_d_alone": with_vitamin_d and not with_calcium,
    }


def _low(ev: Evaluation, reading: Reading) -> Finding:
    supplements = ev.medicines("calcium-supplements")
    severe = ev.threshold(f"calcium-{reading.analyte}-severe")
    facts: dict[str, object] = {
        **_calcium_facts(reading),
        **supplement_facts(ev, supplements),
        "severe_limit": reading.shown(severe),
        # A coded hypomagnesemia or vitamin D deficiency has its own card, which orders the level.
        "needs_magnesium": _latest(ev, "magnesium") is None
        and not ev.conditions("hypomagnesemia", active_only=True),
        "needs_vitamin_d": _latest(ev, "vitamin-d-25oh") is None
        and not ev.conditions("vitamin-d-deficiency", active_only=True),
    }
    evidence = [_line(reading)]
    evidence.extend(f"- current calcium supplement: {medicine_line(m)[2:]}" for m in supplements)
    for vs_id in ("magnesium", "vitamin-d-25oh"):
        found = _latest(ev, vs_id)
        if found is not None:
            evidence.append(_result_line(found))
    kind = "calcium-low-severe" if reading.below(severe) else "calcium-low"
    return Finding(kind, facts, tuple(evidence))


def _high_on_supplement(ev: Evaluation, reading: Reading, supplements: list[Any]) -> list[Finding]:
    """A high calcium while calcium + vitamin D continues (no card without a supplement)."""
    if not supplements:
        return []
    # Vitamin D prescribed beside the calcium raises calcium too: it is named with it.
    taken = [*supplements, *(m for m in ev.medicines("vitamin-d-products") if m not in supplements)]
    facts = {
        **_calcium_facts(reading),
        **supplement_facts(ev, supplements),
        "medicine": names(taken),
    }
    evidence = (_line(reading), *map(medicine_line, taken))
    return [Finding("calcium-high", facts, evidence)]


def _workup(ev: Evaluation, coded_low: list[Resource]) -> Finding:
    """No usable calcium result: recommend the labs (naming a coded hypocalcemia)."""
    facts = {"window_days": _window_days(ev)}
    return Finding("calcium-workup", facts, tuple(map(condition_line, coded_low)))


def _magnesium(ev: Evaluation) -> Finding | None:
    """Low magnesium (newest result against its limit), or coded hypomagnesemia without a result."""
    magnesium = analyte(ev.knowledge, "magnesium")
    reading = _simple_reading(ev, "magnesium", "mmol/L", magnesium, "magnesium-low", lab_range=True)
    coded = ev.conditions("hypomagnesemia", active_only=True)
    if reading is not None:
        if not reading.low:
            return None  # a current normal result outweighs an older coded diagnosis
        return Finding("magnesium-low", _result_facts(reading), (_result_line(reading),))
    if not coded:
        return None
    return Finding("magnesium-low", _coded_facts(coded[0]), tuple(map(condition_line, coded)))


def _vitamin_d(ev: Evaluation) -> Finding | None:
    """Low total 25-OH vitamin D (deficient: warning), or coded deficiency without a result.

    Laboratory reference ranges are not used: many start at 30 ng/mL, which the sources disagree
    on (cards/thresholds.yaml vitamin-d-25oh-low).
    """
    vitamin_d = analyte(ev.knowledge, "25-OH vitamin D")
    reading = _simple_reading(ev, "vitamin-d-25oh", "ng/mL", vitamin_d, "vitamin-d-25oh-low")
    coded = ev.conditions("vitamin-d-deficiency", active_only=True)
    if reading is not None:
        if not reading.low:
            return None
        deficient = reading.below(ev.threshold("vitamin-d-25oh-deficient"))
        return Finding(
            "vitamin-d-low",
            _result_facts(reading),
            (_result_line(reading),),
            "warning" if deficient else None,
        )
    if not coded:
        return None
    return Finding("vitamin-d-low", _coded_facts(coded[0]), tuple(map(condition_line, coded)))


def _result_facts(reading: Reading) -> dict[str, object]:
    """A low magnesium or vitamin D result, as the laboratory reported it."""
    return {
        "value": reading.shown(reading.value),
        "unit": reading.lab_unit,
        "date": day(reading.when),
        "diagnosis": "",
        "named": False,
        "needs_level": False,
    }


def _coded_facts(condition: Resource) -> dict[str, object]:
    """A coded deficiency with no result in the look-back: the level is to be ordered."""
    return {
        "value": "",
        "unit": "",
        "date": "",
        "diagnosis": label(condition.get("code")) or "",
        "named": bool(label(condition.get("code"))),
        "needs_level": True,
    }


def _window_days(ev: Evaluation) -> str:
    return str(int(ev.threshold("calcium-lookback-days")))


def _latest(ev: Evaluation, vs_id: str) -> Resource | None:
    window = ev.threshold("calcium-lookback-days")
    return next((o for o in ev.results(vs_id) if ev.within(o, window)), None)


def _simple_reading(
    ev: Evaluation,
    vs_id: str,
    unit: str,
    substance: Analyte,
    default_low: str,
    lab_range: bool = False,
) -> Reading | None:
    """The newest convertible result of the value set in the look-back, against its lower limit."""
    window = ev.threshold("calcium-lookback-days")
    for observation in ev.results(vs_id):
        if not ev.within(observation, window):
            return None  # newest first: the rest is older still
        measured = quantity(observation.get("valueQuantity"))
        value = None if measured is None else concentration(measured, unit, substance)
        per_lab_unit = None if measured is None else _per_lab_unit(measured, unit, substance)
        if measured is None or value is None or per_lab_unit is None:
            continue
        low = _lab_range(observation, unit, substance)[0] if lab_range else None
        return Reading(
            analyte=substance.name,
            value=value,
            measured=value,
            unit=unit,
            lab_unit=_unit_text(measured),
            per_lab_unit=per_lab_unit,
            lower_limit=ev.threshold(default_low) if low is None else low,
            upper_limit=None,
            limit_from_lab=low is not None,
            corrected_with=None,
            observation=observation,
            when=clinical_time(observation),
        )
    return None


def _result_line(found: Reading | Resource) -> str:
    """An evidence line for a magnesium or vitamin D result: as measured, and as judged."""
    observation = found.observation if isinstance(found, Reading) else found
    q = quantity(observation.get("valueQuantity"))
    measured = "no value" if q is None else f"{_fmt(q.value)} {q.unit or q.code or ''}".strip()
    name = label(observation.get("code")) or "result"
    text = f"- {name}: {measured} on {day(clinical_time(observation))} ({reference(observation)})"
    if isinstance(found, Reading):
        text += f"; lower limit {found.shown(found.lower_limit)} {found.lab_unit}"
    return text


def _line(reading: Reading) -> str:
    obs = reading.observation
    unit = reading.lab_unit
    text = (
        f"- {reading.analyte} calcium {reading.shown(reading.measured)} {unit} on "
        f"{day(reading.when)} ({reference(obs)})"
    )
    if reading.corrected_with is not None:
        text += (
            f"; corrected for albumin {_fmt(reading.corrected_with)} g/dL to "
            f"{reading.shown(reading.value)} {unit} (calculated)"
        )
    text += f"; reference {reading.shown(reading.lower_limit)}"
    if reading.upper_limit is not None:
        text += f"-{reading.shown(reading.upper_limit)}"
    return f"{text} {unit}"


def _fmt(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")
