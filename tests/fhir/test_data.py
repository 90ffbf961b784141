"""Reading FHIR dates and numbers-as-text: FHIR's forms only, digits 0-9 only."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cds_service.fhir.data import last_possible_date, parse_datetime, reported_quantity


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026", datetime(2026, 1, 1, tzinfo=UTC)),
        ("2026-11", datetime(2026, 11, 1, tzinfo=UTC)),
        ("2026-11-20", datetime(2026, 11, 20, tzinfo=UTC)),
        ("2026-11-20T10:15:00Z", datetime(2026, 11, 20, 10, 15, tzinfo=UTC)),
        ("2026-11-20T05:15:00.250-05:00", datetime(2026, 11, 20, 10, 15, 0, 250000, tzinfo=UTC)),
        ("2026-11-20T10:15:00", datetime(2026, 11, 20, 10, 15, tzinfo=UTC)),  # no zone: as UTC
    ],
)
def test_fhir_dates_and_date_times_are_read(value: str, expected: datetime) -> None:
    assert parse_datetime(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "٢٠٢٦-١١-٢٠",  # Arabic-Indic digits
        "２０２６",  # fullwidth digits
        "2026-W47-5",  # ISO week date: fromisoformat reads it, FHIR does not allow it
        "20261120",  # ISO basic format
        "2026-11-20 10:15:00Z",  # a space for the T
        "2026\n",
        "2026-11-20T10:15:00Z\n",
        "2026-13-01",
        "not-a-date",
        "",
    ],
)
def test_what_fhir_does_not_allow_is_not_read_as_a_date(value: str) -> None:
    assert parse_datetime(value) is None
    assert last_possible_date(value) is None


@pytest.mark.parametrize(
    ("text", "value", "comparator"),
    [("<15", 15.0, "<"), (" >= 60 ", 60.0, ">="), ("8.1", 8.1, None)],
)
def test_a_number_sent_as_text_is_read(text: str, value: float, comparator: str | None) -> None:
    found = reported_quantity({"valueString": text})
    assert found is not None and (found.value, found.comparator) == (value, comparator)


@pytest.mark.parametrize("text", ["٨.١", "<١٥", "8.1 mg/dL", "8,1", "8.1\n\n2"])
def test_a_number_in_other_digits_or_with_words_is_not_read(text: str) -> None:
    assert reported_quantity({"valueString": text}) is None
