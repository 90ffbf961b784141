"""Errors the service reports to callers, each with an HTTP status and a FHIR OperationOutcome body.

Hierarchy:
    CdsError                      base; status 500 unless a subclass says otherwise
    ├── InvalidRequest            400: the body breaks the CDS Hooks request rules (one issue per problem)
    ├── UnsupportedMediaType      415: the body is not JSON
    ├── UnknownService            404: no service with that id
    ├── PreconditionFailed        412: required prefetch data could not be obtained (CDS Hooks §HTTP Status Codes)
    ├── Unauthorized              401: the client JWT is missing or invalid (reason only in the log)
    └── ServiceUnavailable        503: a dependency (database) is down; Retry-After is sent
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Issue:
    """One OperationOutcome.issue: FHIR issue-type code, a message, and an optional JSON path."""

    code: str
    message: str
    path: str | None = None
    severity: str = "error"

    def to_fhir(self) -> dict[str, Any]:
        """This issue as an OperationOutcome.issue element."""
        issue: dict[str, Any] = {
            "severity": self.severity,
            "code": self.code,
            "diagnostics": self.message,
        }
        if self.path:
            issue["expression"] = [self.path]
        return issue


def operation_outcome(issues: list[Issue]) -> dict[str, Any]:
    """A FHIR R4 OperationOutcome resource carrying `issues`."""
    return {"resourceType": "OperationOutcome", "issue": [i.to_fhir() for i in issues]}


class CdsError(Exception):
    """Base of all errors that become an HTTP response."""

    status: int = 500
    issue_code: str = "exception"

    def __init__(self, message: str, issues: list[Issue] | None = None) -> None:
        super().__init__(message)
        self.issues = issues or [Issue(self.issue_code, message)]

    def headers(self) -> dict[str, str]:
        """Extra response headers for this error."""
        return {}

    def body(self) -> dict[str, Any]:
        """The OperationOutcome returned to the caller."""
        return operation_outcome(self.issues)


class InvalidRequest(CdsError):
    """The request body violates the CDS Hooks request rules."""

    status = 400
    issue_code = "invalid"


class UnsupportedMediaType(CdsError):
    """The request body is not JSON."""

    status = 415
    issue_code = "not-supported"


class UnknownService(CdsError):
    """No CDS service is registered under the requested id."""

    status = 404
    issue_code = "not-found"


class PreconditionFailed(CdsError):
    """Required data was neither prefetched nor obtainable from the FHIR server."""

    status = 412
    issue_code = "incomplete"


class Unauthorized(CdsError):
    """The CDS client did not present a valid JWT."""

    status = 401
    issue_code = "login"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="cds-services"'}


class ServiceUnavailable(CdsError):
    """A dependency the operation needs is down; the caller may retry."""

    status = 503
    issue_code = "transient"

    def __init__(self, message: str, retry_after: int = 30) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}
