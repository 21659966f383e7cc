"""OneConnect Alert server: ingest, accounts, live state, node-down detection, API."""

__version__ = "0.1.0"
