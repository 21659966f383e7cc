"""Collectors: one module per signal family, each reading its sources through parameters.

``registry.default_collectors`` builds the standard set; ``runner.CollectorRunner`` runs them
once per cycle, turning unreadable sources into one log line and ``agent_collector_up`` 0.
Only node-level aggregates are produced: nothing about a VPN user (no address, key, user name
or per-session figure) is read into any sample, object or log line.
"""
