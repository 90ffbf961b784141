"""Feedback, snoozing, reporting and metrics, on SQLite and on PostgreSQL; the database failing mid-run."""

from __future__ import annotations

import copy
import itertools
import json
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from cds_service.app import create_app
from cds_service.cli import main
from cds_service.clock import Clock
from cds_service.knowledge import Knowledge
from cds_service.store import engine_for
from cds_service.store.report import prune, report
from cds_service.store.schema import feedback, issued_cards
from tests.conftest import FIXTURES, NOW, SERVICE_ID, make_settings, postgres_schema, release
from tests.support.tcp_proxy import TcpProxy

LOW_CALCIUM = FIXTURES / "scenarios" / "14-calcium-8-4-below-default.json"


class MovableClock(Clock):
    """A clock the test can move forward; ids are counted so every card uuid is distinct."""

    def __init__(self, at: datetime) -> None:
        counter = itertools.count(1)
        self.at = at
        super().__init__(now_fn=lambda: self.at, id_fn=lambda: str(uuid.UUID(int=next(counter))))


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock(NOW)


@pytest.fixture
def store_app(
    tmp_path: Path, database_url: str, knowledge: Knowledge, clock: MovableClock
) -> Iterator[Flask]:
    app = create_app(
        make_settings(tmp_path, database_url=database_url), clock=clock, knowledge=knowledge
    )
    yield app
    app.extensions["cds_runtime"].close()


@pytest.fixture
def client(store_app: Flask) -> FlaskClient:
    return store_app.test_client()


def hook_request() -> dict[str, Any]:
    request: dict[str, Any] = json.loads(LOW_CALCIUM.read_text(encoding="utf-8"))["request"]
    return request


