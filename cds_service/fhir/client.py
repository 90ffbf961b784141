"""HTTP client for a CDS client's FHIR server: allowlisted, token-bearing, paginating, time-bounded.

The access token is held only in memory for the duration of one hook call; it is never logged, never
stored and never sent to any URL other than the FHIR server the request named (CDS Hooks §Passing the
Access Token: "the access token SHALL be treated as a transient value").
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from cds_service.urls import AllowedUrl, check_fhir_server

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"


class FhirFetchError(Exception):
    """A query could not be answered; the message is safe to log and to return (no token, no PHI)."""


@dataclass(frozen=True)
class FhirClient:
    """Reads and searches one FHIR server on behalf of one hook call."""

    http: httpx.Client
    base_url: str
    allowlist: tuple[AllowedUrl, ...]
    access_token: str | None = None
    timeout_seconds: float = 3.0
    max_pages: int = 20

    def __post_init__(self) -> None:
        reason = check_fhir_server(self.base_url, self.allowlist)
        if reason:
            raise FhirFetchError(reason)

    def query(self, relative: str) -> dict[str, Any] | None:
        """GET {fhirServer}/{relative}; a searchset is returned with every page's entries merged.

        None means the server has no such resource (404 on a read), which the prefetch rules treat
        like a `null` prefetch value: no data.
        """
        url = f"{self.base_url.rstrip('/')}/{relative.lstrip('/')}"
        resource = self._get(url, allow_missing=True)
        if resource is None or resource.get("resourceType") != "Bundle":
            return resource
        return self.complete(resource)

    def complete(self, bundle: dict[str, Any]) -> dict[str, Any]:
        """`bundle` with the entries of all its `next` pages appended, up to the configured page cap."""
        entries = list(_entries(bundle))
        page = bundle
        pages = 1
        while (next_url := _next_link(page)) is not None:
            if pages >= self.max_pages:
                # Templates sort newest first, so what is cut off here is the oldest history.
                log.warning("fhir paging stopped at the page cap", extra={"pages": pages})
                break
            if not self._same_server(next_url):
                raise FhirFetchError("a next link points outside the FHIR server; not followed")
            page = self._get(next_url, allow_missing=False) or {}
            if page.get("resourceType") != "Bundle":
                raise FhirFetchError("a next link did not return a Bundle")
            entries.extend(_entries(page))
            pages += 1
        merged = {k: v for k, v in bundle.items() if k not in {"entry", "link"}}
        if entries:
            merged["entry"] = _unique(entries)
        return merged

    def _same_server(self, url: str) -> bool:
        base = urlsplit(self.base_url)
        other = urlsplit(url)
        return (other.scheme, other.netloc) == (base.scheme, base.netloc) and not check_fhir_server(
            url, self.allowlist
        )

    def _get(self, url: str, allow_missing: bool) -> dict[str, Any] | None:
        headers = {"Accept": FHIR_JSON}
        if self.access_token:
            headers["Authorization"] = f"Bearer {self.access_token}"
        try:
            response = self.http.get(url, headers=headers, timeout=self.timeout_seconds)
        except httpx.TimeoutException:
            raise FhirFetchError(
                f"the FHIR server did not answer within {self.timeout_seconds:g} s"
            ) from None
        except httpx.HTTPError as exc:
            raise FhirFetchError(
                f"the FHIR server could not be reached ({type(exc).__name__})"
            ) from None
        if response.status_code == 404 and allow_missing:
            return None
        if response.status_code in (401, 403):
            raise FhirFetchError(
                f"the FHIR server refused the request ({response.status_code}); "
                "the access token may be missing, expired or lack the needed scope"
            )
        if response.status_code != 200:
            raise FhirFetchError(f"the FHIR server answered {response.status_code}")
        try:
            body = json.loads(response.content)
        except ValueError:
            raise FhirFetchError("the FHIR server returned a body that is not JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get("resourceType"), str):
            raise FhirFetchError("the FHIR server returned JSON that is not a FHIR resource")
        return body


def _entries(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    entry = bundle.get("entry")
    return [e for e in entry if isinstance(e, dict)] if isinstance(entry, list) else []


def _next_link(bundle: dict[str, Any]) -> str | None:
    links = bundle.get("link")
    if not isinstance(links, list):
        return None
    for link in links:
        if (
            isinstance(link, dict)
            and link.get("relation") == "next"
            and isinstance(link.get("url"), str)
        ):
            return str(link["url"])
    return None


def _unique(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Entries without repeats: pages of a live search can overlap when data changes between reads."""
    seen: set[tuple[str, str]] = set()
    unique = []
    for entry in entries:
        resource = entry.get("resource")
        if isinstance(resource, dict) and isinstance(resource.get("id"), str):
            key = (str(resource.get("resourceType")), resource["id"])
            if key in seen:
                continue
            seen.add(key)
        unique.append(entry)
    return unique
