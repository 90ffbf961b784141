"""Tests of cds_service.rules."""
