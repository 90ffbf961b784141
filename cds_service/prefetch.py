"""Prefetch as CDS Hooks 2.0 defines it: use what the client sent, fetch what it did not, else 412.

Per key of a service's prefetch templates (CDS Hooks §Prefetch Template):
- present with a resource or Bundle: used (a paginated Bundle is completed from fhirServer);
- present with `null`: the client has no data; used as "no data", never re-fetched;
- an OperationOutcome, or a Bundle holding only OperationOutcomes: the client could not fill it;
- absent: the client chose not to fill it.
Keys in the last two states are fetched from `fhirServer`, concurrently, each with its own timeout and
all within one overall deadline. A required key that still has no answer fails the call with 412.

Then Medications that orders name only by a reference, and that no key brought, are read from
`fhirServer` too (a query outside the templates: CDS Hooks' recommended prefetch subset has no
`_include`), within what is left of the same deadline and byte budget; failing that, the record goes
on without them (the rules then say the medicine could not be identified).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, Future, wait
from enum import Enum
from typing import Any, Protocol

from cds_service.errors import Issue, PreconditionFailed
from cds_service.fhir.client import FhirFetchError
from cds_service.fhir.data import Resource, items
from cds_service.fhir.record import PatientRecord
from cds_service.knowledge.loader import PrefetchTemplate

log = logging.getLogger(__name__)

TOKEN = re.compile(r"\{\{\s*([^{}]+?)\s*\}\}")

# Most Medications read for one call, all in one search (a medicine list, with room; any beyond
# stay unidentified and are said to be).
MAX_MEDICATION_LOOKUPS = 50

USER_TOKENS = {
    "userPractitionerId": "Practitioner",
    "userPractitionerRoleId": "PractitionerRole",
    "userPatientId": "Patient",
    "userRelatedPersonId": "RelatedPerson",
}


class KeyState(Enum):
    """What a client-supplied prefetch value means."""

    PRESENT = "present"
    NO_DATA = "no-data"
    NOT_FILLED = "not-filled"
    ABSENT = "absent"


class UnresolvableToken(ValueError):
    """A template token has no value in this request's context."""


def resolve_template(query: str, context: Mapping[str, Any]) -> str:
    """The query with every `{{context.x}}` and user token replaced by its value from `context`."""

    def value(match: re.Match[str]) -> str:
        token = match.group(1)
        if token.startswith("context."):
            field = token.removeprefix("context.")
            found = context.get(field)
            if isinstance(found, str | int | float) and not isinstance(found, bool) and str(found):
                return str(found)
            raise UnresolvableToken(f"{{{{{token}}}}} has no primitive value in the context")
        if token in USER_TOKENS:
            user = context.get("userId")
            resource_type = USER_TOKENS[token]
            if isinstance(user, str) and user.startswith(resource_type + "/"):
                return user.removeprefix(resource_type + "/")
            raise UnresolvableToken(f"{{{{{token}}}}}: the user is not a {resource_type}")
        raise UnresolvableToken(f"{{{{{token}}}}} is not a token this service understands")

    return TOKEN.sub(value, query)


def classify(value: Any, present: bool) -> KeyState:
    """The state of one prefetch key as the client sent it."""
    if not present:
        return KeyState.ABSENT
    if value is None:
        return KeyState.NO_DATA
    if value.get("resourceType") == "OperationOutcome":
        return KeyState.NOT_FILLED
    if value.get("resourceType") == "Bundle":
        entries = (e for e in items(value.get("entry")) if isinstance(e, dict))
        first = next(entries, None)
        # Stops at the first entry that is not an OperationOutcome (the first, for real data).
        if first is not None and _is_outcome(first) and all(_is_outcome(e) for e in entries):
            return KeyState.NOT_FILLED
    return KeyState.PRESENT


def _is_outcome(entry: dict[str, Any]) -> bool:
    resource = entry.get("resource")
    return isinstance(resource, dict) and resource.get("resourceType") == "OperationOutcome"


def has_next_page(value: Mapping[str, Any]) -> bool:
    """Whether a prefetched Bundle says more pages follow."""
    links = value.get("link")
    return isinstance(links, list) and any(
        isinstance(link, dict) and link.get("relation") == "next" for link in links
    )


class Fetcher(Protocol):
    """What the prefetch step needs from a FHIR server (FhirClient)."""

    def query(self, relative: str) -> dict[str, Any] | None:
        """A read or a fully paged search; None when the resource does not exist."""

    def complete(self, bundle: dict[str, Any]) -> dict[str, Any]:
        """A paginated Bundle with all its remaining pages merged in."""


# One fetch for one key, run on the executor with the call's FHIR client.
Job = Callable[[Fetcher], dict[str, Any] | None]


