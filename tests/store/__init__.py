"""Tests of cds_service.store."""
