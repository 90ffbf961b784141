"""URL normal form and the allowlist applied to it (the hostile cases live in fixtures/hostile/)."""

from __future__ import annotations

import pytest

from cds_service.urls import (
    AllowedUrl,
    UnsafeUrl,
    check_fhir_server,
    normalize_url,
    remove_dot_segments,
)


@pytest.mark.parametrize(
    ("path", "expected"),
    [  # RFC 3986 §5.2.4 and §5.4.2
        ("/a/b/c/./../../g", "/a/g"),
        ("mid/content=5/../6", "mid/6"),
        ("/a/b/..", "/a/"),
        ("/a/b/.", "/a/b/"),
        ("/../g", "/g"),
        ("/./g", "/g"),
        ("/g.", "/g."),
        ("/..g", "/..g"),
        ("/", "/"),
    ],
)
def test_remove_dot_segments(path: str, expected: str) -> None:
    assert remove_dot_segments(path) == expected


@pytest.mark.parametrize(
    ("url", "normal"),
    [
        (
            "HTTPS://FHIR.Example.org:443/r4/./Patient/%7e%41",
            "https://fhir.example.org/r4/Patient/~A",
        ),
        ("http://127.0.0.1:80//fhir/a/../b?x=%7c|y#frag", "http://127.0.0.1/fhir/b?x=%7C%7Cy"),
        ("http://[0:0:0:0:0:0:0:1]:8080/fhir", "http://[::1]:8080/fhir"),
        ("https://bücher.example/fhir", "https://xn--bcher-kva.example/fhir"),
        ("https://fhir.example.org.", "https://fhir.example.org/"),
    ],
)
def test_normal_form(url: str, normal: str) -> None:
    assert normalize_url(url) == normal


def test_an_explicit_default_port_in_the_allowlist_still_pins_the_port() -> None:
    entry = AllowedUrl.parse("https://fhir.example.org:443/r4")
    assert entry.matches("https://fhir.example.org/r4/Patient/1")
    assert not entry.matches("https://fhir.example.org:8443/r4/Patient/1")


def test_the_allowlist_sees_the_normal_form() -> None:
    allow = (AllowedUrl.parse("https://fhir.example.org/r4"),)
    assert check_fhir_server("https://FHIR.example.org/r4/x/..", allow) is None
    assert check_fhir_server("https://fhir.example.org/r4/%2e%2e/admin", allow)
    with pytest.raises(UnsafeUrl):
        normalize_url("https://fhir.example.org/r4/..%2Fadmin")
