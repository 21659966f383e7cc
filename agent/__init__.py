"""OneConnect Alert agent: VPN-node health kept in memory, alert rules, privacy gate, stream."""

__version__ = "0.1.0"
