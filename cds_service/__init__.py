"""CDS Hooks 2.0 service for leg muscle cramps after cerebral infarction (the app is in `app`)."""

__version__ = "0.1.0"
