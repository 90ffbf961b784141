"""URL allowlisting: which FHIR servers the service may contact with a client's access token.

Every URL is first brought to one normal form (RFC 3986 §6.2.2: case, percent-encoding, dot
segments; default ports; IDNA hosts) and the allowlist is applied to that form. The FHIR client then
requests exactly the normalized URL, so what was checked is what is sent. A URL that has no single
meaning (backslashes, control characters, encoded slashes, credentials, malformed escapes) is refused
rather than guessed at: servers and proxies disagree about such URLs, and the token goes with them.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import SplitResult, quote, urlsplit, urlunsplit

DEFAULT_PORTS = {"http": 80, "https": 443}

# Characters a path or query may carry as they are (RFC 3986 §3.3, §3.4); others are escaped.
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_QUERY_SAFE = _PATH_SAFE + "?"
# Never anywhere: urlsplit silently drops tabs and newlines, and servers read "\" as "/".
_NEVER = re.compile(r"[\x00-\x1f\x7f\\]")
_ESCAPE = re.compile(r"%(..)?")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# Escapes that servers decode differently inside a path: "/", "\", ";" (Tomcat's path parameters)
# and controls.
# "%25" too: a server that decodes twice would turn "%252e" into ".".
_PATH_ESCAPES_REFUSED = frozenset(
    {"2F", "5C", "3B", "25", "7F"} | {f"{i:02X}" for i in range(0x20)}
)


class UnsafeUrl(ValueError):
    """A URL the service will not send a request to; the message names why (no token, no PHI)."""


def is_loopback_host(host: str) -> bool:
    """True for localhost and loopback IP literals."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def normalize_url(url: str) -> str:
    """`url` in normal form: lowercase scheme and host, IDNA host, no default port, no dot segments,
    unreserved characters decoded and escapes uppercased, no fragment.

    Raises UnsafeUrl for a URL that is not an absolute http(s) URL with one unambiguous meaning.
    """
    if not isinstance(url, str) or not url:
        raise UnsafeUrl("the URL is empty")
    if _NEVER.search(url):
        raise UnsafeUrl("the URL has a backslash or a control character")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UnsafeUrl("the URL's host or port cannot be read") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.netloc:
        raise UnsafeUrl("the URL is not an absolute http(s) URL")
    if "@" in parts.netloc:
        raise UnsafeUrl("the URL carries credentials (user information)")
    host = _normal_host(parts)
    netloc = host if port is None or port == DEFAULT_PORTS[scheme] else f"{host}:{port}"
    path = _normal_path(quote(parts.path, safe=_PATH_SAFE))
    query = _normal_escapes(quote(parts.query, safe=_QUERY_SAFE), refused=frozenset())
    return urlunsplit((scheme, netloc, path, query, ""))


def _normal_host(parts: SplitResult) -> str:
    host = parts.hostname
    if not host:
        raise UnsafeUrl("the URL has no host")
    if "%" in host:
        raise UnsafeUrl("the URL's host is percent-encoded")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None:
        return f"[{address.compressed}]" if address.version == 6 else address.compressed
    if ":" in host:
        raise UnsafeUrl("the URL's host cannot be read")
    host = host.rstrip(".")  # "example.org." is the same DNS name as "example.org"
    try:
        ascii_host = host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise UnsafeUrl("the URL's host is not a valid domain name") from None
    if not ascii_host or not re.fullmatch(r"[a-z0-9\-.]+", ascii_host) or ".." in ascii_host:
        raise UnsafeUrl("the URL's host is not a valid domain name")
    if re.fullmatch(r"[0-9.]+|0x[0-9a-f.x]+", ascii_host):
        # 127.1, 2130706433, 0x7f.1: IPv4 in forms resolvers accept but ipaddress does not.
        raise UnsafeUrl("the URL's host is an IPv4 address in a non-standard form")
    return ascii_host