def call(client: FlaskClient, request: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    response = client.post(f"/cds-services/{SERVICE_ID}", json=request or hook_request())
    assert response.status_code == 200, response.get_data(as_text=True)
    return {card["source"]["topic"]["code"]: card for card in response.get_json()["cards"]}


def item(
    card: dict[str, Any], outcome: str, at: str = "2026-11-24T12:01:00Z", **extra: Any
) -> dict[str, Any]:
    entry: dict[str, Any] = {"card": card["uuid"], "outcome": outcome, "outcomeTimestamp": at}
    if outcome == "accepted":
        entry["acceptedSuggestions"] = [{"id": card["suggestions"][0]["uuid"]}]
    entry.update(extra)
    return entry


REASON = {
    "reason": {
        "system": "http://terminology.hl7.org/CodeSystem/non-adherence-reason-codes",
        "code": "recipient-disagrees-evidence",
        "display": "Recipient disagrees with recommendation because of issues with the evidence",
    },
    "userComment": "calcium was repeated this morning",
}


def send(client: FlaskClient, *items: dict[str, Any], service: str = SERVICE_ID) -> Any:
    return client.post(f"/cds-services/{service}/feedback", json={"feedback": list(items)})


def stored(url: str) -> int:
    with engine_for(url).connect() as connection:
        return int(connection.execute(select(func.count()).select_from(feedback)).scalar_one())


def test_accepted_and_overridden_feedback_is_stored_once(
    client: FlaskClient, database_url: str
) -> None:
    cards = call(client)
    low = cards["calcium-low"]
    first = send(client, item(low, "accepted"))
    assert first.status_code == 200 and first.get_json() == {"received": 1, "new": 1}
    again = send(client, item(low, "accepted"))
    assert again.status_code == 200 and again.get_json() == {"received": 1, "new": 0}
    assert stored(database_url) == 1


def test_a_batch_is_stored_whole(client: FlaskClient, database_url: str) -> None:
    cards = call(client)
    low = cards["calcium-low"]
    response = send(
        client,
        item(low, "accepted"),
        item(low, "overridden", at="2026-11-24T12:02:00Z", overrideReason=REASON),
        item(
            low, "overridden", at="2026-11-24T12:03:00Z", overrideReason={"userComment": "not now"}
        ),
    )
    assert response.get_json() == {"received": 3, "new": 3}
    assert stored(database_url) == 3


@pytest.mark.parametrize(
    ("bad", "path"),
    [
        ({"outcome": "accepted"}, "$.feedback[1]"),  # accepted without acceptedSuggestions
        ({"outcome": "maybe"}, "$.feedback[1].outcome"),
        ({"outcomeTimestamp": "yesterday"}, "$.feedback[1].outcomeTimestamp"),
        ({"card": "not-a-uuid"}, "$.feedback[1].card"),
        ({"overrideReason": {}}, "$.feedback[1].overrideReason"),
    ],
)
def test_invalid_items_reject_the_whole_batch(
    client: FlaskClient, database_url: str, bad: dict[str, Any], path: str
) -> None:
    low = call(client)["calcium-low"]
    broken = {
        "card": low["uuid"],
        "outcome": "overridden",
        "outcomeTimestamp": "2026-11-24T12:05:00Z",
        **bad,
    }
    if bad.get("outcome") == "accepted":
        broken.pop("acceptedSuggestions", None)
    response = send(client, item(low, "overridden", overrideReason=REASON), broken)
    assert response.status_code == 400
    outcome = response.get_json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert any(path in e for i in outcome["issue"] for e in i.get("expression", []))
    assert stored(database_url) == 0


def test_feedback_for_an_unknown_service_is_404(client: FlaskClient) -> None:
    low = call(client)["calcium-low"]
    assert send(client, item(low, "accepted"), service="no-such-service").status_code == 404


def test_non_json_feedback_is_415(client: FlaskClient) -> None:
    response = client.post(
        f"/cds-services/{SERVICE_ID}/feedback", data="x", content_type="text/plain"
    )
    assert response.status_code == 415


def test_issued_cards_are_recorded_without_patient_ids(
    client: FlaskClient, store_app: Flask, database_url: str
) -> None:
    cards = call(client)
    store_app.extensions["cds_runtime"].recorder.flush()  # records are written off the request path
    with engine_for(database_url).connect() as connection:
        rows = connection.execute(select(issued_cards)).mappings().all()
    assert {r["card_uuid"] for r in rows} == {c["uuid"] for c in cards.values()}
    patient_id = hook_request()["context"]["patientId"]
    for row in rows:
        assert patient_id not in json.dumps({k: str(v) for k, v in row.items()})
        assert len(row["patient_hash"]) == 64


def test_overridden_card_is_snoozed_until_evidence_or_time_changes(
    client: FlaskClient, clock: MovableClock
) -> None:
    first = call(client)
    assert "calcium-low" in first
    assert (
        send(client, item(first["calcium-low"], "overridden", overrideReason=REASON)).status_code
        == 200
    )

    # Same patient, same evidence: held back; the other cards are still shown.
    second = call(client)
    assert "calcium-low" not in second
    assert set(second) == set(first) - {"calcium-low"}

    # A new, lower calcium is new evidence: the card is back.
    lower = hook_request()
    for entry in lower["prefetch"]["observations"]["entry"]:
        resource = entry["resource"]
        if resource["code"]["coding"][0]["code"] == "17861-6":
            resource["valueQuantity"]["value"] = 7.9
    assert "calcium-low" in call(client, lower)

    # Same evidence, but the snooze period (30 days for calcium-low) is over: shown again.
    clock.at = NOW + timedelta(days=31)
    assert "calcium-low" in call(client)


def test_an_override_stored_by_another_worker_holds_the_card_back_after_a_refresh(
    store_app: Flask, tmp_path: Path, database_url: str, knowledge: Knowledge, clock: MovableClock
) -> None:
    other = create_app(
        make_settings(tmp_path, database_url=database_url), clock=clock, knowledge=knowledge
    )
    try:
        runtime = other.extensions["cds_runtime"]
        ticks = [0.0]
        runtime.overridden.monotonic = lambda: ticks[0]
        worker_a, worker_b = store_app.test_client(), other.test_client()
        first = call(worker_b)  # worker B has read the (empty) list of overridden patients
        runtime.recorder.flush()  # B's record of the card is stored (its 50 ms batch window)
        response = send(worker_a, item(first["calcium-low"], "overridden", overrideReason=REASON))
        assert response.status_code == 200
        # B learns of A's override when it next reads the list: at most a refresh period later.
        ticks[0] += runtime.overridden.max_age
        assert "calcium-low" not in call(worker_b)
        assert runtime.overridden.max_age <= 1.0
    finally:
        other.extensions["cds_runtime"].close()


def test_accepted_cards_are_not_snoozed(client: FlaskClient) -> None:
    first = call(client)
    send(client, item(first["calcium-low"], "accepted"))
    assert "calcium-low" in call(client)


def test_snoozing_is_per_patient(client: FlaskClient) -> None:
    first = call(client)
    send(client, item(first["calcium-low"], "overridden", overrideReason=REASON))
    other = copy.deepcopy(hook_request())
    text = json.dumps(other).replace(other["context"]["patientId"], "another-patient-77")
    assert "calcium-low" in call(client, json.loads(text))


def test_report_and_cli(
    client: FlaskClient, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = call(client)
    send(
        client,
        item(first["calcium-low"], "overridden", overrideReason=REASON),
        item(first["calcium-low"], "overridden", at="2026-11-24T12:02:00Z", overrideReason=REASON),
    )
    second = call(client, json.loads(json.dumps(hook_request()).replace("8.4", "8.3")))
    send(client, item(second["calcium-low"], "accepted"))
    rows = {r.kind: r for r in report(database_url, None)}
    low = rows["calcium-low"]
    # One outcome per card: the first card was overridden twice, the second accepted.
    assert (low.shown, low.accepted, low.overridden) == (2, 1, 1)
    assert low.acceptance_rate == 0.5
    assert low.reasons.most_common(1)[0][0].startswith("Recipient disagrees")

    monkeypatch.setenv("CDS_ENV", "development")
    monkeypatch.setenv("CDS_DATABASE_URL", database_url)
    result = CliRunner().invoke(main, ["report", "--since", "2026-11-01"])
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if x.startswith("calcium-low"))
    assert line.split()[1:6] == ["2", "0", "1", "1", "50%"]  # shown, silent, accepted, ...
    assert "Recipient disagrees" in line
    later = CliRunner().invoke(main, ["report", "--since", "2026-12-01"])
    assert "calcium-low" not in later.output


OTHER_REASON = {
    "reason": {
        "system": "http://terminology.hl7.org/CodeSystem/non-adherence-reason-codes",
        "code": "patient-refuses",
        "display": "Patient refuses/declines (no context given)*",
    }
}

# Feedback on one card, in the order it reaches the service (a reason, or "-" for none), and what
# follows: report (accepted, overridden, override reasons) and whether the card is snoozed.
ORDERINGS = {
    # The sandbox's flow: take a suggestion, then dismiss the card (no reason).
    "accepted-then-dismissed": ([("accepted", None), ("overridden", "-")], (1, 0, {}), False),
    "accepted-then-overridden-with-reason": (
        [("accepted", None), ("overridden", REASON)],
        (1, 0, {}),  # the card was acted on: its reason is stored but not an override reason
        False,
    ),
    # A dismissed card taken up again later (CDS Hooks: "a card once ignored could later be
    # acted upon"): accepted, and the earlier override no longer holds it back.
    "overridden-then-accepted": ([("overridden", REASON), ("accepted", None)], (1, 0, {}), False),
    "accepted-twice": ([("accepted", None), ("accepted", None)], (1, 0, {}), False),
    "overridden-twice": (
        [("overridden", REASON), ("overridden", OTHER_REASON)],
        (
            0,
            1,
            {"Patient refuses/declines (no context given)*": 1},
        ),  # one card, the reason of its latest override
        True,
    ),
    "dismissed": ([("overridden", "-")], (0, 1, {"(no reason given)": 1}), True),
}


@pytest.mark.parametrize("ordering", ORDERINGS)
def test_one_outcome_per_card_and_an_accepted_card_never_snoozes(
    client: FlaskClient, database_url: str, ordering: str
) -> None:
    sequence, (accepted, overridden, reasons), snoozes = ORDERINGS[ordering]
    low = call(client)["calcium-low"]
    for minute, (outcome, reason) in enumerate(sequence, start=5):
        extra = {"overrideReason": reason} if isinstance(reason, dict) else {}
        at = f"2026-11-24T11:{50 + minute:02}:00Z"  # before the fixed clock (a future time is refused)
        assert send(client, item(low, outcome, at=at, **extra)).get_json()["new"] == 1
    row = {r.kind: r for r in report(database_url, None)}["calcium-low"]
    assert (row.accepted, row.overridden, dict(row.reasons)) == (accepted, overridden, reasons)
    assert ("calcium-low" not in call(client)) is snoozes


def test_a_reason_sent_as_a_code_alone_counts_with_the_same_reason_sent_in_full(
    client: FlaskClient, database_url: str
) -> None:
    """The sandbox sends overrideReason.reason as system + code, without the display."""
    first = call(client)["calcium-low"]
    send(client, item(first, "overridden", overrideReason=REASON))
    lower = json.loads(json.dumps(hook_request()).replace("8.4", "8.3"))
    second = call(client, lower)["calcium-low"]
    code_only = {"reason": {k: v for k, v in REASON["reason"].items() if k != "display"}}
    send(client, item(second, "overridden", overrideReason=code_only))
    row = {r.kind: r for r in report(database_url, None)}["calcium-low"]
    assert dict(row.reasons) == {REASON["reason"]["display"]: 2}


def test_accepting_a_dismissed_card_lifts_its_snooze_at_once(client: FlaskClient) -> None:
    low = call(client)["calcium-low"]
    send(client, item(low, "overridden", overrideReason=REASON))
    assert "calcium-low" not in call(client)
    send(client, item(low, "accepted", at="2026-11-24T12:02:00Z"))
    assert "calcium-low" in call(client)


def test_an_accepted_card_does_not_lift_the_snooze_of_another_dismissed_one(
    client: FlaskClient,
) -> None:
    """Per card: accepting one card does not undo a dismissal of another of the same kind."""
    first = call(client)["calcium-low"]
    send(client, item(first, "accepted"))
    second = call(client)["calcium-low"]  # same kind, same evidence, a new card
    send(client, item(second, "overridden", at="2026-11-24T12:02:00Z"))
    assert "calcium-low" not in call(client)


def test_feedback_posted_to_another_service_snoozes_nothing(
    client: FlaskClient, database_url: str
) -> None:
    """A card's feedback URL is its own service's: an override of a patient-view card posted to an
    order review's endpoint is kept as sent, but counts and snoozes nothing."""
    low = call(client)["calcium-low"]
    sent = send(client, item(low, "overridden"), service="leg-cramps-order-sign")
    assert sent.status_code == 200
    assert "calcium-low" in call(client)
    assert "calcium-low" not in {r.kind for r in report(database_url, None) if r.overridden}


def test_an_upper_case_card_uuid_is_the_same_card(client: FlaskClient) -> None:
    low = call(client)["calcium-low"]
    send(client, {**item(low, "overridden"), "card": low["uuid"].upper()})
    assert "calcium-low" not in call(client)


def test_metrics_count_requests_cards_and_feedback(client: FlaskClient) -> None:
    first = call(client)
    send(client, item(first["calcium-low"], "accepted"))
    text = client.get("/metrics").get_data(as_text=True)
    assert (
        'cds_requests_total{endpoint="/cds-services/<service_id>",service="leg-cramps-after-stroke",status="200"}'
        in text
    )
    assert (
        'cds_cards_total{indicator="warning",kind="calcium-low",service="leg-cramps-after-stroke"}'
        in text
    )
    assert 'cds_feedback_total{outcome="accepted",service="leg-cramps-after-stroke"}' in text
    assert "cds_request_duration_seconds_bucket" in text


def test_prune_removes_old_records(client: FlaskClient, database_url: str) -> None:
    first = call(client)
    send(client, item(first["calcium-low"], "accepted"))
    assert prune(database_url, NOW - timedelta(days=1), NOW)["issued_cards"] == 0
    removed = prune(database_url, NOW + timedelta(days=1), NOW)
    assert removed["issued_cards"] == len(first) and removed["feedback"] == 1
    assert stored(database_url) == 0


def test_database_outage_mid_run(tmp_path: Path, knowledge: Knowledge) -> None:
    """PostgreSQL behind a proxy that is cut and restored: cards keep flowing, feedback waits."""
    with postgres_schema() as direct_url:
        host_port = direct_url.split("@", 1)[1].split("/", 1)[0]
        host, port = host_port.split(":")
        with TcpProxy(host, int(port)) as proxy:
            url = direct_url.replace(host_port, f"127.0.0.1:{proxy.port}")
            clock = MovableClock(NOW)
            settings = make_settings(tmp_path, database_url=url, store_retry_seconds=0.0)
            app = create_app(settings, clock=clock, knowledge=knowledge)
            client = app.test_client()
            try:
                before = call(client)
                proxy.stop()
                # Hook calls still answer with cards (no snoozing while the database is away).
                during = call(client)
                assert set(during) == set(before)
                down = send(client, item(during["calcium-low"], "accepted"))
                assert down.status_code == 503
                assert int(down.headers["Retry-After"]) > 0
                assert down.get_json()["resourceType"] == "OperationOutcome"
                assert client.get("/readyz").get_json()["store"].startswith("unreachable")

                proxy.start()
                up = send(client, item(before["calcium-low"], "accepted"))
                assert up.status_code == 200, up.get_data(as_text=True)
                assert client.get("/readyz").get_json()["store"] == "postgresql"
                after = call(client)
                assert "calcium-low" in after
            finally:
                app.extensions["cds_runtime"].close()
                release(url)
            assert (
                stored(direct_url) == 1
            )  # only the item sent after recovery; nothing half-written


@pytest.mark.parametrize(
    ("field", "text"),
    [
        (("reason", "display"), "Recipient disagrees\x1b[2J\x1b[H"),  # clears a terminal
        (("reason", "code"), "agree\r\ncalcium-low      9      0      9      0   100%"),  # a row
        (("reason", "display"), "evidence \u202egnorw\u202c"),  # shown reversed
        (("userComment",), "late\x85line"),  # C1 next line
    ],
)
def test_control_characters_in_feedback_text_are_refused(
    client: FlaskClient, database_url: str, field: tuple[str, ...], text: str
) -> None:
    reason: dict[str, Any] = copy.deepcopy(REASON)
    parent = reason
    for name in field[:-1]:
        parent = parent[name]
    parent[field[-1]] = text
    response = send(client, item(call(client)["calcium-low"], "overridden", overrideReason=reason))
    assert response.status_code == 400
    issue = response.get_json()["issue"][0]
    assert issue["expression"] == [f"$.feedback[0].overrideReason.{'.'.join(field)}"]
    assert "control character" in issue["diagnostics"]
    assert stored(database_url) == 0


def test_report_replaces_control_characters_stored_before_they_were_refused(
    client: FlaskClient, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    send(client, item(call(client)["calcium-low"], "overridden", overrideReason=REASON))
    forged = "ok\r\ncalcium-low 99\x1b[2J \u202eevil\u2066"
    with engine_for(database_url).begin() as connection:
        connection.execute(feedback.update().values(override_display=forged))
    monkeypatch.setenv("CDS_ENV", "development")
    monkeypatch.setenv("CDS_DATABASE_URL", database_url)
    result = CliRunner().invoke(main, ["report", "--html", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "ok\ufffd\ufffdcalcium-low 99\ufffd[2J \ufffdevil\ufffd" in result.output
    assert not any(c in result.output for c in "\r\x1b\u202e\u2066")
    assert len([x for x in result.output.splitlines() if x.startswith("calcium-low")]) == 1
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "ok\ufffd\ufffdcalcium-low 99" in page
    assert not any(c in page for c in "\x1b\u202e\u2066")


def test_reasons_count_by_system_and_code_and_are_named_by_their_most_frequent_display(
    client: FlaskClient, database_url: str
) -> None:
    def reason(system: str, display: str) -> dict[str, Any]:
        return {"reason": {"system": system, "code": "not-indicated", "display": display}}

    ours, theirs = "http://example.org/ours", "http://example.org/theirs"
    sent = [
        reason(ours, "Not indicated (typo)"),
        reason(ours, "Not indicated"),
        reason(ours, "Not indicated"),
        reason(theirs, "Already treated elsewhere"),
    ]
    for n, override in enumerate(sent):
        request = json.loads(json.dumps(hook_request()).replace("8.4", f"8.{n}"))
        send(
            client,
            item(call(client, request)["calcium-low"], "overridden", overrideReason=override),
        )
    row = {r.kind: r for r in report(database_url, None)}["calcium-low"]
    assert dict(row.reasons) == {"Not indicated": 3, "Already treated elsewhere": 1}
