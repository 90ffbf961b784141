"""FHIR R4 access: an HTTP client for the EHR's FHIR server and plain-dict accessors for resources."""
