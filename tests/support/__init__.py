"""Test support code: helpers shared by the test suite (not tests themselves)."""
