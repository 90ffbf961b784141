"""HTTP client for a CDS client's FHIR server: allowlisted, token-bearing, paginating, time-bounded.

The access token is held only in memory for the duration of one hook call; it is never logged, never
stored and never sent to any URL other than the FHIR server the request named (CDS Hooks §Passing the
Access Token: "the access token SHALL be treated as a transient value").

Bounds: every URL is normalized and allowlisted before it is requested (cds_service.urls); one
deadline covers all requests of a hook call, down to each socket read (DeadlineBackend), so a server
that drips bytes cannot hold a fetch thread past it; the bytes read per hook call are capped, counted
after decompression; a JSON answer nested deeper than any FHIR resource is refused.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

from cds_service.urls import (
    AllowedUrl,
    UnsafeUrl,
    check_fhir_server,
    has_dot_segment,
    normalize_url,
)

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
# Deeper than any resource this service reads (Bundle > entry > resource > extension > ...), and far
# below the depth at which parsing or later processing would exhaust the interpreter's stack.
MAX_JSON_DEPTH = 64
_CHUNK = 64 * 1024
ENCODINGS = frozenset({"identity", "gzip", "deflate"})  # what the client offers and reads


class FhirFetchError(Exception):
    """A query could not be answered; the message is safe to log and to return (no token, no PHI)."""


# --- one deadline, down to each socket read -------------------------------------------------------

_deadline = threading.local()


def _capped(timeout: float | None, expired: type[Exception]) -> float | None:
    """`timeout` shortened to what is left of this thread's deadline, if it has one."""
    at: float | None = getattr(_deadline, "at", None)
    if at is None:
        return timeout
    left = at - time.monotonic()
    if left <= 0:
        raise expired("the deadline of the hook call has passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read and write ends by the calling thread's deadline."""

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _capped(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _capped(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        timeout = _capped(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's socket backend with every connection bounded by the calling thread's deadline.

    A per-read timeout alone lets a server that sends one byte a second hold a thread for ever;
    capping each read at the time left of the hook call's deadline ends the transfer with the call.
    Threads with no deadline set (the JWKS fetches) keep their ordinary timeouts.
    """

    def __init__(self) -> None:
        self._backend = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        timeout = _capped(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(
            self._backend.connect_tcp(host, port, timeout, local_address, socket_options)
        )

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        timeout = _capped(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._backend.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


@contextmanager
def call_deadline(seconds: float) -> Iterator[None]:
    """Within this block, every connect, read and write this thread makes through
    new_http_client() ends by `seconds` from now (for callers outside FhirClient: the JWKS fetch)."""
    previous = getattr(_deadline, "at", None)
    _deadline.at = time.monotonic() + seconds
    try:
        yield
    finally:
        _deadline.at = previous


def new_http_client() -> httpx.Client:
    """The service's outgoing HTTP client: no redirects, no proxy from the environment, deadlines."""
    transport = httpx.HTTPTransport(trust_env=False)
    # httpx (0.28, 0.29) takes no network backend; its pool keeps one in this attribute, and
    # tests/test_hostile.py fails if a drip-feeding server is no longer cut off at the deadline.
    # Public API alone is not enough: a per-request timeout recomputed from the time left bounds
    # each read, not the call, so headers or a body sent one byte at a time keep a fetch thread
    # past the deadline (tried: test_fhir_faults' drip-headers and drip-body cases then fail);
    # httpcore.ConnectionPool(network_backend=...) is public, but wrapping it in our own httpx
    # transport means redoing httpx's request and exception mapping.
    transport._pool._network_backend = DeadlineBackend()
    return httpx.Client(transport=transport, follow_redirects=False, trust_env=False)


@dataclass(frozen=True)
class FhirClient:
    """Reads and searches one FHIR server on behalf of one hook call."""

    http: httpx.Client
    base_url: str
    allowlist: tuple[AllowedUrl, ...]
    access_token: str | None = None
    timeout_seconds: float = 3.0
    max_pages: int = 20
    deadline_seconds: float = 5.0  # for all requests of the call, from the client's creation
    max_bytes: int = 10 * 1024 * 1024  # of all responses of the call, after decompression
    _deadline_at: float = field(init=False, repr=False)
    _budget: list[int] = field(init=False, repr=False)  # bytes left; shared by the fetch threads
    _lock: threading.Lock = field(init=False, repr=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        # A base URL has no query: each search's own query would be glued onto it (a fragment is
        # never sent, and normalizing drops it).
        if "?" in self.base_url.split("#", 1)[0]:
            raise FhirFetchError("fhirServer is not a usable URL: a FHIR base has no query")
        reason = check_fhir_server(self.base_url, self.allowlist)
        if reason:
            raise FhirFetchError(reason)
        # Frozen: the normalized base is what every request is built on and checked against.
        object.__setattr__(self, "base_url", normalize_url(self.base_url))
        object.__setattr__(self, "_deadline_at", time.monotonic() + self.deadline_seconds)
        object.__setattr__(self, "_budget", [self.max_bytes])

    def query(self, relative: str) -> dict[str, Any] | None:
        """GET {fhirServer}/{relative}; a searchset is returned with every page's entries merged.

        None means the server has no such resource (404 on a read), which the prefetch rules treat
        like a `null` prefetch value: no data.
        """
        if has_dot_segment(relative):
            # A context value such as ".." would move the query off the resource it names.
            raise FhirFetchError("the query has a '.' or '..' path segment; not sent")
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
            page = self._get(next_url, allow_missing=False) or {}
            if page.get("resourceType") != "Bundle":
                raise FhirFetchError("a next link did not return a Bundle")
            entries.extend(_entries(page))
            pages += 1
        merged = {k: v for k, v in bundle.items() if k not in {"entry", "link"}}
        if entries:
            merged["entry"] = _unique(entries)
        return merged

    def _checked(self, url: str) -> str:
        """`url` normalized, if it is on the allowlist and on the same origin as fhirServer."""
        try:
            normal = normalize_url(url)
        except UnsafeUrl as exc:
            raise FhirFetchError(f"a FHIR URL was not followed: {exc}") from None
        base, other = urlsplit(self.base_url), urlsplit(normal)
        root = base.path.rstrip("/")
        under = other.path == root or other.path.startswith(root + "/")
        if (other.scheme, other.netloc) != (base.scheme, base.netloc) or not under:
            raise FhirFetchError("a FHIR URL points outside the FHIR server; not followed")
        if check_fhir_server(normal, self.allowlist):
            raise FhirFetchError("a FHIR URL is not on the allowlist; not followed")
        return normal

    def _get(self, url: str, allow_missing: bool) -> dict[str, Any] | None:
        url = self._checked(url)
        headers = {"Accept": FHIR_JSON, "Accept-Encoding": "gzip, deflate"}
        if self.access_token:
            headers["Authorization"] = f"Bearer {self.access_token}"
        _deadline.at = self._deadline_at
        try:
            return self._read(url, headers, allow_missing)
        except httpx.TimeoutException:
            if time.monotonic() >= self._deadline_at:
                raise FhirFetchError(
                    f"the FHIR server did not answer within the {self.deadline_seconds:g} s deadline"
                ) from None
            raise FhirFetchError(
                f"the FHIR server did not answer within {self.timeout_seconds:g} s"
            ) from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise FhirFetchError(
                f"the FHIR server could not be reached ({type(exc).__name__})"
            ) from None
        finally:
            _deadline.at = None

    def _read(
        self, url: str, headers: dict[str, str], allow_missing: bool
    ) -> dict[str, Any] | None:
        with self.http.stream(
            "GET", url, headers=headers, timeout=self.timeout_seconds
        ) as response:
            if response.status_code == 404 and allow_missing:
                return None
            if response.status_code in (401, 403):
                raise FhirFetchError(
                    f"the FHIR server refused the request ({response.status_code}); "
                    "the access token may be missing, expired or lack the needed scope"
                )
            if response.status_code != 200:
                raise FhirFetchError(f"the FHIR server answered {response.status_code}")
            content = self._content(response)
        try:
            body = json.loads(content)
        except RecursionError:
            raise FhirFetchError("the FHIR server returned JSON nested too deeply") from None
        except ValueError:
            raise FhirFetchError("the FHIR server returned a body that is not JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get("resourceType"), str):
            raise FhirFetchError("the FHIR server returned JSON that is not a FHIR resource")
        if _depth_exceeds(body, MAX_JSON_DEPTH):
            raise FhirFetchError(
                f"the FHIR server returned JSON nested deeper than {MAX_JSON_DEPTH} levels"
            )
        return body

    def _content(self, response: httpx.Response) -> bytes:
        """The body, read while it stays within the call's byte budget and deadline.

        Decompressed here rather than by httpx, whose decoder inflates each 64 kB read in full (about
        64 MB for a gzip bomb) before anything could be counted; here no step inflates past the budget.
        """
        too_big = FhirFetchError(
            f"the FHIR answers of this call are larger than {self.max_bytes} bytes; not read"
        )
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ENCODINGS:
            raise FhirFetchError(f"the FHIR server sent a {encoding!r} body, which is not read")
        # wbits 47: a gzip or a zlib header, whichever the server sent ("deflate" is zlib in HTTP).
        inflater = zlib.decompressobj(wbits=47) if encoding != "identity" else None
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self._budget[0]:
            raise too_big
        chunks = []
        for raw in response.iter_raw(_CHUNK):
            try:
                # The budget is shared by the call's fetch threads: another may have spent it.
                room = max(self._budget[0], 0) + 1
                chunk = raw if inflater is None else inflater.decompress(raw, room)
            except zlib.error:
                raise FhirFetchError(
                    "the FHIR server sent a body that does not decompress"
                ) from None
            with self._lock:
                self._budget[0] -= len(chunk)
                left = self._budget[0]
            if left < 0 or (inflater is not None and inflater.unconsumed_tail):
                raise too_big
            if time.monotonic() >= self._deadline_at:
                raise httpx.ReadTimeout("the deadline of the hook call has passed")
            chunks.append(chunk)
        if inflater is not None:
            chunks.append(inflater.flush())  # at most a few bytes zlib held back; never a bomb
        return b"".join(chunks)


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Whether `value` nests containers more than `limit` deep (iterative: no recursion to exhaust)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


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
