"""Collectors: one module per signal family, each reading its sources through parameters."""
