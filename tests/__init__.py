"""Test suite of the CDS service; mirrors the cds_service package."""
