"""CDS Hooks protocol: JSON Schemas and their application."""
