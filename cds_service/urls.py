"""URL allowlisting: which FHIR servers the service may contact with a client's access token."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit


def is_loopback_host(host: str) -> bool:
    """True for localhost and loopback IP literals."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class AllowedUrl:
    """One allowlist entry: scheme and host must match exactly, the port if given, the path by segment."""

    scheme: str
    host: str
    port: int | None
    path: str

    @classmethod
    def parse(cls, text: str) -> AllowedUrl:
        """An entry from its URL prefix form, e.g. https://fhir.example.org/r4 or http://127.0.0.1."""
        parts = urlsplit(text.strip())
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError(f"{text!r} is not an absolute http(s) URL")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise ValueError(f"{text!r} must not carry credentials, a query or a fragment")
        return cls(parts.scheme, parts.hostname.lower(), parts.port, parts.path.rstrip("/"))

    def matches(self, url: str) -> bool:
        """Whether `url` lies under this entry (no look-alike hosts, no partial path segments)."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            return False
        if parts.scheme != self.scheme or (parts.hostname or "").lower() != self.host:
            return False
        if parts.username or parts.password:
            return False
        if self.port is not None and port != self.port:
            return False
        path = parts.path
        return path == self.path or path.startswith(self.path + "/") or not self.path


def check_fhir_server(url: str, allowlist: tuple[AllowedUrl, ...]) -> str | None:
    """None when the service may call `url`; otherwise the reason it may not."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "fhirServer is not a valid URL"
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        return "fhirServer must be an absolute http(s) URL"
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        return "fhirServer must use https (http is accepted only for loopback addresses)"
    if not any(entry.matches(url) for entry in allowlist):
        return (
            "fhirServer is not on this service's FHIR server allowlist (CDS_FHIR_SERVER_ALLOWLIST)"
        )
    return None
