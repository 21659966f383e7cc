"""Tests of the node-health collectors (agent/collectors)."""