def _normal_escapes(text: str, refused: frozenset[str]) -> str:
    """`text` with escapes uppercased and unreserved characters decoded (RFC 3986 §6.2.2.1-2)."""

    def fix(match: re.Match[str]) -> str:
        digits = (match.group(1) or "").upper()
        if not re.fullmatch(r"[0-9A-F]{2}", digits):
            raise UnsafeUrl("the URL has a malformed percent-escape")
        if digits in refused:
            raise UnsafeUrl("the URL's path has an encoded slash, backslash, semicolon or control")
        char = chr(int(digits, 16))
        return char if char in _UNRESERVED else f"%{digits}"

    return _ESCAPE.sub(fix, text)


def _normal_path(path: str) -> str:
    if ";" in path:
        raise UnsafeUrl("the URL's path has parameters (';'), which servers read differently")
    if re.search(r"%[89A-Fa-f][0-9A-Fa-f]", path):
        # A FHIR path is ASCII; a non-ASCII byte could be a dot to a server that decodes
        # overlong UTF-8 ("%c0%ae") or folds full-width forms ("．"), and cannot be normalized here.
        raise UnsafeUrl("the URL's path has a non-ASCII character")
    decoded = _normal_escapes(path, refused=_PATH_ESCAPES_REFUSED)
    # "//" is one empty segment to RFC 3986 but nothing to many servers: collapse it first, so
    # "a//../b" cannot mean "a/b" here and "b" there.
    collapsed = re.sub(r"/{2,}", "/", decoded)
    return remove_dot_segments(collapsed) or "/"


def remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4: the path with every "." and ".." segment resolved."""
    output: list[str] = []
    for segment in path.split("/")[1:] if path.startswith("/") else path.split("/"):
        if segment == "..":
            if output:
                output.pop()
        elif segment != ".":
            output.append(segment)
    trailing = path.endswith(("/.", "/..")) or path in {".", ".."}
    result = "/" + "/".join(output) if path.startswith("/") else "/".join(output)
    if trailing and not result.endswith("/"):
        result += "/"
    return result


def has_dot_segment(path: str) -> bool:
    """Whether a relative reference's path has a "." or ".." segment, in any encoding."""
    decoded = re.sub(r"%2[eE]", ".", path.split("?", 1)[0])
    return any(segment in {".", ".."} for segment in re.split(r"[/\\]", decoded))


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
        try:
            raw = urlsplit(text.strip())
            port = raw.port  # kept even when it is the default: an explicit port pins the entry
            parts = urlsplit(normalize_url(text.strip()))
        except (ValueError, UnsafeUrl) as exc:
            raise ValueError(f"{text!r} is not an absolute http(s) URL: {exc}") from None
        if raw.username or raw.password or raw.query or raw.fragment:
            raise ValueError(f"{text!r} must not carry credentials, a query or a fragment")
        return cls(parts.scheme, parts.hostname or "", port, parts.path.rstrip("/"))

    def matches(self, url: str) -> bool:
        """Whether `url` lies under this entry (no look-alike hosts, no partial path segments)."""
        try:
            parts = urlsplit(normalize_url(url))
        except UnsafeUrl:
            return False
        if parts.scheme != self.scheme or parts.hostname != self.host:
            return False
        if self.port is not None and (parts.port or DEFAULT_PORTS[parts.scheme]) != self.port:
            return False
        path = parts.path
        return not self.path or path == self.path or path.startswith(self.path + "/")


def check_fhir_server(url: str, allowlist: tuple[AllowedUrl, ...]) -> str | None:
    """None when the service may call `url`; otherwise the reason it may not."""
    try:
        normal = normalize_url(url)
    except UnsafeUrl as exc:
        return f"fhirServer is not a usable URL: {exc}"
    host = urlsplit(normal).hostname or ""
    if normal.startswith("http:") and not is_loopback_host(host):
        return "fhirServer must use https (http is accepted only for loopback addresses)"
    if not any(entry.matches(normal) for entry in allowlist):
        return (
            "fhirServer is not on this service's FHIR server allowlist (CDS_FHIR_SERVER_ALLOWLIST)"
        )
    return None