def gather(
    templates: list[PrefetchTemplate],
    prefetch: Mapping[str, Any],
    context: Mapping[str, Any],
    connect: Callable[[], Fetcher],
    executor: Executor,
    deadline_seconds: float,
) -> dict[str, dict[str, Any] | None]:
    """The data for every template key, fetching what the client did not supply.

    `connect` gives the call's FHIR client, or raises FhirFetchError saying why the request's
    fhirServer cannot be used; it is called only when something must be fetched, so a fhirServer
    the call does not need is neither checked nor complained about.
    Raises PreconditionFailed naming each required key that could not be obtained.
    """
    data: dict[str, dict[str, Any] | None] = {}
    jobs: dict[str, Job] = {}
    failures: list[Issue] = []

    for template in templates:
        supplied = prefetch.get(template.key)
        state = classify(supplied, template.key in prefetch)
        if state is KeyState.NO_DATA:
            data[template.key] = None
        elif state is KeyState.PRESENT:
            assert supplied is not None
            if supplied.get("resourceType") == "Bundle" and has_next_page(supplied):
                jobs[template.key] = _completer(supplied)
            else:
                data[template.key] = supplied
        else:
            try:
                query = resolve_template(template.query, context)
            except UnresolvableToken as exc:
                if template.required:
                    failures.append(_missing(template.key, str(exc)))
                continue
            jobs[template.key] = _querier(query)

    if not jobs and not failures:
        return data  # everything was prefetched: the common case, no client, no threads
    futures: dict[str, Future[dict[str, Any] | None]] = {}
    if jobs:
        try:
            fetcher = connect()
        except FhirFetchError as refused:
            required = [t.key for t in templates if t.key in jobs and t.required]
            failures.extend(_missing(key, str(refused)) for key in required)
            # A warning when the call fails for it; an optional key the EHR did not send (and
            # this server may not be asked for) is no operator's problem, and with many EHRs it
            # is every call: a debug line, not one INFO line more per call.
            level = logging.WARNING if required else logging.DEBUG
            log.log(level, "fhirServer refused", extra={"reason": str(refused)})
        else:
            futures = {key: executor.submit(job, fetcher) for key, job in jobs.items()}
    done, _ = wait(futures.values(), timeout=deadline_seconds)
    for key, future in futures.items():
        template = next(t for t in templates if t.key == key)
        if future not in done:
            future.cancel()
            reason = f"the FHIR server did not answer within the {deadline_seconds:g} s deadline"
        else:
            try:
                data[key] = future.result()
                continue
            except FhirFetchError as failure:  # not `exc`: mypyc types a name by its first use
                reason = str(failure)
        log.warning("prefetch key not obtained", extra={"prefetch_key": key, "reason": reason})
        if template.required:
            failures.append(_missing(key, reason))

    if failures:
        raise PreconditionFailed("required prefetch data could not be obtained", failures)
    return data


def add_referenced_medications(
    record: PatientRecord,
    requests: list[Resource],
    connect: Callable[[], Fetcher],
    executor: Executor,
    seconds_left: float,
) -> None:
    """Reads from fhirServer the Medications that the record's orders and statements, and
    `requests` (draft orders), name by a reference the record cannot resolve, and adds them.

    `connect` must give the client gather() used, if it made one (one deadline and byte budget per
    call). Any failure is logged and leaves the record as it was: never a failed call.
    """
    ids = record.unresolved_medication_ids(requests)[:MAX_MEDICATION_LOOKUPS]
    if not ids:
        return
    try:
        fetcher = connect()
    except FhirFetchError as refused:
        # As for an optional prefetch key: what the EHR did not send and no server may be asked
        # for; the card says the medicine could not be identified.
        log.debug("referenced medications not looked up", extra={"reason": str(refused)})
        return
    # FHIR ids are [A-Za-z0-9-.] (checked when collected): nothing in them needs escaping.
    job = _querier(f"Medication?_id={','.join(ids)}&_count={len(ids)}")
    future = executor.submit(job, fetcher)
    done, _ = wait([future], timeout=max(seconds_left, 0.0))
    if future not in done:
        future.cancel()
        reason = "the FHIR server did not answer within the call's deadline"
    else:
        try:
            record.add_medications(future.result(), set(ids))
            return
        except FhirFetchError as failure:
            reason = str(failure)
    log.warning("referenced medications not obtained", extra={"reason": reason})


def _querier(query: str) -> Job:
    def run(fetcher: Fetcher) -> dict[str, Any] | None:
        return fetcher.query(query)

    return run


def _completer(bundle: dict[str, Any]) -> Job:
    def run(fetcher: Fetcher) -> dict[str, Any]:
        return fetcher.complete(bundle)

    return run


def _missing(key: str, reason: str) -> Issue:
    return Issue(
        "incomplete", f"prefetch key '{key}' could not be obtained: {reason}", f"prefetch.{key}"
    )
